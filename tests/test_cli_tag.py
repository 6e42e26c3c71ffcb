"""``mtbioner tag``: texts and files in, JSON lines or JSONL/CoNLL/brat/PubTator files out.

Most tests run the real entry point (``mtbioner.cli.main``, so errors go through its
one-line ``error:`` path) with ``Tagger.load`` returning the rule backend of
``test_tagging``, whose entities are known exactly; the outputs are compared with the
hand-made files in ``tests/data/tag_cli``. Two tests run ``python -m mtbioner`` on a real
saved tiny model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtbioner.cli import main
from mtbioner.data.formats import read_brat_ann, read_jsonl_entities, read_pubtator
from mtbioner.errors import RequestError
from mtbioner.runtime.tagging import Tagger, tag_documents
from tests.test_tagging import BRCA1, BREAST_CANCER, BREAST_GENE, CISPLATIN, EXAMPLE, RULES, RuleBackend, approx

DATA = Path(__file__).parent / "data" / "tag_cli"
SUFFIX = {"jsonl": ".jsonl", "conll": ".conll", "pubtator": ".pubtator", "brat": ""}


@pytest.fixture()
def rules(monkeypatch: pytest.MonkeyPatch, tiny_encoder: Path) -> None:
    """Make ``Tagger.load`` (whatever the folder) return the rule backend."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))

    def load(cls, model_dir=None, batch_size: int = 64, link=None) -> Tagger:
        return cls(RuleBackend(tokenizer, RULES), batch_size)

    monkeypatch.setattr(Tagger, "load", classmethod(load))


