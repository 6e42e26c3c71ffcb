"""The study runner (``mtbioner experiment run``) and the report generated from its results."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mtbioner.errors import MtbionerError
from mtbioner.learn.training import schedule_batches
from mtbioner.study.experiment import load_study, pretrain_command, run_study, train_command
from mtbioner.study.report import write_report
from mtbioner.study.report_full import report_spec
from mtbioner.study.report_full import write_report as write_full_report

REPO = Path(__file__).parent.parent


def _study(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "study.yaml"
    file.write_text(text, encoding="utf-8")
    return file


def test_study_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(MtbionerError, match="not found"):
        load_study(tmp_path / "missing.yaml")
    with pytest.raises(MtbionerError, match="not valid YAML") as bad:
        load_study(_study(tmp_path, "runs: [a\n"))
    # one line, with the place PyYAML marks (not its quoted source lines and carets)
    assert str(bad.value) == (
        f"{tmp_path / 'study.yaml'}:2:1: not valid YAML: while parsing a flow sequence; expected ',' or ']', "
        "but got '<stream end>'"
    )
    with pytest.raises(MtbionerError, match="'runs'"):
        load_study(_study(tmp_path, "budget: {epochs: 1}\n"))
    with pytest.raises(MtbionerError, match="run 'a' needs a 'corpora' list"):
        load_study(_study(tmp_path, "runs:\n  a: {head: crf}\n"))
    with pytest.raises(MtbionerError, match="unknown option.*epoch\\b"):
        load_study(_study(tmp_path, "runs:\n  a: {corpora: [X], epoch: 3}\n"))
    with pytest.raises(MtbionerError, match="run 'a' needs a 'corpora' list"):  # not split into letters
        load_study(_study(tmp_path, "runs:\n  a: {corpora: BC2GM}\n"))
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"runs:\n  a: {corpora: [X], description: caf\xe9}\n")
    with pytest.raises(MtbionerError, match=r"latin1\.yaml:2: not UTF-8 \(byte 0xe9\)"):
        load_study(latin1)


def test_run_options_override_the_budget(tmp_path: Path) -> None:
    study = load_study(
        _study(
            tmp_path,
            "data_dir: data\nmodels: m\nbudget: {epochs: 3, limit: 10, train_splits: [train, devel]}\n"
            "runs:\n  a: {corpora: [X, Y], epochs: 1, freeze_encoder: true, schedule: sequential}\n",
        )
    )
    args = train_command(study, study.runs[0])
    assert args[:3] == ["train", "X", "Y"]
    assert args[args.index("--data-dir") + 1] == str(tmp_path / "data")
    assert args[args.index("--output") + 1] == str(tmp_path / "m" / "a")
    assert args[args.index("--epochs") + 1] == "1"
    assert args[args.index("--train-splits") + 1] == "train,devel"
    assert "--freeze-encoder" in args and args[args.index("--schedule") + 1] == "sequential"


def test_sampling_temperature_rebalances_corpora() -> None:
    lengths = {"big": [5] * 320, "small": [5] * 32}  # 10 and 1 batches of 32
    proportional = schedule_batches(lengths, 32, "mixed", seed=1, epoch=0)
    flat = schedule_batches(lengths, 32, "mixed", seed=1, epoch=0, temperature=1e6)
    count = lambda batches, name: sum(1 for corpus, _ in batches if corpus == name)  # noqa: E731
    assert (count(proportional, "big"), count(proportional, "small")) == (10, 1)
    assert len(flat) == 11 and count(flat, "small") in (5, 6)  # about half the batches each
    small = [tuple(sorted(b)) for corpus, b in flat if corpus == "small"]
    assert set(small) == {tuple(range(32))}  # the one small batch, repeated


def test_tiny_study_runs_resumes_and_reports(tmp_path: Path, tiny_encoder: Path, toy_dir: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(toy_dir, data)
    file = _study(
        tmp_path,
        f"data_dir: data\nresults: results\nmodels: runs\n"
        f"budget: {{epochs: 2, encoder: {tiny_encoder}, lr: 3.0e-3, batch_size: 4, max_length: 32}}\n"
        "runs:\n"
        "  both: {corpora: [toy_gene, toy_chem]}\n"
        "  curve: {corpora: [toy_gene], evaluate: false}\n",
    )
    study = load_study(file)
    written = run_study(study)
    assert [p.name for p in written] == ["both.json", "curve.json"]
    both = json.loads((tmp_path / "results" / "both.json").read_text())
    assert set(both["scores"]) == {"toy_gene", "toy_chem"}
    assert both["scores"]["toy_gene"]["sentences"] > 0 and both["scores"]["toy_gene"]["seconds"] > 0
    assert both["train"]["peak_rss_mb"] > 50 and both["evaluate"]["peak_rss_mb"] > 50
    assert both["commands"]["train"].startswith("mtbioner train toy_gene toy_chem")
    assert [e["epoch"] for e in both["log"]] == [1, 2]
    assert len(both["load_average"]["start"]) == 3 and len(both["load_average"]["end"]) == 3
    curve = json.loads((tmp_path / "results" / "curve.json").read_text())
    assert "scores" not in curve and set(curve["log"][-1]["devel"]) == {"toy_gene"}
    assert run_study(study) == []  # finished runs are skipped
    with pytest.raises(MtbionerError, match="no run named nope"):
        run_study(study, ["nope"])

    report = write_report(study, tmp_path / "reports" / "r.md")
    text = report.read_text()
    assert "Runs finished: 2 of 2" in text and "mtbioner train toy_gene toy_chem" in text
    start, end = both["load_average"]["start"][0], both["load_average"]["end"][0]
    assert f"| {start:.1f} / {end:.1f} |" in text  # the cost table shows each run's load


def _record(run: str, f1: dict[str, float], log: list | None = None) -> dict:
    scores = {
        c: {"precision": v, "recall": v, "f1": v, "sentences": 100, "seconds": 2.0, "types": {}} for c, v in f1.items()
    }
    return {
        "run": run,
        "description": run,
        "options": {},
        "commands": {"train": f"mtbioner train {run}"},
        "commit": "abc",
        "hardware": {"cpu": "test cpu", "cores": 2, "gpu": None, "torch": "x"},
        "train": {"seconds": 10.0, "peak_rss_mb": 900, "windows_per_s": 30.0},
        "evaluate": {"seconds": 5.0, "peak_rss_mb": 800},
        "model": {"size_mb": 90.0, "training_sentences": dict.fromkeys(f1, 100)},
        "log": log or [],
        "scores": scores,
    }


def test_report_tables_and_plots_come_from_the_results(tmp_path: Path) -> None:
    shutil.copy(REPO / "experiments" / "paper.yaml", tmp_path / "paper.yaml")
    corpora = ["BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA"]
    runs = "\n".join(f"  single-{c}: {{corpora: [{c}]}}" for c in corpora)
    file = _study(
        tmp_path,
        f"results: results\nruns:\n{runs}\n  mt4: {{corpora: [{', '.join(corpora)}]}}\n"
        "  curve-mixed: {corpora: [BC2GM]}\n  mt3: {corpora: [BC2GM]}\n",
    )
    results = tmp_path / "results"
    results.mkdir()
    for i, c in enumerate(corpora):
        (results / f"single-{c}.json").write_text(json.dumps(_record(f"single-{c}", {c: 70.0 + i})))
    mt4 = _record("mt4", {"BC2GM": 69.5, "BC5CDR": 75.25, "NCBI-disease": 72.0, "JNLPBA": 73.0})
    mt4["hardware"].update(isa="avx512_vnni", gpu="big gpu")
    (results / "mt4.json").write_text(json.dumps(mt4))
    log = [{"epoch": e, "devel": {"BC2GM": {"f1": 50.0 + e}}, "mean_devel_f1": 50.0 + e} for e in (1, 2)]
    (results / "curve-mixed.json").write_text(json.dumps(_record("curve-mixed", {}, log)))
    text = write_report(load_study(file), tmp_path / "out" / "report.md").read_text()

    assert "Runs finished: 6 of 7; **not yet run: mt3**" in text
    assert "| BC2GM | 83.01 | 81.55 | 79.19 | 70.00 | 70.00 | **70.00** |" in text  # paper beside ours
    assert "| BC5CDR | 71.00 | – | 75.25 (+4.25) |" in text
    assert "worse** than single-task here for: mt4 on BC2GM (-0.50 F1)" in text
    assert "| size on disk (MB) | 360.0 | 90.0 |" in text
    assert "- `mt4`: 100 sentences in 2.0 s (50 sentences/s)" in text
    assert "| 90.0 | – | test cpu (avx512_vnni), 2 cores, big gpu |" in text  # each run's host beside its times
    assert "| 90.0 | – | test cpu, 2 cores |" in text  # a record from before the instruction set was kept
    assert (
        "- Hardware: 2 hosts as recorded: test cpu, 2 cores (5 runs); test cpu (avx512_vnni), 2 cores, big gpu (mt4)"
        in text
    )
    assert "PROVENANCE.md" in text
    for png in ("f1.png", "learning-curves.png"):
        assert (tmp_path / "out" / "figures" / png).stat().st_size > 5000
        assert f"(figures/{png})" in text


def test_tiny_full_study_stores_predictions_and_reports_intervals(
    tmp_path: Path, tiny_encoder: Path, toy_dir: Path
) -> None:
    from typer.testing import CliRunner

    from mtbioner.cli import app
    from mtbioner.runtime.evaluation import score
    from mtbioner.study.bootstrap import read_predictions

    shutil.copytree(toy_dir, tmp_path / "data")
    file = _study(
        tmp_path,
        "data_dir: data\nresults: results\nmodels: runs\n"
        f"budget: {{epochs: 2, limit: 20, encoder: {tiny_encoder}, lr: 5.0e-3, batch_size: 4, max_length: 32}}\n"
        "runs:\n"
        "  mt: {corpora: [toy_gene, toy_chem]}\n"
        "  single-toy_gene: {corpora: [toy_gene], evaluate_split: test}\n"
        "report:\n"
        "  kind: full\n"
        "  corpora: [toy_gene, toy_chem]\n"
        "  bootstrap: {resamples: 200, seed: 1}\n"
        "  reference: mt\n"
        "  tables: [{title: toy, columns: {single-task: 'single-{corpus}', MT: mt}}]\n"
        "  comparisons: [{label: MT minus single, a: mt, b: 'single-{corpus}'}]\n",
    )
    study = load_study(file)
    assert [p.name for p in run_study(study)] == ["mt.json", "single-toy_gene.json"]
    results = tmp_path / "results"
    mt = json.loads((results / "mt.json").read_text())
    assert "--predictions" in mt["commands"]["evaluate"]
    assert mt["predictions"] == {c: f"mt.predictions/{c}.json.gz" for c in ("toy_gene", "toy_chem")}
    # 20 training sentences each, less those that are test sentences (2 and 4: leakage.py): 18 / 4 + 16 / 4 -> 5 + 4
    assert mt["train"]["steps_per_epoch"] == 9 and mt["train"]["total_steps"] == 18
    assert mt["train"]["mixed_precision"] == "no"  # what the trainer ran in, from its training.json
    for corpus in ("toy_gene", "toy_chem"):
        gold, predicted = read_predictions(results / mt["predictions"][corpus])
        assert len(gold) == mt["scores"][corpus]["sentences"]  # the whole test split, one row per sentence
        assert score(gold, predicted)[0].f1 == pytest.approx(mt["scores"][corpus]["f1"], abs=1e-3)

    report = tmp_path / "reports" / "full.md"
    result = CliRunner().invoke(app, ["experiment", "report", str(file), "--output", str(report)])
    assert result.exit_code == 0, result.output
    text = report.read_text()
    single = json.loads((results / "single-toy_gene.json").read_text())["scores"]["toy_gene"]["f1"]
    row = re.search(
        r"\| MT minus single \| toy_gene \| `mt` \| `single-toy_gene` \| ([\d.]+) \| ([\d.]+) \| ([-+][\d.]+) "
        r"\| \[([-+][\d.]+), ([-+][\d.]+)\] \| \*\*(win|loss|tie)\*\* \| (\d+) \|",
        text,
    )
    assert row, text
    f1_a, f1_b, diff, low, high = map(float, row.groups()[:5])
    assert (f1_a, f1_b) == (round(mt["scores"]["toy_gene"]["f1"], 2), round(single, 2))
    assert low <= diff <= high and row.group(6) == ("win" if low > 0 else "loss" if high < 0 else "tie")
    assert low < high and f1_a > 0 and f1_b > 0  # the toy models learn something: a real interval
    assert re.search(r"\| toy_chem \| n/a \| \*\*[\d.]+\*\* \[[\d.]+, [\d.]+\] \|", text)  # F1 with its interval
    assert "**toy_gene**: MT minus single: `mt` " in text
    shown = row.group(6) if row.group(6) == "tie" else f"**{row.group(6)}**"
    glance = f"| MT minus single | {row.group(3)} [{row.group(4)}, {row.group(5)}] {shown} | n/a |"  # toy_chem: no ST
    assert text.index("## At a glance") < text.index("## Test F1") and glance in text
    assert f"| `single-toy_gene` | toy_gene | {tiny_encoder.name} | 18 | 2 | 5 | 10 | 0.556 |" in text  # 5 of mt's 9
    assert (tmp_path / "reports" / "figures" / "full-differences.png").stat().st_size > 5000
    assert "Runs finished: 2 of 2." in text and "without stored predictions" not in text
    hardware = re.search(r"- Hardware: ([^;]+); torch ", text)
    assert hardware and "hosts:" not in hardware.group(1) and " cores" in hardware.group(1)  # one host: no run list

    cli = CliRunner().invoke(app, ["experiment", "compare", str(file), "mt", "single-toy_gene"])
    assert cli.exit_code == 0, cli.output
    assert f"difference {float(row.group(3)):+.2f}, 95% CI [{row.group(4)}, {row.group(5)}]" in cli.output

    # results from before predictions were kept: reported, without intervals, and said so
    shutil.rmtree(results / "single-toy_gene.predictions")
    text = write_full_report(load_study(file), report).read_text()
    assert "Results without stored predictions, so without intervals: single-toy_gene" in text
    assert "| – | no interval: no stored predictions for `single-toy_gene` |" in text
    assert re.search(r"\| MT minus single \| [-+][\d.]+ \(no interval\) \| n/a \|", text)
    (results / "mt.json").unlink()
    text = write_full_report(load_study(file), report).read_text()
    assert "not yet run: mt**" in text and "| missing: `mt` |" in text and "| toy_gene | missing |" not in text
    assert "| MT minus single | not run yet | n/a |" in text


def test_report_section_and_encoder_are_checked(tmp_path: Path) -> None:
    with pytest.raises(MtbionerError, match="'report' must be one of default, full"):
        load_study(_study(tmp_path, "report: fancy\nruns:\n  a: {corpora: [X]}\n"))
    text = "report: {kind: full, comparisons: [{a: a, b: 'b-{corpus}'}]}\nruns:\n  a: {corpora: [X]}\n"
    study = load_study(_study(tmp_path, text))
    with pytest.raises(MtbionerError, match="names 'b-\\{corpus\\}', which is no run of the study"):
        report_spec(study)

    encoder = tmp_path / "enc"
    (encoder / "checkpoint").mkdir(parents=True)
    (encoder / "config.json").write_text("{}")
    study = load_study(_study(tmp_path, "models: m\nruns:\n  a: {corpora: [X], encoder: enc}\n"))
    args = train_command(study, study.runs[0])
    assert args[args.index("--encoder") + 1] == str(encoder)  # relative to the study file
    with pytest.raises(MtbionerError, match="still being pre-trained"):
        run_study(study)
    assert not (tmp_path / "m" / "a").exists()


def test_full_study_file_matches_the_paper_and_equal_update_epochs(tmp_path: Path) -> None:
    """The equal-updates controls of experiments/full.yaml get mt4's encoder updates to within 2%."""
    from mtbioner.data.corpus import read_corpus

    from .conftest import shared_data_dir

    study = load_study(REPO / "experiments" / "full.yaml")
    assert study.report["kind"] == "full" and report_spec(study).reference == "mt4"
    budget = study.budget
    assert budget == {
        "epochs": 8,
        "train_splits": ["train", "devel"],
        "lr": 1.0e-4,
        "warmup": 0.1,
        "weight_decay": 0.01,
        "batch_size": 32,
        "max_length": 128,
        "seed": 42,
    }
    runs = {r.name: r for r in study.runs}
    corpora = ["BC2GM", "BC5CDR", "NCBI-disease", "JNLPBA"]
    assert runs["mt4"].corpora == corpora and runs["mt3"].corpora == corpora[:3] and study.split == "test"
    batches = {}
    for corpus in corpora:
        read = read_corpus(shared_data_dir() / corpus, splits=["train", "devel"])
        batches[corpus] = math.ceil(sum(len(read.sentences(s)) for s in ("train", "devel")) / budget["batch_size"])
    mt4_updates = budget["epochs"] * sum(batches.values())
    for corpus in corpora:
        control = runs[f"equal-{corpus}"]
        assert control.corpora == [corpus] and set(control.options) == {"epochs"}
        assert control.options["epochs"] == round(mt4_updates / batches[corpus])
        assert abs(control.options["epochs"] * batches[corpus] / mt4_updates - 1) < 0.02
        assert runs[f"single-{corpus}"].options == {}
        assert runs[f"tapt-single-{corpus}"].options == {"encoder": "../runs/enc-tapt"}
    # the runner makes the adapted encoder with the command docs/training.md measured (train text only)
    recipe = study.encoders[REPO / "runs" / "enc-tapt"]
    assert recipe.sources == corpora and recipe.options == {"splits": ["train"]}


