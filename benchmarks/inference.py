"""Inference speed, peak memory and size on disk: mtbioner (torch, ONNX fp32, ONNX int8) vs the alternatives.

All five systems turn the same texts (the BC5CDR test sentences, tokens joined by spaces)
into entities with character offsets, on the CPU:

  (a) hf-pipeline  transformers ``pipeline("token-classification", aggregation_strategy="first")``
                   on a single-task BertForTokenClassification: the trained encoder and the
                   BC5CDR head copied into it, so it is the same network (what users would pick).
                   "first" labels each word by its first sub-token, as mtbioner trains and
                   predicts; "simple" would also read the untrained non-first sub-tokens.
  (b) single-x4    one single-task model per head (the trained encoder + that head, one folder each),
                   loaded together and run one after another on the text (the paper's baseline).
  (c) mt-torch     mtbioner, one torch model, every head from one encoder pass.
  (d) mt-onnx      the same model exported to ONNX (fp32), ONNX Runtime.
  (e) mt-int8      the same, int8 (outlier rewrites + dynamic quantization, mtbioner.runtime.quantization).
  (f) mt-int8-static  on request (``--systems ...,mt-int8-static``): the same, static int8 (activation scales
                   calibrated on ``--calibration``, by default the BC5CDR train split; never a test split), to
                   time beside (e) in one run, e.g. on an AVX2 host without VNNI.

Each system runs in its own subprocess, so its peak resident memory (VmHWM) is its own;
throughput is sentences / seconds of tagging after loading and a short warm-up. F1 scores
the BC5CDR entities (exact character span and type) against the gold annotation; "same as
(c)" counts sentences whose entities (every head) equal mt-torch's.

    python benchmarks/inference.py --model MODEL --data-dir ../shared/data [--limit 500]
    python benchmarks/inference.py --model MODEL --systems mt-onnx,mt-int8,mt-int8-static --out OUT

MODEL is a trained multi-task folder (torch) with a BC5CDR head, e.g. the shipped model read back. Writes
``benchmarks/results/inference.json`` and ``inference.md`` (not with ``--limit``, unless
``--out`` is given).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import best_rate, describe, machine, publish

from mtbioner import INFERENCE_BATCH_SIZE
from mtbioner.runtime.export import CALIBRATION_SIZE

SYSTEMS = {
    "hf-pipeline": "(a) HF pipeline, single-task BC5CDR model",
    "single-x4": "(b) one single-task model per head, one after another",
    "mt-torch": "(c) mtbioner torch, every head",
    "mt-onnx": "(d) mtbioner ONNX fp32, every head",
    "mt-int8": "(e) mtbioner ONNX int8, every head",
}
# Built and timed only when --systems names them (the default run, and benchmarks/students.py's, keep the five).
OPTIONAL_SYSTEMS = {
    "mt-int8-static": "(f) mtbioner ONNX int8, static (calibrated), every head",
}
TARGET = "BC5CDR"
WARMUP = 32


# --------------------------------------------------------------------------- data


def load_texts(data_dir: Path, limit: int | None) -> tuple[list[str], list[list[list]]]:
    """BC5CDR test sentences as texts (tokens joined by spaces) and their gold [start, end, type] spans."""
    from mtbioner.data.corpus import read_corpus
    from mtbioner.data.schemes import tags_to_spans

    corpus = read_corpus(data_dir / TARGET, splits=["test"], limit=limit)
    texts, gold = [], []
    for sentence in corpus.sentences("test"):
        starts, offset = [], 0
        for token in sentence.tokens:
            starts.append(offset)
            offset += len(token) + 1
        texts.append(" ".join(sentence.tokens))
        spans = []
        for kind, first, end in tags_to_spans(sentence.tags):
            spans.append([starts[first], starts[end - 1] + len(sentence.tokens[end - 1]), kind])
        gold.append(spans)
    return texts, gold


# --------------------------------------------------------------------------- artefacts


def prepare(model_dir: Path, work: Path, args: argparse.Namespace | None = None) -> dict[str, Path]:
    """Build the model folder of every system ``args.systems`` names (all five without ``args``) once: exports,
    single-task copies, HF model, and the static int8 export (calibrated on ``args.calibration``)."""
    from dataclasses import replace

    from mtbioner.model.model import MultiTaskTagger
    from mtbioner.runtime.export import CalibrationSettings, export_onnx

    wanted = set(SYSTEMS) if args is None else {s.strip() for s in args.systems.split(",")}
    paths = {"mt-torch": model_dir}
    exports: list[tuple[str, str, CalibrationSettings | None]] = [("mt-onnx", "none", None), ("mt-int8", "int8", None)]
    if "mt-int8-static" in wanted:
        calibration = CalibrationSettings(args.calibration, args.data_dir, args.calibration_size)
        exports.append(("mt-int8-static", "int8-static", calibration))
    folders = {"mt-onnx": "onnx-fp32", "mt-int8": "onnx-int8", "mt-int8-static": "onnx-int8-static"}
    exports = [export for export in exports if export[0] in wanted]
    paths.update({name: work / folders[name] for name, _, _ in exports})
    timings = {}
    for name, quantize, calibrate in exports:
        if not (paths[name] / "model.onnx").is_file():
            started = time.perf_counter()
            export_onnx(model_dir, paths[name], quantize, calibration=calibrate)  # type: ignore[arg-type]
            timings[name] = round(time.perf_counter() - started, 1)
    model = MultiTaskTagger.from_pretrained(model_dir)
    if TARGET not in model.config.corpora:
        sys.exit(f"{model_dir} has no {TARGET} head; heads: {model.corpora}")
    single = work / "single"
    for corpus in model.corpora if "single-x4" in wanted else []:
        target = single / corpus
        paths[f"single/{corpus}"] = target
        if target.is_dir():
            continue
        config = replace(model.config, corpora={corpus: model.config.corpora[corpus]})
        one = MultiTaskTagger(config, tokenizer=model.tokenizer)
        one.encoder.load_state_dict(model.encoder.state_dict())
        one.head(corpus).load_state_dict(model.head(corpus).state_dict())
        one.save_pretrained(target)
    if "hf-pipeline" in wanted:
        paths["hf-pipeline"] = work / "hf-bc5cdr"
        if not paths["hf-pipeline"].is_dir():
            build_hf_model(model, paths["hf-pipeline"])
    (work / "export_seconds.json").write_text(json.dumps(timings))
    return paths


def build_hf_model(model, target: Path) -> None:
    """A BertForTokenClassification (any AutoModelForTokenClassification) equal to encoder + BC5CDR head."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    labels = model.config.corpora[TARGET].labels
    encoder_config = dict(model.config.encoder_config)
    config = AutoConfig.for_model(
        encoder_config.pop("model_type"),
        **{k: v for k, v in encoder_config.items() if k not in ("id2label", "label2id", "architectures")},
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    hf = AutoModelForTokenClassification.from_config(config)
    base = getattr(hf, hf.base_model_prefix)
    weights = {k: v for k, v in model.encoder.state_dict().items() if not k.startswith("pooler.")}  # unused
    missing, unexpected = base.load_state_dict(weights, strict=False)
    if unexpected or missing:
        sys.exit(f"encoder weights do not fit {type(hf).__name__}: {missing[:3]} {unexpected[:3]}")
    hf.classifier.load_state_dict(model.head(TARGET).classifier.state_dict())
    hf.save_pretrained(str(target))
    model.tokenizer.save_pretrained(str(target))


def folder_mb(paths: list[Path]) -> float:
    return round(sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file()) / 1e6, 1)


