"""The torch-free tokenizer of exported models gives exactly the sub-tokens transformers gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from mtbioner.errors import ModelFormatError
from mtbioner.model.encoding import _sentence_pieces, special_affixes, word_pieces
from mtbioner.model.fast_tokenizer import FastTokenizer
from mtbioner.model.model import default_encoder
from mtbioner.runtime.shipped import DEFAULT_MODEL, shipped_models
from tests.conftest import shared_data_dir

# accents, Greek, hyphens, digits, case, an empty-looking control character, a long chemical name
WORDS = ["BRCA1", "IL-2Rα", "naïve", "ÉCOLE", "TNF-alpha", "β-catenin", "Na+/K+-ATPase", "x\u200b", "–", "%"]
WORDS += ["2-(4-chlorophenyl)-3-methyl-1,3-thiazolidin-4-one", "cyclooxygenase-2", "p53", "[CLS]", "O"]


@pytest.fixture(scope="module", params=["encoder", "shipped"])
def tokenizers(request) -> tuple:
    folder = default_encoder() if request.param == "encoder" else shipped_models()[DEFAULT_MODEL]
    return AutoTokenizer.from_pretrained(str(folder)), FastTokenizer.from_folder(folder)


def test_special_ids_and_affixes_match(tokenizers: tuple) -> None:
    hf, fast = tokenizers
    assert (fast.pad_token_id, fast.unk_token_id) == (hf.pad_token_id, hf.unk_token_id)
    assert special_affixes(fast) == special_affixes(hf)


def test_word_and_sentence_pieces_match(tokenizers: tuple) -> None:
    hf, fast = tokenizers
    sentences = [WORDS, WORDS[::-1], ["a"], WORDS[:3]]
    assert _sentence_pieces(fast, sentences) == _sentence_pieces(hf, sentences)
    assert word_pieces(fast, sentences) == word_pieces(hf, sentences)


def test_pieces_match_on_every_word_of_a_real_corpus_slice() -> None:
    from mtbioner.data.corpus import read_corpus

    folder = shipped_models()[DEFAULT_MODEL]
    hf, fast = AutoTokenizer.from_pretrained(str(folder)), FastTokenizer.from_folder(folder)
    words = sorted(
        {
            w
            for c in ("BC2GM", "JNLPBA")
            for s in read_corpus(shared_data_dir() / c).sentences("test")[:500]
            for w in s.tokens
        }
    )
    batch = [[w] for w in words]
    kwargs = {"is_split_into_words": True, "add_special_tokens": False}
    assert fast(batch, **kwargs)["input_ids"] == hf(batch, **kwargs)["input_ids"]


def test_single_sequence_and_batch_shapes() -> None:
    fast = FastTokenizer.from_folder(default_encoder())
    single = fast(["BRCA1", "gene"], is_split_into_words=True, add_special_tokens=True)
    assert isinstance(single["input_ids"][0], int) and single.word_ids(0)[0] is None
    batch = fast([["BRCA1"], ["gene"]], is_split_into_words=True, add_special_tokens=False)
    assert len(batch["input_ids"]) == 2 and batch.word_ids(1) == [0]
    with pytest.raises(ValueError, match="pre-tokenized"):
        fast("BRCA1 gene", is_split_into_words=False, add_special_tokens=False)
    with pytest.raises(KeyError):
        batch["attention_mask"]


def test_an_unreadable_tokenizer_file_is_a_model_format_error(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFormatError, match=str(tmp_path)):
        FastTokenizer.from_folder(tmp_path)


def run_without_torch(script: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh Python that then checks it imported neither torch nor transformers."""
    script += "import sys\nloaded = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
    script += "assert not loaded, loaded\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    return done


def test_tagging_with_an_exported_model_imports_neither_torch_nor_transformers() -> None:
    """Start-up in well under a second and ~100 MB less memory: what a small device or a short CLI call needs."""
    script = (
        "import sys\n"
        "from mtbioner.cli import main\n"
        "sys.argv = ['mtbioner', 'tag', 'Mutations in BRCA1 cause breast cancer.']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "from mtbioner import Tagger\n"
        "assert Tagger.load()('BRCA1 causes cancer.')\n"
    )
    assert '"BRCA1"' in run_without_torch(script).stdout