def test_a_finished_folder_stands_in_for_a_run_only_with_the_runs_settings(
    tmp_path: Path, tiny_encoder: Path, toy_dir: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(toy_dir, data)
    budget = f"budget: {{epochs: 1, encoder: {tiny_encoder}, lr: 3.0e-3, batch_size: 4, max_length: 32}}\n"
    file = _study(
        tmp_path, f"data_dir: data\nresults: results\nmodels: runs\n{budget}runs:\n  a: {{corpora: [toy_gene]}}\n"
    )
    study = load_study(file)
    elsewhere = tmp_path / "elsewhere"
    args = train_command(study, study.runs[0])
    args[args.index("--output") + 1] = str(elsewhere)
    subprocess.run([sys.executable, "-m", "mtbioner", *args], check=True, capture_output=True)
    other = load_study(_study(tmp_path, file.read_text().replace("lr: 3.0e-3", "lr: 1.0e-3")))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a").symlink_to(elsewhere)
    with pytest.raises(MtbionerError, match=r"other settings than run 'a': lr: 0\.003 \(the run wants 0\.001\)"):
        run_study(other)
    assert not (tmp_path / "results" / "a.json").exists()
    # a setting the run leaves at mtbioner train's default must be the default in the folder too
    info_file = elsewhere / "training.json"
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({**info, "config": {**info["config"], "head": "crf"}}))
    with pytest.raises(MtbionerError, match=r"other settings than run 'a': head: 'crf' \(the run wants 'linear'\)"):
        run_study(study)
    info_file.write_text(json.dumps(info))
    [written] = run_study(study)  # the same settings: scored, not trained again
    record = json.loads(written.read_text())
    assert record["train"]["resumed"] == "trained before this invocation" and "toy_gene" in record["scores"]