# --------------------------------------------------------------------------- one system (child process)


def run_child(args: argparse.Namespace) -> None:
    """Load one system, warm it up, tag every text, write timings and entities to --result."""
    import torch
    from transformers import AutoTokenizer  # noqa: F401  (imports shared by every system: the baseline)

    torch.set_num_threads(args.threads)
    import_rss = peak_rss_mb()
    texts, _ = load_texts(args.data_dir, args.limit)
    paths = {k: Path(v) for k, v in json.loads(args.paths).items()}
    started = time.perf_counter()
    tag = load_system(args.child, paths, args.threads, args.batch_size)
    load_seconds = time.perf_counter() - started
    tag(texts[:WARMUP])
    started = time.perf_counter()
    found = tag(texts)
    seconds = time.perf_counter() - started
    result = {
        "load_seconds": round(load_seconds, 2),
        "seconds": round(seconds, 3),
        **({"graph_seconds": round(tag.graph_seconds, 3)} if hasattr(tag, "graph_seconds") else {}),
        "import_rss_mb": round(import_rss, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "entities": found,
    }
    Path(args.result).write_text(json.dumps(result))


def peak_rss_mb() -> float:
    """This process' peak resident memory (VmHWM).

    Not ``getrusage``: on Linux a child's ``ru_maxrss`` starts from its parent's peak at
    fork, and the parent here has held a whole model during the export.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def load_system(name: str, paths: dict[str, Path], threads: int, batch_size: int):
    """A function from texts to, per text, ``[start, end, type, heads]`` entities."""
    if name == "hf-pipeline":
        from transformers import pipeline

        pipe = pipeline("token-classification", model=str(paths[name]), aggregation_strategy="first", device="cpu")

        def tag_hf(texts: list[str]) -> list[list]:
            out = pipe(texts, batch_size=batch_size)
            return [[[e["start"], e["end"], e["entity_group"], TARGET] for e in ents] for ents in out]

        return tag_hf

    if name == "spacy-peer":
        import spacy

        nlp = spacy.load(paths[name])

        def tag_spacy(texts: list[str]) -> list[list]:
            docs = nlp.pipe(texts)  # spaCy's own default batch (1,000 texts), as its users run it
            return [[[e.start_char, e.end_char, e.label_, TARGET] for e in doc.ents] for doc in docs]

        return tag_spacy

    from mtbioner.model.model import MultiTaskTagger
    from mtbioner.runtime.loading import load_backend
    from mtbioner.runtime.onnx_backend import OnnxTagger
    from mtbioner.runtime.tagging import Tagger

    if name.startswith("extra:"):
        backend = load_backend(paths[name])
        tagger = Tagger(backend, batch_size)
        tag_extra = lambda texts: [[entity_row(e) for e in ents] for ents in tagger.tag_batch(texts)]  # noqa: E731
        return time_graph(backend, tag_extra) if isinstance(backend, OnnxTagger) else tag_extra
    if name == "single-x4":
        taggers = [
            Tagger(MultiTaskTagger.from_pretrained(path), batch_size)
            for key, path in paths.items()
            if key.startswith("single/")
        ]

        def tag_each(texts: list[str]) -> list[list]:
            found: list[list] = [[] for _ in texts]
            for tagger in taggers:  # the paper's setting: one model per corpus, one after another
                for index, ents in enumerate(tagger.tag_batch(texts)):
                    found[index].extend(entity_row(e) for e in ents)
            return found

        return tag_each
    if name == "mt-torch":
        tagger = Tagger(MultiTaskTagger.from_pretrained(paths[name]), batch_size)
    else:
        tagger = Tagger(OnnxTagger.from_pretrained(paths[name], threads=threads), batch_size)
        tag_onnx = lambda texts: [[entity_row(e) for e in ents] for ents in tagger.tag_batch(texts)]  # noqa: E731
        return time_graph(tagger.backend, tag_onnx)
    return lambda texts: [[entity_row(e) for e in ents] for ents in tagger.tag_batch(texts)]


def time_graph(backend, tag):
    """``tag`` with ``tag.graph_seconds``: the time of its latest call spent inside ONNX Runtime."""
    run = backend.run

    def timed_run(*args, **kwargs):
        started = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            timed.graph_seconds += time.perf_counter() - started

    def timed(texts):
        timed.graph_seconds = 0.0
        return tag(texts)

    timed.graph_seconds = 0.0
    backend.run = timed_run
    return timed


def entity_row(entity: dict) -> list:
    return [entity["start"], entity["end"], entity["type"], "|".join(entity["corpus"])]


# --------------------------------------------------------------------------- parent


def run_system(name: str, args: argparse.Namespace, paths: dict[str, Path], work: Path) -> dict:
    """Run one system in a fresh interpreter, so that its peak memory is its own."""
    result_file = work / f"{name}.json"
    command = [
        sys.executable, __file__, "--child", name, "--result", str(result_file), "--paths",
        json.dumps({k: str(v) for k, v in paths.items()}), "--data-dir", str(args.data_dir),
        "--threads", str(args.threads), "--batch-size", str(batch_size_of(name, args)),
    ]  # fmt: skip
    if args.limit:
        command += ["--limit", str(args.limit)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"{name} failed with status {done.returncode}")
    result = json.loads(result_file.read_text())
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def batch_size_of(name: str, args: argparse.Namespace) -> int:
    return args.pipeline_batch_size if name == "hf-pipeline" else args.batch_size


def f1(gold: list[list[list]], predicted: list[list[list]]) -> float:
    """Exact-match micro F1 (percent) of BC5CDR entities: (sentence, start, end, type)."""
    gold_set = {(i, s, e, t) for i, spans in enumerate(gold) for s, e, t in spans}
    pred_set = {(i, row[0], row[1], row[2]) for i, rows in enumerate(predicted) for row in rows if TARGET in row[3]}
    hits = len(gold_set & pred_set)
    if not hits:
        return 0.0
    precision, recall = hits / len(pred_set), hits / len(gold_set)
    return round(100 * 2 * precision * recall / (precision + recall), 2)


def machine_facts() -> dict:
    import onnxruntime
    import transformers

    return machine(transformers=transformers.__version__, onnxruntime=onnxruntime.__version__)


def encoder_dims(model_dir: Path) -> tuple[int, int, int]:
    """Hidden size, feed-forward size and layers of the model's encoder."""
    config = json.loads((model_dir / "config.json").read_text())["encoder_config"]
    return config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]