def tag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """Run ``mtbioner tag ARGS`` in-process: exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["mtbioner", "tag", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    return done.value.code, out, err


def files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir())}


def test_text_arguments_print_one_json_object_each(rules, monkeypatch, capsys, tmp_path: Path) -> None:
    rc, out, _ = tag(monkeypatch, capsys, tmp_path, EXAMPLE, "no entities", "--per-corpus")
    assert rc == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == [
        {"text": EXAMPLE, "entities": approx([BRCA1, BREAST_GENE, BREAST_CANCER, CISPLATIN])},
        {"text": "no entities", "entities": []},
    ]
    # by default, one merged answer: BC2GM's GENE is a Gene, the Disease both disease heads found is one entity
    rc, out, _ = tag(monkeypatch, capsys, tmp_path, EXAMPLE)
    merged = json.loads(out)["entities"]
    assert rc == 0 and [(e["text"], e["type"]) for e in merged] == [
        ("BRCA1", "Gene"), ("breast", "Gene"), ("breast cancer", "Disease"), ("cisplatin", "Chemical")
    ]  # fmt: skip
    assert merged[2]["corpus"] == ["BC5CDR", "NCBI-disease"]


@pytest.mark.parametrize(
    "options",
    [
        ["--flat"],
        ["--types", "Disease"],
        ["--types", "GENE", "--types", "Chemical"],
        ["--corpora", "NCBI-disease"],
        ["--min-score", "0.92"],
        ["--types", "GENE", "--flat", "--corpora", "BC2GM", "--min-score", "0.5"],
    ],
)
def test_filters_reach_the_tagger(rules, monkeypatch, capsys, tmp_path: Path, options: list[str]) -> None:
    rc, out, _ = tag(monkeypatch, capsys, tmp_path, EXAMPLE, *options)
    assert rc == 0
    keyword = {"--flat": "flat", "--types": "types", "--corpora": "corpora", "--min-score": "min_score"}
    expected_options: dict = {}
    for i, option in enumerate(options):
        if option == "--flat":
            expected_options["flat"] = True
        elif option == "--min-score":
            expected_options["min_score"] = float(options[i + 1])
        elif option in keyword:
            expected_options.setdefault(keyword[option], []).append(options[i + 1])
    expected = Tagger.load(tmp_path)(EXAMPLE, **expected_options)
    assert json.loads(out)["entities"] == expected


@pytest.mark.parametrize("fmt", ["jsonl", "conll", "brat", "pubtator"])
def test_jsonl_input_to_each_format_matches_the_hand_made_file(
    rules, monkeypatch, capsys, tmp_path: Path, fmt: str
) -> None:
    output = tmp_path / f"out{SUFFIX[fmt]}"
    args = ["--input", DATA / "input.jsonl", "--output", output, "--no-progress", "--per-corpus"]
    rc, out, err = tag(monkeypatch, capsys, tmp_path / "m", *args, *(["--format", fmt] if fmt != "jsonl" else []))
    assert (rc, out, err) == (0, "", f"tagged 3 documents -> {output}\n")
    expected = DATA / f"expected{SUFFIX[fmt] or '_brat'}"
    if fmt == "brat":
        assert files(output) == files(expected)
    else:
        assert output.read_text(encoding="utf-8") == expected.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == [output.name]  # no temporary file left behind


def test_written_files_read_back(rules, monkeypatch, capsys, tmp_path: Path) -> None:
    for fmt in ("jsonl", "brat", "pubtator"):
        args = ["--input", DATA / "input.jsonl", "--output", tmp_path / f"out.{fmt}", "--format", fmt, "--per-corpus"]
        assert tag(monkeypatch, capsys, tmp_path / "m", *args)[0] == 0
    records = read_jsonl_entities(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == ["p1", "p2", "3"]
    assert records[0]["source"] == "kept as is" and records[1]["year"] == 2020  # other fields kept
    assert records[0]["entities"] == approx([BRCA1, BREAST_GENE, BREAST_CANCER, CISPLATIN])
    spans = [[(e["start"], e["end"], e["type"]) for e in r["entities"]] for r in records]
    pubtator = read_pubtator(tmp_path / "out.pubtator")
    assert [[(e["start"], e["end"], e["type"]) for e in d["entities"]] for d in pubtator] == spans
    assert [d["text"] for d in pubtator] == [r["text"].replace("\t", " ") for r in records]
    for record in records:
        ann = read_brat_ann(tmp_path / "out.brat" / f"{record['id']}.ann")
        assert [(e["start"], e["end"], e["type"], e["corpus"], e["score"]) for e in ann] == [
            (e["start"], e["end"], e["type"], e["corpus"], e["score"]) for e in record["entities"]
        ]


@pytest.mark.parametrize("fmt", ["bioc-xml", "bioc-json"])
def test_bioc_output_reads_back_with_the_same_offsets(rules, monkeypatch, capsys, tmp_path: Path, fmt: str) -> None:
    from mtbioner.data.bioc_format import read_bioc

    output = tmp_path / f"out.{fmt.replace('-', '.')}"
    args = ["--input", DATA / "input.jsonl", "--output", output, "--format", fmt, "--no-progress", "--per-corpus"]
    assert tag(monkeypatch, capsys, tmp_path / "m", *args)[0] == 0
    expected = read_jsonl_entities(DATA / "expected.jsonl")
    documents = read_bioc(output)
    assert [d["id"] for d in documents] == [r["id"] for r in expected]
    assert [d["text"] for d in documents] == [r["text"] for r in expected]
    for document, record in zip(documents, expected, strict=True):
        assert [(e["start"], e["end"], e["text"], e["type"]) for e in document["entities"]] == [
            (e["start"], e["end"], e["text"], e["type"]) for e in record["entities"]
        ]


def test_txt_input_ids_are_line_numbers(rules, monkeypatch, capsys, tmp_path: Path) -> None:
    rc, out, _ = tag(monkeypatch, capsys, tmp_path, "--input", DATA / "documents.txt")
    assert rc == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["id"], r["text"]) for r in records] == [
        ("1", "Mutations in BRCA1 cause breast cancer."),
        ("3", "KRAS  and\tcisplatin 😀"),
        ("4", "nothing here"),
    ]
    assert [[e["text"] for e in r["entities"]] for r in records] == [
        ["BRCA1", "breast", "breast cancer"],
        ["KRAS", "cisplatin"],
        [],
    ]


def test_text_arguments_to_a_file(rules, monkeypatch, capsys, tmp_path: Path) -> None:
    output = tmp_path / "out.pubtator"
    rc, out, _ = tag(monkeypatch, capsys, tmp_path, EXAMPLE, "KRAS", "--output", output, "--format", "pubtator")
    assert (rc, out) == (0, "")
    assert [(d["id"], d["text"], len(d["entities"])) for d in read_pubtator(output)] == [
        ("1", EXAMPLE, 4),
        ("2", "KRAS", 1),
    ]


def test_progress_bar_counts_documents_on_stderr(rules, monkeypatch, capsys, tmp_path: Path) -> None:
    source = tmp_path / "many.txt"
    source.write_text("Mutations in BRCA1.\n" * 30, encoding="utf-8")
    args = ["--input", source, "--output", tmp_path / "out.jsonl", "--chunk", "8"]
    rc, out, err = tag(monkeypatch, capsys, tmp_path, *args)
    assert (rc, out) == (0, "")
    assert "tagging: 100%" in err and "30/30" in err and err.endswith(f"tagged 30 documents -> {args[3]}\n")
    rc, _, err = tag(monkeypatch, capsys, tmp_path, *args, "--no-progress")
    assert err == f"tagged 30 documents -> {args[3]}\n"


def test_documents_stream_chunk_by_chunk_until_a_bad_line(rules, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": i, "text": "BRCA1 rose."}) for i in range(1, 26)] + ["{not json"] + ["{}"] * 5
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    seen = []
    with pytest.raises(RequestError, match=r"in\.jsonl:26: invalid JSON"):
        for record in tag_documents(Tagger.load(tmp_path), source, chunk=10):
            seen.append(record["id"])
    assert seen == list(range(1, 21))  # two chunks were tagged and handed on before line 26 was read


BAD_JSON = f"{DATA / 'bad.jsonl'}:3: invalid JSON"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", DATA / "bad.jsonl", "--output", "{out}/x.jsonl", "--chunk", "1"], BAD_JSON),
        (["--input", DATA / "bad.jsonl", "--output", "{out}/x", "--format", "brat", "--chunk", "1"], BAD_JSON),
        (["--input", DATA / "bad.jsonl", "--output", "{out}/x.txt", "--format", "pubtator"], BAD_JSON),
        (["--input", DATA / "bad.jsonl", "--output", "{out}/x.conll", "--format", "conll"], BAD_JSON),
        (["--input", DATA / "input.jsonl", "--format", "brat"], "--format brat needs --output"),
        (["--input", DATA / "input.jsonl", "--format", "xml", "--output", "{out}/x"], "--format 'xml': use one of"),
        ([], "give either texts to tag or --input FILE"),
        ([EXAMPLE, "--input", DATA / "input.jsonl"], "give either texts to tag or --input FILE"),
        ([EXAMPLE, "--types", "Protein"], "unknown entity types ['Protein']"),
        (["--input", DATA / "input.jsonl", "--output", "{out}/x.jsonl", "--corpora", "X"], "unknown corpora ['X']"),
        ([EXAMPLE, "--min-score", "2"], "min_score must be between 0 and 1, not 2.0"),
        (["--input", "{out}/missing.jsonl", "--output", "{out}/x.jsonl"], "missing.jsonl: cannot read"),
        (["--input", DATA / "expected.conll", "--output", "{out}/x.jsonl"], "unknown input format '.conll'"),
        (["--input", DATA / "input.jsonl", "--chunk", "0"], "chunk must be at least 1 document, not 0"),
        ([EXAMPLE, "--batch-size", "0"], "batch_size must be at least 1, not 0"),
        ([DATA / "input.jsonl"], "input.jsonl: is a file; tag its documents with --input"),
        ([EXAMPLE, "--link-threshold", "0.5"], "--link-threshold needs --link"),
        (["--input", DATA / "input.jsonl", "--output", "{out}"], "out: is a folder; give a file name"),
        (
            ["--input", DATA / "input.jsonl", "-o", DATA / "input.jsonl" / "y"],
            "cannot create the output folder's parent",
        ),
    ],
)
def test_mistakes_print_one_line_and_exit_2(rules, monkeypatch, capsys, tmp_path: Path, args, message) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [str(a).replace("{out}", str(out_dir)) for a in args]
    rc, out, err = tag(monkeypatch, capsys, tmp_path, *args, "--no-progress")
    assert rc == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert list(out_dir.iterdir()) == []  # no output, no temporary file


def test_outputs_that_would_destroy_a_file_are_refused_before_tagging(
    rules, monkeypatch, capsys, tmp_path: Path
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("Mutations in BRCA1.\n", encoding="utf-8")
    for output, fmt, message in [(source, "jsonl", "would replace the input"), (source, "brat", "writes a folder")]:
        rc, out, err = tag(monkeypatch, capsys, tmp_path, "--input", source, "-o", output, "-f", fmt, "--no-progress")
        assert (rc, out) == (2, "") and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert source.read_text(encoding="utf-8") == "Mutations in BRCA1.\n"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".json")) == ["in.txt"]


def test_a_missing_model_path_is_not_tagged_as_text(monkeypatch, capsys, tmp_path: Path) -> None:
    typo = tmp_path / "no-such-model"  # its folder exists: a model path mistyped, not a text
    rc, out, err = tag(monkeypatch, capsys, typo, "Mutations in BRCA1.")
    assert (rc, out) == (2, "") and err.startswith(f"error: {typo}: no such model folder"), err


def test_failed_run_keeps_the_previous_output(rules, monkeypatch, capsys, tmp_path: Path) -> None:
    output = tmp_path / "x.jsonl"
    output.write_text("previous\n")
    rc, _, _ = tag(monkeypatch, capsys, tmp_path, "--input", DATA / "bad.jsonl", "--output", output, "--chunk", "1")
    assert rc == 2 and output.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tag", "m", "x", "--no-such-option"], "No such option: --no-such-option"),
        (["tagg"], "No such command 'tagg'"),
        (["evaluate"], "Missing argument 'model'"),
        (["export", "m", "out", "--quantize"], "Option '--quantize' requires an argument"),
    ],
)
def test_usage_mistakes_print_usage_and_exit_2_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    """Typer's own errors (it may run on a vendored copy of click) end as a usage line, not a traceback."""
    monkeypatch.setattr(sys, "argv", ["mtbioner", *argv])
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    assert done.value.code == 2 and out == ""
    assert f"Error: {message}" in err and "Traceback" not in err, err
    assert "Usage: mtbioner" in err or "Usage" not in err, err  # the program's name, not the test runner's