def test_an_existing_export_is_scored_with_the_updates_train_would_make(
    tmp_path: Path, tiny_encoder: Path, toy_dir: Path
) -> None:
    """``model:`` names an existing model (as experiments/full.yaml's mt4 named the shipped one): checked
    against the command its model_report.json records, scored, not trained; its encoder updates are
    counted as ``mtbioner train`` counts them."""
    data = tmp_path / "data"
    shutil.copytree(toy_dir, data)
    budget = f"budget: {{epochs: 2, encoder: {tiny_encoder}, lr: 3.0e-3, batch_size: 4, max_length: 32}}\n"
    file = _study(
        tmp_path,
        f"data_dir: data\nresults: results\nmodels: runs\n{budget}runs:\n"
        "  a: {corpora: [toy_gene, toy_chem], model: shipped-like}\n",
    )
    study = load_study(file)
    trained = tmp_path / "trained"
    args = train_command(study, study.runs[0])
    args[args.index("--output") + 1] = str(trained)
    subprocess.run([sys.executable, "-m", "mtbioner", *args], check=True, capture_output=True)
    export = tmp_path / "shipped-like"
    subprocess.run(
        [sys.executable, "-m", "mtbioner", "export", str(trained), str(export), "--quantize", "int8"],
        check=True,
        capture_output=True,
    )
    with pytest.raises(MtbionerError, match="records no `mtbioner train` command"):
        run_study(study)
    command = "mtbioner " + " ".join(args)
    (export / "model_report.json").write_text(json.dumps({"commands": [command.replace("lr 0.003", "lr 0.001")]}))
    with pytest.raises(MtbionerError, match=r"other settings than run 'a': lr: 0\.001 \(the run wants 0\.003\)"):
        run_study(study)
    (export / "model_report.json").write_text(json.dumps({"commands": [command + " --head toy_chem=crf"]}))
    with pytest.raises(MtbionerError, match=r"heads: \{'toy_chem': 'crf'\} \(the run wants \{\}\)"):
        run_study(study)  # a per-corpus head the run never named
    (export / "model_report.json").write_text(json.dumps({"commands": [command]}))
    [written] = run_study(study)
    record = json.loads(written.read_text())
    training = json.loads((trained / "training.json").read_text())
    assert record["train"]["total_steps"] == training["total_steps"] > 0
    assert record["train"]["steps_per_epoch"] == training["steps_per_epoch"]
    assert record["model"]["training_sentences"] == training["training_sentences"]
    assert record["model"]["scored_as"] == "ONNX int8" and record["commands"]["train"] == command
    assert set(record["scores"]) == {"toy_gene", "toy_chem"} and not (tmp_path / "runs" / "a").exists()
    assert (tmp_path / "results" / "a.predictions" / "toy_gene.json.gz").is_file()