def gemm_rates(threads: int, hidden: int, inner: int, rows: int = 1280, static: bool = False) -> dict[str, float]:
    """Best-of-3 ONNX Runtime rates (G multiply-adds x 2 per second) of one encoder-shaped product.

    ``rows`` x ``hidden`` times ``hidden`` x ``inner`` is the encoder's first feed-forward product
    on a batch of 32 sentences of 40 sub-tokens: fp32 ``MatMul`` and the int8
    ``DynamicQuantizeMatMul`` that dynamic quantization puts in its place; with ``static``, also the
    fixed-scale ``QuantizeLinear`` + ``MatMulIntegerToFloat`` that an int8-static export runs instead
    (the difference is the run-time pass that finds the activation's scale).
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((hidden, inner)).astype(np.float32)
    x = rng.standard_normal((rows, hidden)).astype(np.float32)
    scale = (np.abs(weight).max(axis=0) / 63).astype(np.float32)
    graphs = {
        "fp32": ([numpy_helper.from_array(weight, "w")], helper.make_node("MatMul", ["x", "w"], ["y"])),
        "int8": (
            [
                numpy_helper.from_array(np.round(weight / scale).astype(np.int8), "w"),
                numpy_helper.from_array(scale, "s"),
                numpy_helper.from_array(np.zeros(inner, np.int8), "z"),
            ],
            helper.make_node("DynamicQuantizeMatMul", ["x", "w", "s", "z"], ["y"], domain="com.microsoft"),
        ),
    }
    if static:
        step = np.float32(2 * np.abs(x).max() / 255)
        graphs["int8-static"] = (
            [
                numpy_helper.from_array(np.round(weight / scale).astype(np.int8), "w"),
                numpy_helper.from_array(scale, "s"),
                numpy_helper.from_array(np.array(step, np.float32), "xs"),
                numpy_helper.from_array(np.array(128, np.uint8), "xz"),
            ],
            [
                helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                helper.make_node("MatMulIntegerToFloat", ["xq", "w", "xs", "s", "xz"], ["y"], domain="com.microsoft"),
            ],
        )
    rates = {}
    for name, (initializers, nodes) in graphs.items():
        graph = helper.make_graph(
            nodes if isinstance(nodes, list) else [nodes],
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, hidden])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, inner])],
            initializers,
        )
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        model = helper.make_model(graph, opset_imports=opsets).SerializeToString()
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        rate = best_rate(lambda s=session: s.run(None, {"x": x}), 2 * rows * hidden * inner, repeats=30, warmup=5)
        rates[name] = round(rate, 1)
    return rates


def encoder_gop_per_sentence(model_dir: Path, texts: list[str]) -> tuple[float, float]:
    """Mean sub-tokens per sentence (with [CLS]/[SEP]) and the encoder's GOP for such a sentence.

    Linear layers 2 x (4 H^2 + 2 H I) per token and layer, attention scores and mixing 4 T H per
    token and layer; embeddings, softmax and layer norms are left out (a lower bound).
    """
    from transformers import AutoTokenizer

    hidden, inner, layers = encoder_dims(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokens = sum(len(ids) for ids in tokenizer(texts)["input_ids"]) / len(texts)
    per_token = layers * (2 * (4 * hidden**2 + 2 * hidden * inner) + 4 * tokens * hidden)
    return round(tokens, 1), round(per_token * tokens / 1e9, 3)


def label(name: str) -> str:
    """A system's row label: the fixed five, an optional one, the spaCy peer, or an extra model by its given name."""
    if name in OPTIONAL_SYSTEMS:
        return OPTIONAL_SYSTEMS[name]
    if name == "spacy-peer":
        return "(s) spaCy CNN NER peer, BC5CDR (benchmarks/peers.py)"
    if name.startswith("extra:"):
        return f"(x) {name.removeprefix('extra:')}"
    return SYSTEMS[name]


