"""Helpers of ``device_study.sh``: carry the encoder to a lent GPU under the 64 MiB limit, and move a study there.

    python benchmarks/device_encoder.py pack ENCODER DATA_DIR OUT.safetensors     # here
    python benchmarks/device_encoder.py unpack IN.safetensors OUT.safetensors     # there
    python benchmarks/device_encoder.py study STUDY.yaml WORK LIMIT EPOCHS        # there: WORK/STUDY.yaml

``pack`` keeps the weights in fp16 and, of the word embeddings, only the rows that the carried corpora's words
(every split: the study looks them all up) and ids below 1000 (the special tokens) use: 15,645 of 30,522 rows for
all-MiniLM-L6-v2 on the four corpora, which halves the file; those rows in int8 with one fp16 scale per row
(``--int8-rows``) when the ten corpora (18,496 rows) must fit beside the tree. ``unpack`` rebuilds the float32
checkpoint with the other rows zero; a model trained from it is the same for the study (no other row is ever
looked up), but is not one to ship (text outside the corpora would meet zero rows). int8 rows start training
from embeddings rounded to 1/127 of each row's largest value: compare such runs with each other, not with runs
from the packaged encoder.

    python benchmarks/device_encoder.py pack ENCODER DATA_DIR OUT.safetensors [CORPUS ...] [--int8-rows]
"""

from __future__ import annotations

import sys
from pathlib import Path

KEY = "embeddings.word_embeddings"


def pack(encoder: str, data_dir: str, out: str, *names: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer

    from mtbioner.data.corpus import SPLITS, read_corpus

    int8 = "--int8-rows" in names
    names = tuple(n for n in names if n != "--int8-rows")
    folders = [Path(data_dir, n) for n in names] or sorted(Path(data_dir).iterdir())
    corpora = [read_corpus(folder) for folder in folders if (folder / "train.tsv").is_file()]
    words = {word for corpus in corpora for split in SPLITS for s in corpus.sentences(split) for word in s.tokens}
    ids = set(range(1000))
    for encoding in Tokenizer.from_file(f"{encoder}/tokenizer.json").encode_batch(sorted(words)):
        ids.update(encoding.ids)
    weights = load_file(f"{encoder}/model.safetensors")
    weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    full = weights.pop(f"{KEY}.weight")
    kept = torch.tensor(sorted(ids))
    rows = full[kept]
    if int8:
        scale = rows.float().abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127
        weights[f"{KEY}.kept_scales"] = scale.half()
        rows = torch.round(rows.float() / scale).to(torch.int8)
    weights[f"{KEY}.kept_ids"], weights[f"{KEY}.kept_rows"] = kept, rows.contiguous()
    save_file(weights, out, metadata={"format": "pt", "vocab": str(full.shape[0])})
    print(f"kept {len(kept)} of {full.shape[0]} word-embedding rows -> {out}")


def unpack(packed: str, out: str) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(packed, "pt") as handle:
        vocab = int(handle.metadata()["vocab"])
    weights = load_file(packed)
    kept, rows = weights.pop(f"{KEY}.kept_ids"), weights.pop(f"{KEY}.kept_rows")
    scales = weights.pop(f"{KEY}.kept_scales", None)
    full = torch.zeros(vocab, rows.shape[1], dtype=torch.float32)
    full[kept] = rows.float() * scales.float() if scales is not None else rows.float()
    weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    weights[f"{KEY}.weight"] = full
    save_file(weights, out, metadata={"format": "pt"})


def study(path: str, work: str, limit: str, epochs: str) -> None:
    """The study file with data, models and results in WORK and the carried encoder (and a dry run's limits)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    data.update(data_dir=f"{work}/data", models=f"{work}/runs", results=f"{work}/results")
    data["budget"]["encoder"] = f"{work}/minilm"
    if limit:
        data["budget"]["limit"] = int(limit)
    if epochs:
        data["budget"]["epochs"] = int(epochs)
        for run in data["runs"].values():
            run.pop("epochs", None)
    Path(work, Path(path).name).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"pack": pack, "unpack": unpack, "study": study}[command](*args)
