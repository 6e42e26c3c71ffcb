"""Making a model: multi-task training (``training``), masked-LM pre-training (``pretraining``),
students cut from a teacher (``students``: fewer layers, narrower feed-forward layers) and their
distillation (``distillation``). Imports the runtime, model and data parts."""