def summarize(results: dict[str, dict], gold: list, sizes: dict[str, float], n: int) -> dict[str, dict]:
    base = results.get("hf-pipeline")
    reference = results.get("mt-torch")
    rows = {}
    for name, r in results.items():
        speed = n / r["seconds"]
        row = {
            "system": label(name),
            "sentences_per_s": round(speed, 1),
            "seconds": r["seconds"],
            "load_seconds": r["load_seconds"],
            "peak_rss_mb": r["peak_rss_mb"],
            "above_imports_mb": round(r["peak_rss_mb"] - r["import_rss_mb"], 1),
            "disk_mb": sizes[name],
            "bc5cdr_f1": f1(gold, r["entities"]),
        }
        if "graph_seconds" in r:  # ONNX systems: time inside InferenceSession.run, and the rest
            row["graph_ms"] = round(1e3 * r["graph_seconds"] / n, 3)
            row["outside_ms"] = round(1e3 * (r["seconds"] - r["graph_seconds"]) / n, 3)
        if base:
            row["speed_vs_a"] = round(speed / (n / base["seconds"]), 2)
            row["memory_vs_a"] = round(r["peak_rss_mb"] / base["peak_rss_mb"], 2)
            row["disk_vs_a"] = round(sizes[name] / sizes["hf-pipeline"], 2)
        if reference and name.startswith("mt-"):
            pairs = zip(r["entities"], reference["entities"], strict=True)
            same = sum(sorted(map(tuple, a)) == sorted(map(tuple, b)) for a, b in pairs)
            row["same_as_c"] = f"{same}/{n}"
        rows[name] = row
    return rows


