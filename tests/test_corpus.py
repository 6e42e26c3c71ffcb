"""Tests for mtbioner.data.corpus: token<TAB>label files, corpus folders, lookup by name, statistics.

Bad files must give a CorpusFormatError naming file and line (and, through the CLI, one
``error:`` line and exit status 2); the fast reader must agree with the line-by-line
reference reader on any input, or hand the file over to it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtbioner.cli import main
from mtbioner.data.corpus import (
    DATA_ENV,
    Sentence,
    _clean,
    _read_fast,
    _read_lines,
    corpus_stats,
    read_corpus,
    read_split,
    resolve_corpus,
    split_names,
)
from mtbioner.errors import CorpusFormatError, MtbionerError

from .conftest import REPO, TOY, one_error_line, shared_data_dir

DATA = Path(__file__).parent / "data"
BROKEN = DATA / "broken"
SCHEMES = DATA / "schemes"

# file -> (line named in the error, or None for the whole file; words the message must hold)
BROKEN_FILES = {
    "empty.tsv": (None, "the file is empty"),
    "empty_label.tsv": (6, "empty label"),
    "empty_token.tsv": (6, "empty token"),
    "lowercase_label.tsv": (6, "malformed tag 'o'"),
    "malformed_label.tsv": (5, "malformed tag 'B_GENE'"),
    "non_utf8.tsv": (6, "not valid UTF-8"),
    "one_column.tsv": (6, "expected 2 tab-separated columns (token, label), found 1"),
    "only_markers.tsv": (None, "only blank lines and -DOCSTART- markers"),
    "three_columns.tsv": (5, "expected 2 tab-separated columns (token, label), found 3"),
    "whitespace_token.tsv": (6, "empty token"),
}


def test_every_broken_file_is_listed() -> None:
    assert {p.name for p in BROKEN.glob("*.tsv")} == set(BROKEN_FILES)


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}: " if line is not None else f"{path}: "


@pytest.mark.parametrize("name", sorted(BROKEN_FILES))
def test_broken_file_names_file_and_line(name: str) -> None:
    line, words = BROKEN_FILES[name]
    with pytest.raises(CorpusFormatError) as info:
        read_split(BROKEN / name)
    assert info.value.line == line
    assert info.value.path == BROKEN / name
    assert str(info.value).startswith(_where(BROKEN / name, line))
    assert words in str(info.value)


def test_missing_split_is_named() -> None:
    with pytest.raises(
        CorpusFormatError,
        match="missing split 'test': no test.tsv, test/, test.pubtator, test.bioc.xml or test.bioc.json",
    ):
        read_corpus(BROKEN / "missing_split")
    corpus = read_corpus(BROKEN / "missing_split", splits=["train", "devel"])  # the present ones are fine
    assert list(corpus.splits) == ["train", "devel"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (BROKEN, "is not a corpus: it is a folder without any split"),
        (BROKEN / "empty.tsv", "is not a corpus: it is a file"),
        (BROKEN / "nowhere", "does not exist"),
    ],
)
def test_not_a_corpus(path: Path, message: str) -> None:
    with pytest.raises(MtbionerError, match=message) as info:
        read_corpus(path)
    assert "SPLIT.tsv" in str(info.value)  # says what a corpus looks like


def test_unloaded_split_and_bad_options() -> None:
    corpus = read_corpus(TOY / "toy_gene", splits="devel")
    with pytest.raises(MtbionerError, match="no 'test' split loaded"):
        corpus.sentences("test")
    with pytest.raises(MtbionerError, match="limit must be a positive"):
        read_split(TOY / "toy_gene" / "train.tsv", limit=0)
    with pytest.raises(MtbionerError, match="unknown tag scheme 'BILOU'"):
        read_split(TOY / "toy_gene" / "train.tsv", scheme="BILOU")
    with pytest.raises(MtbionerError, match="no splits requested"):
        read_corpus(TOY / "toy_gene", splits=[])
    with pytest.raises(CorpusFormatError, match="is a folder, not a token<TAB>label file"):
        from mtbioner.data.corpus import read_tsv

        read_tsv(TOY)


def test_unreadable_file_is_a_corpus_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("a\tO\n", encoding="utf-8")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(CorpusFormatError, match="cannot read: Permission denied"):
        read_split(path)


# --- through the command line ------------------------------------------------------------


def _broken_corpus(tmp_path: Path, name: str) -> Path:
    """A corpus whose train split is the broken file and whose other splits are fine."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copy(BROKEN / name, folder / "train.tsv")
    for split in ("devel", "test"):
        shutil.copy(TOY / "toy_gene" / f"{split}.tsv", folder / f"{split}.tsv")
    return folder