# --- The installed entry point on a real (tiny, random) model --------------------------------------


@pytest.fixture(scope="module")
def model_dir(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_tagging import biased_model

    folder = tmp_path_factory.mktemp("tag-cli") / "model"
    biased_model(tiny_encoder, "linear").save_pretrained(folder)
    return folder


def python_m(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mtbioner", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_python_m_tags_a_text_with_a_real_model(model_dir: Path) -> None:
    text = "Mutations in BRCA1 cause breast cancer after tamoxifen treatment."
    done = python_m("tag", model_dir, text)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    record = json.loads(line)
    assert record["text"] == text and record["entities"]
    assert record["entities"] == Tagger.load(model_dir)(text)
    assert all(text[e["start"] : e["end"]] == e["text"] for e in record["entities"])


def test_python_m_bad_record_is_one_error_line_without_traceback(model_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "x.jsonl"
    done = python_m(
        "tag", model_dir, "--input", DATA / "bad.jsonl", "--output", output, "--chunk", "1", "--no-progress"
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {BAD_JSON}") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and not output.exists() and list(tmp_path.iterdir()) == []


def test_the_model_is_the_first_argument_only_when_it_names_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tiny_encoder: Path, tmp_path: Path
) -> None:
    """``tag TEXT`` uses the shipped model; ``tag FOLDER TEXT`` and ``tag -m NAME TEXT`` name one."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    asked: list[object] = []

    def load(cls, model_dir=None, batch_size: int = 64, link=None) -> Tagger:
        asked.append(model_dir)
        return cls(RuleBackend(tokenizer, RULES), batch_size)

    monkeypatch.setattr(Tagger, "load", classmethod(load))
    folder = tmp_path / "m"
    folder.mkdir()
    for args, model, texts in [
        ([EXAMPLE], None, [EXAMPLE]),
        ([folder, EXAMPLE, "BRCA1"], str(folder), [EXAMPLE, "BRCA1"]),
        (["-m", "fast", EXAMPLE], "fast", [EXAMPLE]),
        (["BRCA1/2", EXAMPLE], None, ["BRCA1/2", EXAMPLE]),  # a word with a slash is text when no such path
        (["x" * 5000, "a/" + "y" * 5000], None, ["x" * 5000, "a/" + "y" * 5000]),  # too long to be paths: texts
        (["-m", "default", "runs/m", EXAMPLE], "default", ["runs/m", EXAMPLE]),  # model named: the rest is text
    ]:
        asked.clear()
        code, out, err = tag(monkeypatch, capsys, *args)
        assert code == 0, err
        assert asked == [model]
        assert [json.loads(line)["text"] for line in out.splitlines()] == texts
