"""``mtbioner tag-corpus``: Ray Data over shards, equal to ``mtbioner tag``, resumable, exactly once.

A tiny random model with scaled-up heads (entities on many words) tags a few hundred
generated documents in four shards (three JSONL with extra fields, one plain text). The
Ray tests share one local Ray instance (2 CPUs, small object store); the killed-midway test
runs the command line in a subprocess with its own Ray, kills the whole process tree after
the first finished shard, and reruns it.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mtbioner.apps import scaling
from mtbioner.apps.scaling import CorpusJob, ShardWorker, count_check, find_inputs, plan_shards, tag_corpus
from mtbioner.cli import app, main
from mtbioner.errors import MtbionerError
from mtbioner.fileio import write_json
from mtbioner.model.model import MultiTaskTagger

LABELS = {
    "BC2GM": ["B-GENE", "I-GENE", "O"],
    "BC5CDR": ["B-Chemical", "B-Disease", "I-Chemical", "I-Disease", "O"],
}
WORDS = "aspirin binds brca1 protein expression the of in cancer myc increased was cells , . ( ) - 5".split()


@pytest.fixture(scope="module")
def model_dir(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    model = MultiTaskTagger.from_encoder(LABELS, tiny_encoder, max_length=16)
    with torch.no_grad():
        for name in model.corpora:
            model.head(name).classifier.weight.mul_(10.0)
    folder = tmp_path_factory.mktemp("tagger") / "m"
    model.save_pretrained(folder)
    return folder


def _document(rng: random.Random) -> str:
    sentences = [" ".join(rng.choices(WORDS, k=rng.randint(3, 25))) + "." for _ in range(rng.randint(1, 4))]
    return " ".join(sentences)


def write_corpus(folder: Path, sizes: tuple[int, ...] = (90, 80, 70), text_docs: int = 60) -> int:
    """JSONL shards with ids and an extra field, and one .txt shard; returns the document count."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    for index, size in enumerate(sizes):
        with (folder / f"part-{index}.jsonl").open("w", encoding="utf-8") as handle:
            for n in range(size):
                record = {"id": f"p{index}-{n}", "text": _document(rng), "source": "gen"}
                handle.write(json.dumps(record) + "\n")
    lines = [_document(rng) for _ in range(text_docs)]
    lines[5] = ""  # a blank line is skipped (and its number not reused), as by `mtbioner tag`
    (folder / "plain.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sum(sizes) + text_docs - 1


def read_output(folder: Path) -> dict[tuple[str, str], dict]:
    """Every output record keyed by (shard, id); fails on a duplicate."""
    records: dict[tuple[str, str], dict] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            key = (path.stem, str(record["id"]))
            assert key not in records, f"duplicate document {key}"
            records[key] = record
    return records


# --- planning, options and errors (no Ray) ----------------------------------------------------


def test_inputs_from_a_folder_or_a_glob(tmp_path: Path) -> None:
    write_corpus(tmp_path / "in")
    (tmp_path / "in" / "notes.md").write_text("ignored\n")
    names = [p.name for p in find_inputs(str(tmp_path / "in"))]
    assert names == ["part-0.jsonl", "part-1.jsonl", "part-2.jsonl", "plain.txt"]
    assert [p.name for p in find_inputs(str(tmp_path / "in" / "part-*.jsonl"))] == names[:3]
    with pytest.raises(MtbionerError, match="neither .jsonl nor .txt"):
        find_inputs(str(tmp_path / "in" / "*"))
    with pytest.raises(MtbionerError, match="no file matches"):
        find_inputs(str(tmp_path / "nothing-*.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MtbionerError, match="no .jsonl or .txt files"):
        find_inputs(str(tmp_path / "empty"))


def test_shards_need_distinct_stems_and_an_output_apart_from_the_input(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for path in (tmp_path / "a" / "x.jsonl", tmp_path / "b" / "x.txt"):
        path.write_text("{}\n")
    with pytest.raises(MtbionerError, match="would both write .*x.jsonl; rename one"):
        plan_shards([tmp_path / "a" / "x.jsonl", tmp_path / "b" / "x.txt"], tmp_path / "out")
    with pytest.raises(MtbionerError, match="would overwrite this input"):
        plan_shards([tmp_path / "a" / "x.jsonl"], tmp_path / "a")
    [shard] = plan_shards([tmp_path / "b" / "x.txt"], tmp_path / "out")
    assert shard.output == (tmp_path / "out" / "x.jsonl").resolve()
    assert shard.marker == (tmp_path / "out" / "_done" / "x.json").resolve()


def test_bad_options_fail_before_ray_starts(model_dir: Path, tmp_path: Path) -> None:
    write_corpus(tmp_path / "in")
    base = {"model": model_dir, "inputs": str(tmp_path / "in"), "output": tmp_path / "out"}
    for extra, message in [
        ({"types": ["Protein"]}, r"unknown entity types \['Protein'\]; this model knows"),
        ({"corpora": ["JNLPBA"]}, r"unknown corpora \['JNLPBA'\]"),
        ({"num_workers": 0}, "must be at least 1"),
        ({"min_score": 2.0}, "between 0 and 1"),
        ({"model": tmp_path}, "not an mtbioner model folder"),
        ({"model": Path("no-such-model")}, "no such model folder, and no shipped model of that name"),
        ({"output": tmp_path / "in" / "part-0.jsonl"}, "is a file; --output is the folder"),
    ]:
        with pytest.raises(MtbionerError, match=message):
            tag_corpus(CorpusJob(**{**base, **extra}))
    assert not (tmp_path / "out").exists()
    # a shipped model's name is taken as every other command takes it
    from mtbioner.runtime.shipped import resolve_model

    seen: list[Path] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scaling, "check_job", lambda job: seen.append(job.model) or 1 / 0)
        with pytest.raises(ZeroDivisionError):
            tag_corpus(CorpusJob(**{**base, "model": Path("default")}))
    assert seen == [resolve_model("default")]
    # the merged types (what tag-corpus writes by default) and the heads' own are both known, as in `tag`
    scaling.check_job(CorpusJob(**{**base, "types": ["Gene", "Chemical", "GENE"]}))


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MtbionerError, match=r"pip install 'mtbioner\[ray\]'"):
        scaling._import_ray()


def test_cli_reports_a_user_error_in_one_line(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    pattern = str(tmp_path / "none*.jsonl")
    monkeypatch.setattr(sys, "argv", ["mtbioner", "tag-corpus", str(model_dir), "-i", pattern, "-o", "out"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    message = f"error: {pattern}: no such folder, and no file matches it as a glob pattern"
    assert capsys.readouterr().err.strip().splitlines() == [message]


def test_cli_passes_the_answer_kind_to_the_workers(model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    command = importlib.import_module("mtbioner.cli.tag_corpus")  # the module: the package exports its function

    jobs: list[CorpusJob] = []
    monkeypatch.setattr(
        command, "run_corpus_job", lambda job: jobs.append(job) or scaling.CorpusReport(0, 0, 0, 0, 0, 0.0)
    )
    for flag, merged in (([], True), (["--per-corpus"], False)):
        result = CliRunner().invoke(app, ["tag-corpus", str(model_dir), "-i", str(tmp_path), "-o", "out", *flag])
        assert result.exit_code == 0, result.output
        assert jobs[-1].merge_types is merged and jobs[-1].tagging_options()["merge_types"] is merged


def test_settings_that_change_the_output_make_a_marker_stale(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("aspirin\n")
    [shard] = plan_shards([tmp_path / "a.txt"], tmp_path / "out")
    job = CorpusJob(tmp_path / "m", "", tmp_path / "out")
    shard.output.parent.mkdir()
    shard.output.write_text("{}\n")
    marker = {
        "input_file": scaling._fingerprint(shard.input),
        "settings": job.settings(),
        "output_bytes": 3,
        "documents": 1,
        "written": 1,
    }
    write_json(shard.marker, marker)
    assert scaling.read_marker(shard, job.settings()) == marker
    assert count_check([shard], job.settings()) == (1, 1, {})
    changes = (
        {"types": ["GENE"]},
        {"min_score": 0.5},
        {"flat": True},
        {"merge_types": False},
        {"model": tmp_path / "x"},
    )
    for changed in changes:
        assert scaling.read_marker(shard, CorpusJob(**{**job.__dict__, **changed}).settings()) is None
    assert scaling.read_marker(shard, {**job.settings(), "batch_size": 8}) is None
    shard.output.write_text("{}\n{}\n")  # a doubled or truncated output no longer matches its marker
    assert scaling.read_marker(shard, job.settings()) is None
    assert count_check([shard], job.settings()) == (0, 0, {"a.txt": "no finished output"})


# --- a local Ray run --------------------------------------------------------------------------------


class FailingWorker(ShardWorker):
    """Kills its own process the first time it starts ``part-1`` (a crash, an OOM kill), and
    raises the first time it starts ``part-2`` (a transient I/O error)."""

    def tag_shard(self, shard):  # type: ignore[no-untyped-def]
        flag = shard.output.parent.parent / f"failed-{shard.input.stem}"
        if shard.input.stem in ("part-1", "part-2") and not flag.exists():
            flag.write_text("once")
            if shard.input.stem == "part-1":
                os._exit(1)
            raise OSError("stale file handle")
        return super().tag_shard(shard)


def test_two_workers_give_exactly_the_entities_of_mtbioner_tag_despite_failures(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import ray  # noqa: F401  (a test dependency: a missing ray must fail, not skip)

    documents = write_corpus(tmp_path / "in")
    bad = tmp_path / "in" / "broken.jsonl"
    bad.write_text('{"id": 1, "text": "fine"}\n{"id": 2, "text": 3}\n', encoding="utf-8")
    monkeypatch.setattr(scaling, "ShardWorker", FailingWorker)
    job = CorpusJob(
        model=model_dir,
        inputs=str(tmp_path / "in"),
        output=tmp_path / "out",
        num_workers=2,
        chunk=32,
        batch_size=16,
        progress=False,
    )
    with caplog.at_level("WARNING", logger="mtbioner.apps.scaling"):
        report = tag_corpus(job)
    assert (tmp_path / "failed-part-1").exists() and (tmp_path / "failed-part-2").exists()
    assert "part-2.jsonl failed: OSError: stale file handle" in caplog.text
    assert "retrying 1 shards (attempt 2 of 3)" in caplog.text  # bad input is not retried
    assert report.failed == {"broken.jsonl": f'{bad.resolve()}:2: "text" must be a string, got int'}
    assert (report.shards, report.tagged, report.documents) == (5, 4, documents)
    assert report.documents_tagged == documents
    assert "FAILED broken.jsonl" in scaling.summary(report, job.output)
    assert not (tmp_path / "out" / "broken.jsonl").exists() and not list((tmp_path / "out").glob(".*.tmp"))

    ours = read_output(tmp_path / "out")
    runner = CliRunner()
    for shard in sorted((tmp_path / "in").glob("[!b]*")):
        args = [
            "tag",
            str(model_dir),
            "-i",
            str(shard),
            "-o",
            str(tmp_path / "tag" / f"{shard.stem}.jsonl"),
            "--chunk",
            "32",
            "--batch-size",
            "16",
            "--no-progress",
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert ours == read_output(tmp_path / "tag")
    assert sum(len(r["entities"]) for r in ours.values()) > documents  # a non-trivial comparison
    assert ours[("part-0", "p0-0")]["source"] == "gen"
    assert ("plain", "7") in ours and ("plain", "6") not in ours  # .txt ids are line numbers, as in `tag`

    # Without the broken shard, a rerun has nothing to do: no Ray, nothing rewritten.
    bad.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.json*")}
    again = tag_corpus(job)
    assert (again.tagged, again.skipped, again.documents, again.documents_tagged) == (0, 4, documents, 0)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.json*")} == stamps
    line = f"count check: {documents} documents read = {documents} written, each once, in 4 shards: OK"
    assert line in scaling.summary(again, job.output)


# --- killed midway, rerun ---------------------------------------------------------------------------


def _kill_tree(pid: int) -> None:
    """SIGKILL the command and every process it started (Ray's raylet, GCS and workers), by id."""
    import psutil

    try:
        parent = psutil.Process(pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in family:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)


def test_a_run_killed_midway_then_rerun_has_every_document_once(model_dir: Path, tmp_path: Path) -> None:
    import ray  # noqa: F401  (a test dependency: a missing ray must fail, not skip)

    documents = write_corpus(tmp_path / "in", sizes=(100,) * 8, text_docs=60)
    command = [
        sys.executable,
        "-m",
        "mtbioner",
        "tag-corpus",
        str(model_dir),
        "-i",
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "out"),
        "--num-workers",
        "2",
        "--chunk",
        "16",
        "--no-progress",
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = tmp_path / "out" / "_done"
    deadline = time.monotonic() + 300
    try:
        while not (done.is_dir() and any(done.glob("*.json"))):
            assert first.poll() is None, f"the run ended before it could be killed:\n{first.communicate()[0]}"
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.05)
    finally:
        _kill_tree(first.pid)
        first.communicate()
    finished = len(list(done.glob("*.json")))
    assert 1 <= finished < 9, "the kill should leave unfinished shards"

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = f"{finished} of 9 shards already done in {tmp_path / 'out'}; tagging the other {9 - finished}"
    assert resumed in second.stderr
    check = f"count check: {documents} documents read = {documents} written, each once, in 9 shards: OK"
    assert check in second.stderr
    records = read_output(tmp_path / "out")  # fails on a duplicate
    expected = {(f"part-{i}", f"p{i}-{n}") for i in range(8) for n in range(100)}
    expected |= {("plain", str(n)) for n in range(1, 61) if n != 6}
    assert set(records) == expected and len(records) == documents
    assert not list((tmp_path / "out").glob(".*.tmp"))