def run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run ``mtbioner ARGS`` in this process through ``main`` (as the console script does)."""
    monkeypatch.setattr(sys, "argv", ["mtbioner", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


@pytest.mark.parametrize("name", sorted(BROKEN_FILES))
@pytest.mark.parametrize("command", ["inspect", "train"])
def test_cli_reports_broken_file_in_one_line(
    name: str, command: str, tmp_path: Path, tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    line, words = BROKEN_FILES[name]
    corpus = _broken_corpus(tmp_path, name)
    args = [command, str(corpus), "--encoder", str(tiny_encoder)]
    if command == "train":
        args += ["--output", str(tmp_path / "model"), "--epochs", "1", "--no-progress"]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 2
    message = one_error_line(err)
    assert message.startswith("error: " + _where(corpus / "train.tsv", line))
    assert words in message
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (str(BROKEN / "missing_split"), "missing split 'test'"),
        (str(BROKEN), "is not a corpus"),
        ("no_such_corpus", "corpus 'no_such_corpus' not found"),
    ],
)
def test_cli_reports_bad_corpus_folder(spec: str, words: str, tiny_encoder: Path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(["inspect", spec, "--encoder", str(tiny_encoder)], monkeypatch, capsys)
    assert code == 2
    assert words in one_error_line(err)


@pytest.mark.parametrize(("command", "name"), [("inspect", "non_utf8.tsv"), ("train", "three_columns.tsv")])
def test_console_command_exits_2_without_traceback(command: str, name: str, tmp_path: Path) -> None:
    """The real ``python -m mtbioner`` process, once per command: exit 2, one ``error:`` line."""
    corpus = _broken_corpus(tmp_path, name)
    args = [sys.executable, "-m", "mtbioner", command, str(corpus)]
    if command == "train":
        args += ["--output", str(tmp_path / "model")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 2, result.stderr
    line, _ = BROKEN_FILES[name]
    assert one_error_line(result.stderr).startswith("error: " + _where(corpus / "train.tsv", line))
    assert result.stdout == ""


# --- tag schemes -----------------------------------------------------------------------------


def _tags(split) -> list[tuple[str, ...]]:
    return [s.tags for s in split.sentences]


@pytest.mark.parametrize(("name", "scheme"), [("iob2.tsv", "IOB2"), ("iob1.tsv", "IOB1"), ("iobes.tsv", "IOBES")])
def test_schemes_are_read_as_iob2(name: str, scheme: str) -> None:
    reference = read_split(SCHEMES / "iob2.tsv")
    split = read_split(SCHEMES / name)
    assert split.scheme == scheme
    assert split.repaired == 0  # IOB1 starts and IOBES prefixes are the scheme, not errors
    assert _tags(split) == _tags(reference)
    assert [s.tokens for s in split.sentences] == [s.tokens for s in reference.sentences]
    assert read_split(SCHEMES / name, scheme=scheme).sentences == split.sentences


def test_ill_formed_iob2_is_repaired_as_conlleval_reads_it() -> None:
    split = read_split(SCHEMES / "ill_formed_iob2.tsv")
    assert split.scheme == "IOB2"
    assert split.repaired == 2
    assert _tags(split) == [
        ("B-GENE", "O"),
        ("B-GENE", "O"),  # I-GENE at the sentence start
        ("B-CHEM", "B-GENE"),  # I-GENE after another type
        ("B-GENE", "I-GENE", "I-GENE"),
    ]


def test_ill_formed_iobes_is_repaired() -> None:
    split = read_split(SCHEMES / "ill_formed_iobes.tsv")
    assert split.scheme == "IOBES"
    assert split.repaired == 2
    assert _tags(split) == [
        ("B-GENE", "I-GENE", "O"),  # I-GENE opening a chunk
        ("B-CHEM", "B-CHEM"),  # E-CHEM after S-CHEM
        ("B-GENE", "I-GENE", "I-GENE"),
    ]


def test_iobes_label_with_an_iob_scheme_names_the_line() -> None:
    with pytest.raises(CorpusFormatError, match=r"iobes.tsv:1: label 'S-GENE' is IOBES, but scheme IOB2"):
        read_split(SCHEMES / "iobes.tsv", scheme="IOB2")


def test_repairs_are_reported_by_stats(tmp_path: Path) -> None:
    shutil.copy(SCHEMES / "ill_formed_iob2.tsv", tmp_path / "train.tsv")
    corpus = read_corpus(tmp_path, splits=["train"])
    assert corpus_stats(corpus)["train"]["repaired"] == 2


# --- layout details: markers, limit, line endings ------------------------------------------


def write(tmp_path: Path, text: str | bytes, name: str = "train.tsv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


THREE_DOCS = (
    "-DOCSTART-\tO\n\nBRCA1\tB-GENE\nrises\tO\n\n"
    "-DOCSTART-\tO\n\naspirin\tB-CHEM\n\nTP53\tB-GENE\n\n"
    "-DOCSTART-\tO\n\nKRAS\tB-GENE\nfalls\tO\n"
)


def test_docstart_lines_mark_documents_not_sentences(tmp_path: Path) -> None:
    split = read_split(write(tmp_path, THREE_DOCS))
    assert split.documents == 3
    assert [(s.tokens, s.document, s.line) for s in split.sentences] == [
        (("BRCA1", "rises"), 0, 3),
        (("aspirin",), 1, 8),
        (("TP53",), 1, 10),
        (("KRAS", "falls"), 2, 14),
    ]


@pytest.mark.parametrize(
    ("text", "documents"),
    [
        ("a\tO\n\nb\tO\n", 1),  # no marker: one document
        ("a\tO\n\n-DOCSTART-\tO\n\nb\tO\n", 2),  # sentences before the first marker are a document
        ("-DOCSTART-\tO\n\n-DOCSTART-\tO\n\na\tO\n", 2),  # an empty document still counts
        ("-DOCSTART- O\na\tO\n-DOCSTART-\nb\tO\n", 2),  # markers without a blank line, any separator
    ],
)
def test_document_counting(tmp_path: Path, text: str, documents: int) -> None:
    assert read_split(write(tmp_path, text)).documents == documents


def test_limit_reads_the_first_sentences(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_DOCS + "\nbroken line\n")  # never reached with a limit
    split = read_split(path, limit=2)
    assert [s.tokens for s in split.sentences] == [("BRCA1", "rises"), ("aspirin",)]
    assert split.documents == 2
    with pytest.raises(CorpusFormatError, match=":17: expected 2 tab-separated columns"):
        read_split(path)


def test_limit_on_a_corpus(toy_dir: Path) -> None:
    corpus = read_corpus(toy_dir / "toy_chem", limit=3)
    assert {name: len(split.sentences) for name, split in corpus.splits.items()} == {
        "train": 3,
        "devel": 3,
        "test": 3,
    }


CLEAN = "BRCA1\tB-GENE\nrises\tO\n\naspirin\tB-CHEM\n"


@pytest.mark.parametrize(
    "variant",
    [
        CLEAN.replace("\n", "\r\n"),  # Windows line endings
        CLEAN.replace("\n", " \n"),  # trailing spaces
        CLEAN.replace("\n", "  \r\n"),
        "\ufeff" + CLEAN,  # UTF-8 byte order mark
        CLEAN.rstrip("\n"),  # no final newline
        "\n\n" + CLEAN.replace("\n\n", "\n \n\t\n\n") + "\n\n\n",  # extra and whitespace-only blank lines
    ],
)
def test_harmless_layout_variants_read_the_same(tmp_path: Path, variant: str) -> None:
    expected = read_split(write(tmp_path, CLEAN, "clean.tsv")).sentences
    got = read_split(write(tmp_path, variant)).sentences
    assert [(s.tokens, s.tags) for s in got] == [(s.tokens, s.tags) for s in expected]


def test_crlf_error_line_numbers_are_unchanged(tmp_path: Path) -> None:
    with pytest.raises(CorpusFormatError, match=r"train.tsv:4: malformed tag 'X'"):
        read_split(write(tmp_path, "a\tO\r\nb\tO\r\n\r\nc\tX\r\n"))


def test_unicode_line_separator_stays_inside_a_token(tmp_path: Path) -> None:
    split = read_split(write(tmp_path, "a\u2028b\tO\nc\tB-GENE\n"))
    assert split.sentences[0].tokens == ("a\u2028b", "c")


# --- the fast reader against the reference reader -------------------------------------------

TOKENS = ["BRCA1", "p53", "α-syn", "-DOCSTART-", "x-DOCSTART-", "", " ", "a b", "\u2028", "\x0c", " p"]
LABELS = ["O", "B-GENE", "I-GENE", "E-GENE", "S-CHEM", "I-CHEM", "B_X", "o", "", " O", "B-GENE\t", "I-"]
GOOD_LABELS = ["O", "O", "B-GENE", "I-GENE", "B-CHEM", "I-CHEM", "E-GENE", "S-GENE"]
MARKERS = ["-DOCSTART-\tO", "-DOCSTART-", "-DOCSTART- O", "-DOCSTART-\tO\tX"]
BLANKS = ["", "", "", " ", "\t", "  ", "\u3000"]

any_line = st.one_of(
    st.builds(lambda t, label: f"{t}\t{label}", st.sampled_from(TOKENS), st.sampled_from(LABELS)),
    st.sampled_from(MARKERS + BLANKS),
    st.sampled_from(["BRCA1", "a\tO\tX", "a\t\tO", "\tO", "a O"]),
)
good_line = st.builds(lambda t, label: f"{t}\t{label}", st.sampled_from(TOKENS[:3]), st.sampled_from(GOOD_LABELS))


@st.composite
def well_formed_files(draw: st.DrawFn) -> str:
    """Sentences of good lines, one blank line apart, with ``-DOCSTART-`` blocks among them."""
    blocks = draw(
        st.lists(
            st.one_of(st.lists(good_line, min_size=1, max_size=6).map("\n".join), st.sampled_from(MARKERS[:3])),
            min_size=1,
            max_size=12,
        )
    )
    text = "\n\n".join(blocks)
    return text + draw(st.sampled_from(["", "\n", "\n\n"]))


def _compare(text: str, limit: int | None, scheme: str, path: Path = Path("x.tsv")) -> bool:
    """Assert that the fast reader equals the reference or declines; return whether it answered."""
    text = _clean(text)
    fast = _read_fast(text, limit, scheme)
    try:
        reference = _read_lines(path, text, limit, scheme)
    except CorpusFormatError:
        assert fast is None, text
        return False
    if fast is not None:
        assert fast == reference, text
    return fast is not None


SCHEME_ARG = st.sampled_from(["auto", "IOB2", "IOBES", "IOB1"])
LIMIT = st.one_of(st.none(), st.integers(1, 5))


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(any_line, max_size=25),
    newline=st.sampled_from(["\n", "\r\n", " \n"]),
    limit=LIMIT,
    scheme=SCHEME_ARG,
)
def test_fast_reader_agrees_or_falls_back_on_any_file(lines: list[str], newline: str, limit, scheme: str) -> None:
    _compare(newline.join(lines), limit, scheme)


@settings(max_examples=300, deadline=None)
@given(text=well_formed_files(), limit=LIMIT, crlf=st.booleans())
def test_fast_reader_takes_well_formed_files(text: str, limit, crlf: bool) -> None:
    answered = _compare(text.replace("\n", "\r\n") if crlf else text, limit, "auto")
    if any(line and not line.startswith("-DOCSTART-") for line in text.split("\n")):
        assert answered, text


def test_fast_reader_matches_reference_on_jnlpba_devel() -> None:
    """JNLPBA has ``-DOCSTART-`` markers: a real file with documents through both readers."""
    path = shared_data_dir() / "JNLPBA" / "devel.tsv"
    text = _clean(path.read_bytes().decode("utf-8-sig"))
    fast = _read_fast(text, None, "auto")
    assert fast is not None
    assert fast == _read_lines(path, text, None, "auto")
    assert fast[1] == 200
    assert _read_fast(text, 100, "auto") == _read_lines(path, text, 100, "auto")


# --- finding corpora -------------------------------------------------------------------------


def test_resolve_by_path_name_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert resolve_corpus(str(TOY / "toy_gene")) == TOY / "toy_gene"
    assert resolve_corpus("toy_gene", TOY) == TOY / "toy_gene"
    monkeypatch.setenv(DATA_ENV, str(TOY))
    assert resolve_corpus("toy_chem") == TOY / "toy_chem"
    with pytest.raises(MtbionerError, match="no corpora found in"):  # --data-dir overrides the environment
        resolve_corpus("toy_chem", tmp_path)


def test_resolve_error_lists_available_corpora(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(MtbionerError) as info:
        resolve_corpus("toy_protein", TOY)
    message = str(info.value)
    assert "corpus 'toy_protein' not found" in message
    assert str(TOY / "toy_protein") in message
    assert message.endswith("corpora in " + str(TOY) + ": toy_chem, toy_gene")


def test_resolve_without_a_data_dir_says_how_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(MtbionerError, match="pass --data-dir or set MTBIONER_DATA"):
        resolve_corpus("toy_gene")
    with pytest.raises(MtbionerError, match="empty corpus name"):
        resolve_corpus(" ")
    with pytest.raises(MtbionerError, match="is a file; give the corpus folder"):
        resolve_corpus(str(TOY / "toy_gene" / "train.tsv"))


def test_corpus_is_named_after_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(TOY / "toy_gene")
    assert read_corpus(".", splits=["test"]).name == "toy_gene"


# --- statistics and inspect ------------------------------------------------------------------


def test_corpus_stats_counts(toy_dir: Path, tiny_encoder: Path) -> None:
    from transformers import AutoTokenizer

    corpus = read_corpus(toy_dir / "toy_gene")
    stats = corpus_stats(corpus)
    train = corpus.splits["train"]
    assert stats["train"] == {
        "format": "tsv",
        "documents": 1,
        "sentences": len(train.sentences),
        "tokens": sum(len(s.tokens) for s in train.sentences),
        "entities": {"GENE": sum(t.startswith("B-") for s in train.sentences for t in s.tags)},
        "repaired": 0,
        "scheme": "IOB2",
        "skipped": 0,
        "warnings": 0,
    }
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    longest = corpus_stats(corpus, tokenizer)["train"]["longest_subtokens"]
    lengths = [len(tokenizer(list(s.tokens), is_split_into_words=True)["input_ids"]) for s in train.sentences]
    assert longest == max(lengths)  # [CLS] and [SEP] included


def test_labels_and_entity_types(toy_dir: Path) -> None:
    corpus = read_corpus(toy_dir / "toy_chem")
    assert corpus.entity_types == ["CHEM"]
    assert corpus.labels == ["B-CHEM", "I-CHEM", "O"]
    assert Sentence(("a",), ("O",)).document == 0


def test_inspect_toy_corpora_by_name(tiny_encoder: Path, monkeypatch, capsys) -> None:
    args = [
        "inspect",
        "toy_gene",
        "toy_chem",
        "--data-dir",
        str(TOY),
        "--encoder",
        str(tiny_encoder),
        "--json",
    ]
    code, out, _ = run_cli(args, monkeypatch, capsys)
    assert code == 0
    result = json.loads(out)
    assert list(result) == ["toy_gene", "toy_chem"]
    assert list(result["toy_gene"]) == ["train", "devel", "test"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    expected = corpus_stats(read_corpus(TOY / "toy_chem"), tokenizer)
    # and what a run on both would remove from train and devel: toy_chem repeats some of its test sentences
    expected["train"]["in_scored_splits"] = {"removed": 4, "toy_chem/test": 4}
    expected["devel"]["in_scored_splits"] = {"removed": 2, "toy_chem/test": 2}
    assert result["toy_chem"] == expected
    code, out, _ = run_cli(args[:-1], monkeypatch, capsys)  # the table
    assert code == 0
    assert out.splitlines()[0] == "toy_gene"
    assert "entities: GENE" in out and "entities: CHEM" in out


def test_inspect_bc5cdr_with_a_limit(monkeypatch, capsys) -> None:
    monkeypatch.setenv(DATA_ENV, str(shared_data_dir()))
    code, out, _ = run_cli(["inspect", "BC5CDR", "--limit", "25", "--json"], monkeypatch, capsys)
    assert code == 0
    stats = json.loads(out)["BC5CDR"]
    for split in ("train", "devel", "test"):
        row = stats[split]
        assert row["sentences"] == 25 and row["documents"] == 1 and row["scheme"] == "IOB2"
        assert set(row["entities"]) == {"Chemical", "Disease"}
        assert 10 < row["longest_subtokens"] < 512
    first = read_split(shared_data_dir() / "BC5CDR" / "train.tsv", limit=25).sentences
    assert stats["train"]["tokens"] == sum(len(s.tokens) for s in first)


def test_split_names_reads_comma_lists_and_lists_alike() -> None:
    assert split_names("train, devel,") == ["train", "devel"]
    assert split_names([" train", "", "test "]) == ["train", "test"]
    assert split_names(" , ") == []