def test_encoder_recipes_are_checked_when_the_study_is_read(tmp_path: Path) -> None:
    runs = "runs:\n  a: {corpora: [X], encoder: enc}\n"
    with pytest.raises(MtbionerError, match="'encoders' must map encoder folders"):
        load_study(_study(tmp_path, "encoders: [enc]\n" + runs))
    with pytest.raises(MtbionerError, match="encoder 'enc' needs a 'sources' list"):
        load_study(_study(tmp_path, "encoders: {enc: {epochs: 1}}\n" + runs))
    with pytest.raises(MtbionerError, match="encoder 'enc': unknown option\\(s\\) epoch; known: batch_size"):
        load_study(_study(tmp_path, "encoders: {enc: {sources: [X], epoch: 1}}\n" + runs))
    study = load_study(
        _study(tmp_path, "encoders: {enc: {sources: [X, notes.txt], splits: [train], seed: 7}}\n" + runs)
    )
    recipe = study.encoders[tmp_path / "enc"]  # keyed by folder, relative to the study file like a run's encoder
    assert pretrain_command(recipe, study.data_dir) == [
        *("pretrain", "X", "notes.txt", "--data-dir", str(study.data_dir), "--output", str(tmp_path / "enc")),
        *("--splits", "train", "--seed", "7", "--no-progress"),
    ]
    study = load_study(_study(tmp_path, "encoders: {enc: {sources: [X], lr: -1}}\n" + runs))
    with pytest.raises(MtbionerError, match="encoder .*enc: lr must be positive"):
        run_study(study)  # checked before anything is trained
    assert not (tmp_path / "enc").exists() and not (tmp_path / "runs").exists()  # nothing made


