"""Tag a corpus of many shards on Ray Data: one output shard per input shard, resumable.

``mtbioner tag-corpus`` runs the same :class:`~mtbioner.runtime.tagging.Tagger` as ``mtbioner tag`` in
a pool of Ray actors (the model loaded once per actor), locally or on an existing cluster.

* A *shard* is one ``.jsonl`` or ``.txt`` input file (:func:`mtbioner.data.formats.read_documents`);
  it becomes ``OUT/<stem>.jsonl`` with the same records plus ``"entities"``, in input order.
* Shards are the unit of work, of atomic output and of retry. A worker writes the output
  through a temporary file and a rename, then a marker ``OUT/_done/<stem>.json`` with the
  document count, so a killed run leaves whole shards or nothing, and a rerun skips shards
  whose marker matches the input file and the tagging settings.
* A shard whose input is bad (invalid JSON, no text) fails at once with the reader's message;
  any other failure (a crashed or killed worker, an I/O error) is retried up to ``retries``
  times. Failed shards are listed at the end and the command exits non-zero.
* At the end every shard's marker is checked against its output file (document count and
  size), so that no document is lost or duplicated; the totals are printed.

Ray is the optional extra ``mtbioner[ray]`` and is imported only when a run starts. On a
cluster, every node needs mtbioner installed and must see the model, input and output
folders at the same paths (a shared file system).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..constants import INFERENCE_BATCH_SIZE
from ..errors import MtbionerError
from ..fileio import write_json

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".txt")
DONE_DIR = "_done"
_OBJECT_STORE_BYTES = 256 * 2**20  # only counts and paths travel through it


@dataclass
class CorpusJob:
    """What to tag, where to write it, and how many workers to use.

    Args:
        model: Model folder (torch or exported ONNX), visible to every worker.
        inputs: A folder (its ``*.jsonl`` and ``*.txt`` files) or a glob pattern.
        output: Folder for ``<stem>.jsonl`` shards and their ``_done`` markers.
        address: Ray cluster address (``auto``, ``HOST:PORT``, ``ray://HOST:10001``); ``None``
            starts a local Ray instance for this run.
        num_workers: Actors, each holding one copy of the model.
        cpus_per_worker: CPUs reserved by each actor; also its torch thread count, so that
            workers do not oversubscribe the cores.
        gpus_per_worker: GPUs reserved by each actor (a torch model is moved to the GPU).
        batch_size: Windows per forward pass.
        chunk: Documents tagged together inside a shard (sorted by length within a chunk).
        retries: Extra attempts for a shard whose worker failed for a reason other than bad input.
        types, corpora, min_score, flat, merge_types: As for :meth:`mtbioner.runtime.tagging.Tagger.tag_batch`
            (by default the merged answer, as ``mtbioner tag`` gives).
        progress: Show shards done and documents/s while running.
    """

    model: Path
    inputs: str
    output: Path
    address: str | None = None
    num_workers: int = 1
    cpus_per_worker: int = 1
    gpus_per_worker: float = 0.0
    batch_size: int = INFERENCE_BATCH_SIZE
    chunk: int = 256
    retries: int = 2
    types: list[str] = field(default_factory=list)
    corpora: list[str] = field(default_factory=list)
    min_score: float = 0.0
    flat: bool = False
    merge_types: bool = True
    progress: bool = True

    def tagging_options(self) -> dict[str, Any]:
        return {
            "types": self.types or None,
            "corpora": self.corpora or None,
            "min_score": self.min_score,
            "flat": self.flat,
            "merge_types": self.merge_types,
        }

    def settings(self) -> dict[str, Any]:
        """What decides the output of a shard; a marker written under other settings is stale."""
        return {
            "model": str(self.model.resolve()),
            "types": sorted(self.types),
            "corpora": sorted(self.corpora),
            "min_score": self.min_score,
            "flat": self.flat,
            "merge_types": self.merge_types,
        }


@dataclass(frozen=True)
class Shard:
    """One input file and where its output and marker go (absolute paths, sent to workers)."""

    input: Path
    output: Path
    marker: Path

    @property
    def name(self) -> str:
        return self.input.name


@dataclass
class CorpusReport:
    """Outcome of a run; ``failed`` maps an input file name to its last error."""

    shards: int
    skipped: int
    tagged: int
    documents: int
    documents_tagged: int
    seconds: float
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def docs_per_second(self) -> float:
        return self.documents_tagged / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------- planning (no Ray needed)


def find_inputs(spec: str) -> list[Path]:
    """Input shards of a folder (its ``.jsonl``/``.txt`` files) or a glob, sorted by path."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise MtbionerError(f"{spec}: no .jsonl or .txt files in this folder")
        return files
    files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise MtbionerError(f"{spec}: no such folder, and no file matches it as a glob pattern")
    other = [str(p) for p in files if p.suffix.lower() not in SUFFIXES]
    if other:
        raise MtbionerError(f"{spec}: matches files that are neither .jsonl nor .txt: {other[:3]}")
    return files


def plan_shards(inputs: Iterable[Path], output: Path) -> list[Shard]:
    """One output per input, named by the input's stem; two inputs may not share a stem."""
    output = output.resolve()
    shards: dict[str, Shard] = {}
    for path in inputs:
        path = path.resolve()
        stem = path.stem
        if stem in shards:
            raise MtbionerError(
                f"{shards[stem].input} and {path} would both write {output / (stem + '.jsonl')}; rename one"
            )
        target = output / f"{stem}.jsonl"
        if target == path:
            raise MtbionerError(f"{path}: --output would overwrite this input; choose another folder")
        shards[stem] = Shard(path, target, output / DONE_DIR / f"{stem}.json")
    return list(shards.values())


def _fingerprint(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def read_marker(shard: Shard, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The shard's marker if it is current: same input file, same settings, output file intact."""
    try:
        marker = json.loads(shard.marker.read_text(encoding="utf-8"))
        current = (
            marker.get("input_file") == _fingerprint(shard.input)
            and marker.get("settings") == settings
            and marker.get("output_bytes") == shard.output.stat().st_size
        )
    except (OSError, ValueError, AttributeError):
        return None
    return marker if current else None


def remove_stale_temporaries(output: Path) -> int:
    """Delete the temporary files a killed run left behind (``.<name>.<random>.tmp``)."""
    removed = 0
    for folder in (output, output / DONE_DIR):
        for tmp in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
    return removed


def count_check(shards: Iterable[Shard], settings: dict[str, Any]) -> tuple[int, int, dict[str, str]]:
    """Documents read and written over all finished shards, and the shards that are not in order.

    Workers count the documents they read and, after the rename, the lines of the file they
    wrote; here every shard needs a current marker whose counts agree and whose size matches
    the output file, so that a lost, truncated or doubled output is caught.
    """
    documents_in = documents_out = 0
    problems = {}
    for shard in shards:
        marker = read_marker(shard, settings)
        if marker is None:
            problems[shard.name] = "no finished output"
            continue
        documents_in += marker["documents"]
        documents_out += marker["written"]
        if marker["documents"] != marker["written"]:
            problems[shard.name] = f"{marker['documents']} documents read but {marker['written']} written"
    return documents_in, documents_out, problems


# ---------------------------------------------------------------- work done inside Ray actors


class ShardWorker:
    """Ray Data callable class: loads the model once, then tags whole shards, one per row.

    Bad input (:class:`MtbionerError`) and other exceptions come back in the ``error`` column
    instead of failing the dataset, so that one shard never stops the others and the driver
    decides what to retry. A worker process that dies is restarted by Ray, its shard retried.
    """

    def __init__(
        self,
        model: str,
        batch_size: int,
        chunk: int,
        threads: int,
        use_gpu: bool,
        options: dict[str, Any],
        settings: dict[str, Any],
        counter: Any = None,
    ) -> None:
        from ..quiet import quiet_libraries
        from ..runtime.loading import set_backend_threads
        from ..runtime.tagging import Tagger

        quiet_libraries()
        set_backend_threads(threads, model)  # an exported model: ONNX Runtime's threads, and no torch
        self.tagger = Tagger.load(model, batch_size=batch_size)
        if use_gpu and hasattr(self.tagger.backend, "to"):
            import torch

            if torch.cuda.is_available():
                self.tagger.backend.to("cuda")
        self.chunk, self.options, self.settings, self.counter = chunk, options, settings, counter

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"input": [], "documents": [], "error": [], "bad_input": []}
        for source, target, marker in zip(batch["input"], batch["output"], batch["marker"], strict=True):
            documents, error, bad_input = 0, "", False
            try:
                documents = self.tag_shard(Shard(Path(source), Path(target), Path(marker)))
            except MtbionerError as exc:
                error, bad_input = str(exc), True
            except Exception as exc:  # reported per shard and retried by the driver
                error = f"{type(exc).__name__}: {exc}"
            out["input"].append(str(source))
            out["documents"].append(documents)
            out["error"].append(error)
            out["bad_input"].append(bad_input)
        return out

    def tag_shard(self, shard: Shard) -> int:
        """Tag one file into its output (atomically), count the lines written, then write the marker."""
        from ..data.formats import write_jsonl
        from ..runtime.tagging import tag_documents

        started = time.perf_counter()
        before = _fingerprint(shard.input)
        records = tag_documents(self.tagger, shard.input, chunk=self.chunk, **self.options)
        documents = write_jsonl(self._reporting(records), shard.output)
        if _fingerprint(shard.input) != before:
            raise OSError(f"{shard.input} changed while it was being tagged")
        with shard.output.open("rb") as handle:
            lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
        write_json(
            shard.marker,
            {
                "input": str(shard.input),
                "input_file": before,
                "documents": documents,
                "written": lines,
                "output_bytes": shard.output.stat().st_size,
                "settings": self.settings,
                "seconds": round(time.perf_counter() - started, 3),
                "host": os.uname().nodename,
            },
        )
        return documents

    def _reporting(self, records: Iterator[dict]) -> Iterator[dict]:
        """Pass records through, telling the progress counter every ``chunk`` documents."""
        pending = 0
        for record in records:
            yield record
            pending += 1
            if pending == self.chunk and self.counter is not None:
                self.counter.add.remote(pending)
                pending = 0
        if pending and self.counter is not None:
            self.counter.add.remote(pending)


class DocumentCounter:
    """Ray actor summing the documents workers have tagged, for the driver's progress line."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, n: int) -> None:
        self.count += n

    def total(self) -> int:
        return self.count


# ---------------------------------------------------------------- the driver


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MtbionerError("tag-corpus needs Ray: pip install 'mtbioner[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Connect to ``address`` or start a small local Ray; reuse one the caller already started."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(include_dashboard=False, object_store_memory=_OBJECT_STORE_BYTES, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise MtbionerError(f"cannot start or reach {where}: {exc}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def check_job(job: CorpusJob) -> None:
    """Reject bad options and model folders in the driver, before any worker starts."""
    from ..model.model import read_config
    from ..runtime.onnx_backend import ONNX_NAME, read_onnx_config
    from ..runtime.type_merging import merged_type

    if job.num_workers < 1 or job.cpus_per_worker < 1 or job.chunk < 1 or job.batch_size < 1:
        raise MtbionerError("--num-workers, --cpus-per-worker, --chunk and --batch-size must be at least 1")
    if job.gpus_per_worker < 0 or job.retries < 0:
        raise MtbionerError("--gpus-per-worker and --retries cannot be negative")
    if not 0.0 <= job.min_score <= 1.0:
        raise MtbionerError(f"--min-score must be between 0 and 1, not {job.min_score}")
    if job.output.exists() and not job.output.is_dir():
        raise MtbionerError(f"{job.output}: is a file; --output is the folder the shards are written to")
    if (job.model / ONNX_NAME).is_file():
        config, _ = read_onnx_config(job.model)
    else:
        config = read_config(job.model)
    head_types = {t for head in config.corpora.values() for t in head.entity_types}
    known_types = sorted(head_types | {merged_type(t) for t in head_types})  # as Tagger.tag_batch takes them
    unknown = sorted(set(job.corpora) - set(config.corpora))
    if unknown:
        raise MtbionerError(f"unknown corpora {unknown}; this model's heads are {list(config.corpora)}")
    unknown = sorted(set(job.types) - set(known_types))
    if unknown:
        raise MtbionerError(f"unknown entity types {unknown}; this model knows {known_types}")


def _check_resources(ray, job: CorpusJob) -> None:
    """On a local Ray, fail at once instead of waiting forever for CPUs or GPUs that do not exist."""
    total = ray.cluster_resources()
    for resource, each in (("CPU", job.cpus_per_worker), ("GPU", job.gpus_per_worker)):
        need = each * job.num_workers
        if need and total.get(resource, 0) < need:
            raise MtbionerError(
                f"{job.num_workers} workers x {each:g} {resource} need {need:g} {resource}s, but Ray has "
                f"{total.get(resource, 0):g}; lower --num-workers or --{resource.lower()}s-per-worker"
            )


class _Progress:
    """Shards done and documents/s on one line, refreshed from the counter actor every second."""

    def __init__(self, ray, counter, shards: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.ray, self.counter = ray, counter
        self.first: tuple[float, int] | None = None  # (time, count) when tagging was first seen
        self.bar = tqdm(total=shards, desc="shards", unit="shard", disable=not enabled, dynamic_ncols=True)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._refresh, daemon=True)
        self.thread.start()

    def _refresh(self) -> None:
        while not self.stop.wait(1.0):
            with contextlib.suppress(Exception):
                self.show(self.ray.get(self.counter.total.remote(), timeout=5))

    def show(self, documents: int) -> None:
        """Documents so far and their rate since tagging began (worker start-up excluded)."""
        now = time.perf_counter()
        if self.first is None:
            if not documents:
                self.bar.set_postfix_str("starting workers", refresh=True)
                return
            self.first = (now, documents)
        seconds, done = now - self.first[0], documents - self.first[1]
        rate = f"{done / seconds:.1f} docs/s" if seconds > 0.5 else "..."
        self.bar.set_postfix_str(f"{documents} docs, {rate}", refresh=True)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        with contextlib.suppress(Exception):
            self.show(self.ray.get(self.counter.total.remote(), timeout=5))
        self.bar.close()


def tag_corpus(job: CorpusJob) -> CorpusReport:
    """Tag every unfinished shard of ``job.inputs`` into ``job.output``; see the module docstring."""
    from ..runtime.shipped import resolve_model

    job = replace(job, model=resolve_model(job.model))  # a shipped name (default) as every other command takes it
    check_job(job)
    shards = plan_shards(find_inputs(job.inputs), job.output)
    job.output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(job.output)
    settings = job.settings()
    pending = [s for s in shards if read_marker(s, settings) is None]
    skipped = len(shards) - len(pending)
    if skipped:
        log.info(
            "%d of %d shards already done in %s; tagging the other %d", skipped, len(shards), job.output, len(pending)
        )
    started = time.perf_counter()
    failed: dict[str, str] = {}
    documents_tagged = 0
    if pending:
        with ray_session(job.address) as ray:
            if not job.address:
                _check_resources(ray, job)
            documents_tagged, failed = _run_rounds(ray, job, pending, settings)
        remove_stale_temporaries(job.output)  # left by workers that died mid-shard
    seconds = time.perf_counter() - started
    documents_in, documents_out, problems = count_check(shards, settings)
    for name, problem in problems.items():
        failed.setdefault(name, problem)
    tagged = len({s.name for s in pending} - set(failed))
    return CorpusReport(len(shards), skipped, tagged, documents_out, documents_tagged, seconds, failed)


def _run_rounds(ray, job: CorpusJob, pending: list[Shard], settings: dict[str, Any]) -> tuple[int, dict]:
    """Rounds of a Ray Data actor pool over the shards; a round retries the last one's raised errors.

    A worker that dies (crash, OOM kill, lost node) is restarted by Ray, which retries its
    shard up to ``job.retries`` times within the round; after that the shard is reported. An
    exception raised while tagging is retried by a new round, except bad input.
    """
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False  # our own line shows shards and documents/s
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    context.max_errored_blocks = -1  # a shard whose worker keeps dying is reported, not fatal to the others
    counter = ray.remote(num_cpus=0)(DocumentCounter).remote()
    progress = _Progress(ray, counter, len(pending), job.progress)
    failed: dict[str, str] = {}
    documents = 0
    todo = pending
    try:
        for attempt in range(1, job.retries + 2):
            if attempt > 1:
                log.warning("retrying %d shards (attempt %d of %d)", len(todo), attempt, job.retries + 1)
            retry, reported = [], set()
            by_input = {str(s.input): s for s in todo}
            for row in _map_shards(ray, job, todo, settings, counter):  # as each shard finishes
                shard = by_input[row["input"]]
                reported.add(shard.name)
                if not row["error"]:
                    documents += int(row["documents"])
                    failed.pop(shard.name, None)
                    progress.bar.update(1)
                    continue
                failed[shard.name] = row["error"]
                log.warning("%s failed: %s", shard.name, row["error"])
                if not row["bad_input"]:
                    retry.append(shard)
            for shard in todo:  # no result row: Ray restarted its worker and retried it job.retries times
                if shard.name not in reported:
                    failed[shard.name] = f"its worker died {job.retries + 1} times (see Ray's log)"
                    log.warning("%s failed: %s", shard.name, failed[shard.name])
            todo = retry
            if not todo:
                break
    finally:
        progress.close()
    return documents, failed


def _map_shards(ray, job: CorpusJob, shards: list[Shard], settings: dict, counter) -> Iterator[dict]:
    """One Ray Data pass: a row per shard through ``num_workers`` actors; yields result rows as they come."""
    rows = [{"input": str(s.input), "output": str(s.output), "marker": str(s.marker)} for s in shards]
    with warnings.catch_warnings():  # max_task_retries has no named parameter yet (Ray 2.60)
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        dataset = _pool_dataset(ray, job, rows, settings, counter)
    ray_data_log = logging.getLogger("ray.data")
    level = ray_data_log.level
    ray_data_log.setLevel(logging.ERROR)  # our progress line replaces Ray Data's notices
    try:
        yield from dataset.iter_rows()
    finally:
        ray_data_log.setLevel(level)


def _pool_dataset(ray, job: CorpusJob, rows: list[dict], settings: dict, counter):
    from ray.data import ActorPoolStrategy

    return ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        ShardWorker,
        batch_size=1,
        compute=ActorPoolStrategy(size=min(job.num_workers, len(rows)), max_tasks_in_flight_per_actor=1),
        fn_constructor_kwargs={
            "model": str(job.model.resolve()),
            "batch_size": job.batch_size,
            "chunk": job.chunk,
            "threads": job.cpus_per_worker,
            "use_gpu": job.gpus_per_worker > 0,
            "options": job.tagging_options(),
            "settings": settings,
            "counter": counter,
        },
        num_cpus=job.cpus_per_worker,
        num_gpus=job.gpus_per_worker or None,
        max_restarts=-1,
        max_task_retries=job.retries,
    )


def summary(report: CorpusReport, output: Path) -> str:
    """The lines printed at the end of a run: work done, the count check, and failures."""
    lines = [
        f"shards: {report.shards} ({report.tagged} tagged now, {report.skipped} already done, "
        f"{len(report.failed)} failed) -> {output}",
        f"tagged {report.documents_tagged} documents in {report.seconds:.1f} s, start-up included "
        f"({report.docs_per_second:.1f} documents/s)",
    ]
    if report.failed:
        lines.append(
            f"count check: {report.documents} documents in the {report.shards - len(report.failed)} finished shards"
        )
        lines += [f"FAILED {name}: {error}" for name, error in sorted(report.failed.items())]
    else:
        lines.append(
            f"count check: {report.documents} documents read = {report.documents} written, "
            f"each once, in {report.shards} shards: OK"
        )
    return "\n".join(lines)
