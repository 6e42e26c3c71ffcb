"""Making a model: multi-task training (``training``), masked-LM pre-training (``pretraining``) and
distillation into a smaller student (``distillation``). Imports the runtime, model and data parts."""