def test_a_study_pretrains_its_declared_encoder_resumes_it_and_checks_it(
    tmp_path: Path, tiny_encoder: Path, toy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner makes a declared encoder folder before the first run on it, resumes an interrupted
    one, reuses a finished one, and refuses one made otherwise."""
    from mtbioner.learn import pretraining
    from mtbioner.study.experiment import (
        _prepare_encoder,  # what a run does first; a training child each costs seconds
    )

    data = tmp_path / "data"
    shutil.copytree(toy_dir, data)
    recipe = f"{{sources: [toy_gene], encoder: {tiny_encoder}, epochs: 1, heldout: 2, batch_size: 4, max_length: 32"
    text = (
        "data_dir: data\nresults: results\nmodels: runs\n"
        "budget: {epochs: 1, limit: 20, lr: 3.0e-3, batch_size: 4, max_length: 32}\n"
        f"encoders:\n  enc: {recipe}}}\n  part: {recipe}, save_every: 1}}\n"
        "runs:\n"
        "  a: {corpora: [toy_gene], encoder: enc, evaluate: false}\n"
        "  c: {corpora: [toy_gene], encoder: part, evaluate: false}\n"
    )
    study = load_study(_study(tmp_path, text))

    run_study(study, ["a"])  # no folder yet: pre-trained from scratch, then trained on
    info = json.loads((tmp_path / "enc" / "pretraining.json").read_text())
    assert info["finished"] and info["inputs"]["sources"] == ["toy_gene"] and info["config"]["epochs"] == 1
    record = json.loads((tmp_path / "results" / "a.json").read_text())
    assert list(record["commands"]) == ["pretrain", "train"]
    assert record["commands"]["pretrain"].startswith("mtbioner pretrain toy_gene --data-dir ")
    assert f"--encoder {tmp_path / 'enc'} " in record["commands"]["train"]
    stamp = (tmp_path / "enc" / "pretraining.json").stat().st_mtime_ns
    log = tmp_path / "runs" / "enc.pretrain.log"
    _prepare_encoder(study, study.encoders[tmp_path / "enc"], log)  # finished and the recipe's: used as it is
    assert (tmp_path / "enc" / "pretraining.json").stat().st_mtime_ns == stamp
    assert (tmp_path / "runs" / "enc.pretrain.log").read_text().count("$ mtbioner pretrain") == 1

    # an interrupted pre-training (as the command line records it) is resumed, not started again
    texts, counts = pretraining.gather_texts(["toy_gene"], data, ["train", "devel"])
    config = pretraining.PretrainConfig(
        encoder=str(tiny_encoder), epochs=1, heldout=2, batch_size=4, max_length=32, save_every=1
    )
    inputs = {"sources": ["toy_gene"], "splits": ["train", "devel"], "limit": None, "data_dir": str(data)}
    real_loss, calls = pretraining.masked_lm_loss, []

    def crash_on_the_fourth_step(model, batch):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_loss(model, batch)

    monkeypatch.setattr(pretraining, "masked_lm_loss", crash_on_the_fourth_step)
    with pytest.raises(KeyboardInterrupt):
        pretraining.pretrain(texts, tmp_path / "part", config, progress=False, sources=counts, inputs=inputs)
    assert (tmp_path / "part" / "checkpoint").is_dir()
    _prepare_encoder(study, study.encoders[tmp_path / "part"], tmp_path / "runs" / "part.pretrain.log")
    assert (
        "pretrain --output " + str(tmp_path / "part") + " --resume"
        in (tmp_path / "runs" / "part.pretrain.log").read_text()
    )
    assert json.loads((tmp_path / "part" / "pretraining.json").read_text())["finished"]
    assert not (tmp_path / "part" / "checkpoint").exists()

    # a folder from other settings, or not from `mtbioner pretrain` at all, stops the study before training
    changed = text.replace("epochs: 1, heldout", "epochs: 2, heldout", 1).replace("  a: {", "  d: {")
    with pytest.raises(
        MtbionerError, match="pre-trained with other settings than its recipe: epochs: 1 \\(the recipe wants 2\\)"
    ):
        run_study(load_study(_study(tmp_path, changed)), ["d"])
    shutil.copytree(tiny_encoder, tmp_path / "plain")
    plain = (
        text.replace("  part: ", "  plain: ").replace("encoder: part", "encoder: plain").replace("  c: {", "  e: {")
    )
    with pytest.raises(MtbionerError, match="plain holds no pretraining.json"):
        run_study(load_study(_study(tmp_path, plain)), ["e"])
    assert not (tmp_path / "runs" / "d").exists() and not (tmp_path / "runs" / "e").exists()


def test_a_recipe_without_encoder_matches_the_default_encoder_folder_pretrain_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mtbioner pretrain`` records the folder it loaded, so a recipe naming no encoder must accept the
    default encoder's folder (a finished folder was refused once the study came back to it) and nothing else."""
    from mtbioner.model import model_config
    from mtbioner.study.experiment_encoders import recipe_mismatch, settings

    default = tmp_path / "site-packages" / "minilm"
    default.mkdir(parents=True)
    monkeypatch.setattr(model_config, "default_encoder", lambda: str(default))
    runs = "runs:\n  a: {corpora: [X], encoder: enc}\n"
    recipe = load_study(_study(tmp_path, "encoders: {enc: {sources: [X], splits: [train]}}\n" + runs)).encoders[
        tmp_path / "enc"
    ]
    inputs = {"sources": ["/data/X"], "splits": ["train"], "limit": None}
    recorded = {**settings(recipe.options), "encoder": str(default / ".." / "minilm")}
    assert recipe_mismatch(recipe, {"config": recorded, "inputs": inputs}) == []
    other = {**recorded, "encoder": str(tmp_path / "biobert")}
    assert recipe_mismatch(recipe, {"config": other, "inputs": inputs}) == [
        f"encoder: {str(tmp_path / 'biobert')!r} (the recipe wants None)"
    ]


def _glance_table(text: str) -> str:
    start = text.index("| A − B |")
    return text[start : text.index("\n\n", start)]


def test_readme_study_table_is_the_full_scale_reports() -> None:
    """The README copies the report's at-a-glance table by hand; a stale copy fails here."""
    report = (REPO / "reports" / "full-scale.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert _glance_table(readme) == _glance_table(report)