def ratio(row: dict, key: str) -> str:
    return f"{row[key]}x" if key in row else "-"


def targets(rows: dict[str, dict]) -> list[tuple[str, str, bool]]:
    """The issue's goals on 2 cores, each with what was measured and whether it was met."""
    got = []
    a, b, c, e = (rows.get(k) for k in ("hf-pipeline", "single-x4", "mt-torch", "mt-int8"))
    if a and e:
        x = e["sentences_per_s"] / a["sentences_per_s"]
        got.append(("(e) at least 5x the throughput of (a)", f"{x:.2f}x", x >= 5))
    if e:
        got.append(("(e) at least 500 sentences/s", f"{e['sentences_per_s']}", e["sentences_per_s"] >= 500))
        got.append(("(e) under 25 MB on disk", f"{e['disk_mb']} MB", e["disk_mb"] < 25))
    if b and c:
        x = c["sentences_per_s"] / b["sentences_per_s"]
        got.append(("(c) at least 3x faster than (b)", f"{x:.2f}x", x >= 3))
    if c and e:
        drop = c["bc5cdr_f1"] - e["bc5cdr_f1"]
        got.append(("(e) loses at most 0.5 F1 against (c)", f"{drop:+.2f} points", drop <= 0.5))
    return got


def markdown(rows: dict[str, dict], facts: dict, meta: dict) -> str:
    lines = [
        f"Inference on the BC5CDR test set ({meta['sentences']} sentences, text in, entities with offsets out), "
        f"CPU only: {describe(facts)}; torch {facts['torch']}, "
        f"transformers {facts['transformers']}, onnxruntime {facts['onnxruntime']}.",
        "",
        "| system | sentences/s | vs (a) | peak memory (MB) | above imports (MB) | size on disk (MB) | vs (a) "
        "| BC5CDR F1 | same entities as (c) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows.values():
        lines.append(
            f"| {row['system']} | {row['sentences_per_s']} | {ratio(row, 'speed_vs_a')} | {row['peak_rss_mb']} "
            f"| {row['above_imports_mb']} | {row['disk_mb']} | {ratio(row, 'disk_vs_a')} "
            f"| {row['bc5cdr_f1']} | {row.get('same_as_c', '-')} |"
        )
    lines += [
        "",
        f"Threads: {meta['threads']}; mtbioner batch: {meta['batch_size']} windows (sorted by length); "
        f"pipeline batch: {meta['pipeline_batch_size']} texts. Load average before/after the run: "
        f"{meta['load_before']} / {meta['load_after']} "
        + (
            "(other processes shared the cores, so figures are conservative). "
            if max(meta["load_before"], meta["load_after"]) > facts["cores"]
            else "(nothing else ran). "
        )
        + 'Peak memory is each system\'s own process; "above imports" subtracts what '
        "the process held after importing torch and transformers (which every system, ONNX ones included, "
        "imports: transformers loads torch when it is installed); (b) holds its four models at once. "
        "F1: exact character span and type of BC5CDR entities against the gold annotation "
        "(for (a) with the pipeline's word aggregation, aggregation_strategy=first).",
        "",
        f"Model: {meta['model']} (trained with: {meta['training']}).",
        "",
    ]
    if "ceiling" in meta:
        c = meta["ceiling"]
        lines += [
            f"Compute ceiling of this CPU: ONNX Runtime multiplies an encoder-shaped product "
            f"({c['shape']}) at {c['gemm_gops']['fp32']} GFLOP/s in fp32 and {c['gemm_gops']['int8']} GOP/s in "
            f"int8. A BC5CDR test sentence has {c['subtokens']} sub-tokens on average, {c['gop_per_sentence']} GOP "
            f"of encoder products, so the encoder alone, with nothing else to do, cannot pass "
            f"{c['sentences_per_s']['fp32']} sentences/s in fp32 or {c['sentences_per_s']['int8']} in int8 "
            "on these cores.",
            "",
        ]
        if "int8-static" in c["gemm_gops"]:
            lines[-1:] = [
                f"With a fixed activation scale (static int8: QuantizeLinear + MatMulIntegerToFloat, no run-time "
                f"scale pass) the same product runs at {c['gemm_gops']['int8-static']} GOP/s.",
                "",
            ]
    timed = [row for row in rows.values() if "graph_ms" in row]
    if timed:
        lines += [
            "Where the ONNX systems' time goes, per sentence: inside ONNX Runtime (`InferenceSession.run`) and "
            "outside it (sentence splitting, tokenization, windows, padding, decoding, entity objects, "
            "in one pass that also fills the word-piece cache; "
            "`python benchmarks/outside_graph.py` compares the outside part with an earlier revision):",
            "",
            "| system | ms/sentence | in the graph | outside the graph | outside share |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in timed:
            total = 1e3 / row["sentences_per_s"]
            lines.append(
                f"| {row['system']} | {total:.3f} | {row['graph_ms']:.3f} | {row['outside_ms']:.3f} "
                f"| {100 * row['outside_ms'] / total:.0f}% |"
            )
        lines.append("")
    goals = targets(rows)
    if goals:
        lines += ["| target (2 cores) | measured | met |", "|---|---:|---|"]
        lines += [f"| {goal} | {value} | {'yes' if met else '**no**'} |" for goal, value, met in goals]
        lines.append("")
    lines.append(f"Command: `{meta['command']}`")
    return "\n".join(lines) + "\n"


def read_back_note(model: Path) -> str:
    """Where a torch folder without ``training.json`` came from: ``read_back.json`` (benchmarks/students.py)."""
    note = model / "read_back.json"
    if not note.is_file():
        return "unknown"
    data = json.loads(note.read_text(encoding="utf-8"))
    return f"`{data['train_command']}`; these are its weights read back from the int8 export {data['from']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="trained mtbioner model folder (torch) with a BC5CDR head")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--limit", type=int, default=None, help="first N test sentences (quick checks)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--batch-size", type=int, default=INFERENCE_BATCH_SIZE, help="mtbioner windows per forward pass"
    )
    parser.add_argument("--pipeline-batch-size", type=int, default=32, help="texts per HF pipeline batch")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of " + ",".join([*SYSTEMS, *OPTIONAL_SYSTEMS]) + " (default: the first five)",
    )
    parser.add_argument(
        "--calibration",
        default=TARGET,
        metavar="CORPUS|FILE.txt",
        help="mt-int8-static: calibration text, a corpus under --data-dir (its train split) or a .txt file",
    )
    parser.add_argument("--calibration-size", type=int, default=CALIBRATION_SIZE, help="mt-int8-static: sentences")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="also measure this model folder (torch or exported), e.g. a distilled student (repeatable)",
    )
    parser.add_argument("--spacy", type=Path, help="also measure this spaCy pipeline (the BC5CDR peer of peers.py)")
    parser.add_argument("--work", type=Path, default=None, help="keep built models here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--paths", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    if args.model is None:
        parser.error("--model is required")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS) - set(OPTIONAL_SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}")
    extras = {}
    for item in args.extra:
        name, sep, folder = item.partition("=")
        if not sep or not Path(folder).is_dir():
            parser.error(f"--extra {item}: expected NAME=FOLDER with an existing model folder")
        extras[f"extra:{name}"] = Path(folder)
    if args.spacy is not None:
        if not (args.spacy / "meta.json").is_file():
            parser.error(f"--spacy {args.spacy}: not a spaCy pipeline folder (no meta.json)")
        extras["spacy-peer"] = args.spacy
    systems += list(extras)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    load_before = round(os.getloadavg()[0], 2)
    hidden, inner, _ = encoder_dims(args.model)
    gemm = gemm_rates(args.threads, hidden, inner, static="mt-int8-static" in systems)
    with tempfile.TemporaryDirectory(prefix="mtbioner-bench-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        paths = {**prepare(args.model, work, args), **extras}
        texts, gold = load_texts(args.data_dir, args.limit)
        sizes = {name: folder_mb([paths[name]]) for name in [*SYSTEMS, *OPTIONAL_SYSTEMS, *extras] if name in paths}
        sizes["single-x4"] = folder_mb([p for k, p in paths.items() if k.startswith("single/")])
        results = {}
        for name in systems:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results[name] = run_system(name, args, paths, work)
            print(f"  {len(texts) / results[name]['seconds']:.1f} sentences/s, {results[name]['peak_rss_mb']} MB",
                  file=sys.stderr, flush=True)  # fmt: skip
    rows = summarize(results, gold, sizes, len(texts))
    training = {}
    if (args.model / "training.json").is_file():
        cfg = json.loads((args.model / "training.json").read_text()).get("config", {})
        training = {k: cfg.get(k) for k in ("epochs", "limit", "schedule", "batch_size", "lr") if k in cfg}
    command = "python benchmarks/inference.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    meta = {
        "sentences": len(texts),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "pipeline_batch_size": args.pipeline_batch_size,
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "model": str(args.model),
        "training": ", ".join(f"{k}={v}" for k, v in training.items()) or read_back_note(args.model),
        "command": command,
    }
    subtokens, gop = encoder_gop_per_sentence(args.model, texts)
    meta["ceiling"] = {
        "shape": f"1280 x {hidden} by {hidden} x {inner}",
        "gemm_gops": gemm,
        "subtokens": subtokens,
        "gop_per_sentence": gop,
        "sentences_per_s": {name: round(rate / gop) for name, rate in gemm.items()},
    }
    facts = machine_facts()
    text = markdown(rows, facts, meta)
    print(text)
    if args.limit and args.out is None:
        return
    publish(
        args.out or Path(__file__).parent / "results", "inference", {"machine": facts, **meta, "systems": rows}, text
    )


if __name__ == "__main__":
    main()
