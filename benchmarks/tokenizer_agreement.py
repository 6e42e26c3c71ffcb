"""How closely ``mtbioner.data.text.tokenize_words`` reproduces the corpora's own tokenization.

The corpora ship tokens, not text, so each test sentence is first turned back into plausible
running text (``detokenize``), then re-tokenized, and the two token sequences are compared as
character spans:

* sentences whose tokens match exactly;
* token precision / recall / F1 on (start, end) spans;
* gold token boundaries kept: gold tokens whose start and end are both word boundaries of ours,
  i.e. that are one of our words or a concatenation of several (what entity alignment needs);
* entities aligned: gold entities (IOB2) whose span starts and ends on our word boundaries.

Detokenization rules (applied to the gap between two tokens; a space is kept otherwise): no
space before ``, . ; : ) ] } % ? !``, none after ``( [ {``, none on either side of a hyphen or
slash (``43 - kb`` -> ``43-kb``, also JNLPBA pieces such as ``-induced``), none before ``+``
after a letter or digit (``CD4+``), none around an apostrophe before ``s``, none after a dot
between digits (``2.5``) or inside single-letter abbreviations (``e.g.``). The rules only remove
spaces next to punctuation; they never join two words, so for the three fully split corpora
(every punctuation mark its own token) agreement mostly tests that no punctuation stays glued;
JNLPBA, whose original tokens keep joins (``IL-2``), is the real test.

Usage: ``python benchmarks/tokenizer_agreement.py --data-dir ../shared/data``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mtbioner.data.text import tokenize_words
from mtbioner.fileio import atomic_write, write_json

CORPORA = ("BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA")
GoldSentence = tuple[list[str], list[str]]

_NO_SPACE_BEFORE = set(",.;:)]}%?!")
_NO_SPACE_AFTER = set("([{")


def read_tsv(path: Path, group: int = 10) -> list[list[GoldSentence]]:
    """Read a corpus file into documents of (tokens, tags) sentences.

    ``-DOCSTART-`` lines start a new document (JNLPBA: one abstract each); files without them
    are cut into pseudo-documents of ``group`` consecutive sentences.
    """
    documents: list[list[GoldSentence]] = [[]]
    tokens: list[str] = []
    tags: list[str] = []
    has_docstart = False

    def flush() -> None:
        if tokens:
            documents[-1].append((tokens.copy(), tags.copy()))
            tokens.clear()
            tags.clear()

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("-DOCSTART-"):
            flush()
            has_docstart = True
            documents.append([])
        elif not line.strip():
            flush()
        else:
            token, _, tag = line.partition("\t")
            tokens.append(token)
            tags.append(tag or "O")
    flush()
    documents = [doc for doc in documents if doc]
    if has_docstart:
        return documents
    sentences = [s for doc in documents for s in doc]
    return [sentences[i : i + group] for i in range(0, len(sentences), group)]


def _glue(before: str, prev: str, nxt: str) -> bool:
    """True when ``prev`` and ``nxt`` were most likely written without a space between them."""
    if nxt in _NO_SPACE_BEFORE or prev in _NO_SPACE_AFTER:
        return True
    if prev[-1] in "-/" or nxt[0] in "-/":
        return True
    if nxt == "+" and prev[-1].isalnum():
        return True
    if (prev == "'" and nxt == "s") or (nxt == "'" and prev[-1].isalnum()):
        return True
    if prev == "." and before[-1:].isdigit() and nxt[0].isdigit():
        return True
    return prev == "." and len(before) == 1 and before.isalpha() and len(nxt) == 1 and nxt.isalpha()


def detokenize(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join tokens into plausible text; return it with each token's (start, end) span."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    offset = 0
    for i, token in enumerate(tokens):
        if i and not _glue(tokens[i - 2] if i > 1 else "", tokens[i - 1], token):
            parts.append(" ")
            offset += 1
        parts.append(token)
        spans.append((offset, offset + len(token)))
        offset += len(token)
    return "".join(parts), spans


def entity_spans(tags: Sequence[str]) -> list[tuple[int, int]]:
    """Token index ranges ``[i, j)`` of IOB2 entities (an ``I-`` after ``O`` starts one too)."""
    spans: list[tuple[int, int]] = []
    start: int | None = None
    kind = ""
    for i, tag in enumerate([*tags, "O"]):
        if start is not None and (tag == "O" or tag.startswith("B-") or tag[2:] != kind):
            spans.append((start, i))
            start = None
        if tag != "O" and start is None:
            start, kind = i, tag[2:]
    return spans


def score_corpus(path: Path) -> dict[str, float | int]:
    """Compare gold and predicted tokens for every sentence of one file."""
    sentences = exact = gold_n = pred_n = hit = kept = entities = aligned = 0
    seconds = 0.0
    for document in read_tsv(path):
        for tokens, tags in document:
            text, gold = detokenize(tokens)
            began = time.perf_counter()
            words = tokenize_words(text)
            seconds += time.perf_counter() - began
            pred = [(t.start, t.end) for t in words]
            starts = {s for s, _ in pred}
            ends = {e for _, e in pred}
            sentences += 1
            exact += gold == pred
            gold_n += len(gold)
            pred_n += len(pred)
            hit += len(set(gold) & set(pred))
            kept += sum(s in starts and e in ends for s, e in gold)
            for i, j in entity_spans(tags):
                entities += 1
                aligned += gold[i][0] in starts and gold[j - 1][1] in ends
    precision, recall = hit / pred_n, hit / gold_n
    return {
        "sentences": sentences,
        "gold_tokens": gold_n,
        "predicted_tokens": pred_n,
        "sentence_exact_match": exact / sentences,
        "token_precision": precision,
        "token_recall": recall,
        "token_f1": 2 * precision * recall / (precision + recall),
        "gold_boundaries_kept": kept / gold_n,
        "entities": entities,
        "entities_aligned": aligned / entities if entities else 1.0,
        "tokens_per_second": pred_n / seconds,
    }


def to_markdown(results: dict[str, dict[str, float | int]]) -> str:
    """Render the per-corpus figures as a Markdown table."""
    lines = [
        "# Tokenizer agreement with the corpora (test.tsv)",
        "",
        "Method: see the docstring of `benchmarks/tokenizer_agreement.py` (detokenize, re-tokenize,",
        "compare character spans).",
        "",
        "BC2GM, BC5CDR and NCBI-disease cut every punctuation mark into its own token, as",
        "`tokenize_words` does. JNLPBA keeps its original GENIA joins (`IL-2`, `C/EBP`, `CD4+`,",
        "`NF-kappaB`), which `tokenize_words` splits: that is the whole JNLPBA gap. Every JNLPBA",
        "token is still one word or a run of whole words (gold boundaries kept), so every entity of",
        "every corpus starts and ends on a word boundary; `mtbioner.data.text.retokenize` brings JNLPBA",
        "sentences to the same words, labels included.",
        "",
        "| corpus | sentences | exact sentences | token P | token R | token F1 | gold boundaries kept "
        "| entities | entities aligned | words/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['sentences']} | {r['sentence_exact_match']:.2%} | {r['token_precision']:.2%} "
            f"| {r['token_recall']:.2%} | {r['token_f1']:.2%} | {r['gold_boundaries_kept']:.2%} "
            f"| {r['entities']} | {r['entities_aligned']:.2%} | {r['tokens_per_second']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    results = {}
    for name in CORPORA:
        path = args.data_dir / name / "test.tsv"
        if not path.is_file():
            print(f"skipping {name}: {path} not found", file=sys.stderr)
            continue
        results[name] = score_corpus(path)
    write_json(args.out_dir / "tokenizer_agreement.json", results)
    with atomic_write(args.out_dir / "tokenizer_agreement.md") as handle:
        handle.write(to_markdown(results))
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
