"""The incremental training service: queue -> train -> evaluate -> promote a version.

One cycle (:meth:`TrainingService.run_cycle`) takes every pending example, trains from the
current version's adapter on them mixed with a replay sample of the balanced dataset,
evaluates the result on the development eval cases, and promotes ``thau-<size>-vN`` only
when no watched metric regresses past ``regression_margin``; otherwise the current version
stays and the reason is recorded. The train, evaluate, export and register steps are plain
callables (:class:`Steps`): the defaults (:func:`default_steps`) run the real trainer as a
killable subprocess, the real evaluator and the export; tests pass tiny ones.

On disk, in ``<data dir>/train_service/``::

    config.json      the service settings (``thau-train init``)
    queue.db         the examples (SQLite, WAL)
    state.json       the current version and the version counter (replaced atomically)
    history.jsonl    one line per cycle: what happened and why
    train.lock       held (flock) by the process running a cycle; holds its PID
    run.json         the running cycle (run id, PIDs), while one runs
    versions/<run>/  a version: adapter/, report.json, meta.json, adapter.gguf
    runs/<id>/       a cycle's work folder, removed when the cycle ends

Version names and numbers come from the export's registry (``versions.json`` in the data
dir, see :mod:`export.versions`), so ``thau-export versions`` and Ollama agree with it.

Crash safety: a version folder is built as ``versions/.tmp-*`` and renamed when complete;
``state.json`` (the only thing that makes a folder a version) is written to a temporary
file and renamed; the lock is an ``flock`` that
the kernel drops with its process, so a lock file left by a dead PID is simply taken over;
and :meth:`TrainingService.recover` puts ``training`` examples back to ``pending``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from thau.errors import ConfigError, ThauError
from thau.jsonl import atomic_write, dumps_jsonl, read_jsonl, write_json
from thau.paths import data_dir
from thau.resources import datasets_dir, eval_dir
from thau.train.queue import ExampleStore, StoredExample

SIZES = {
    "135m": "smollm2-135m",
    "360m": "smollm2-360m",
    "0.5b": "qwen2.5-0.5b",
    "1b": "llama-3.2-1b",
    "1.1b": "tinyllama-1.1b",
    "1.5b": "qwen2.5-1.5b",
}
# metric -> +1 when higher is better, -1 when lower is better
WATCHED = {
    "decision_accuracy": 1,
    "json_valid_rate": 1,
    "args_match_rate": 1,
    "false_tool_rate": -1,
}


class TrainingFailed(ThauError):
    """A training, evaluation or export step did not complete."""


# -- settings ------------------------------------------------------------------------------
@dataclass
class ServiceConfig:
    """The service settings, kept as JSON in the service folder."""

    size: str = "135m"
    preset: str = SIZES["135m"]
    auto_train_interval_hours: float = 24.0
    min_new_examples: int = 50
    replay_ratio: float = 4.0  # replay examples per new example
    max_replay: int = 2000
    valid_size: int = 64  # validation examples sampled from the dataset's valid split
    regression_margin: float = 0.02  # how far a watched metric may fall before refusing
    dataset_dir: str | None = None  # None: the dataset shipped in the package
    eval_cases: str | None = None  # None: the shipped dev set
    eval_limit: int | None = None
    base_gguf: str | None = None  # the base as GGUF for export/eval (None: SmolLM2-135M's)
    # the LoRA (peft folder or GGUF) the first version trains from and must beat; None: base
    start_adapter: str | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)  # `thau-train run` flags
    ollama: bool = True  # register each promoted version where an Ollama server answers
    ollama_host: str | None = None
    seed: int = 0

    @classmethod
    def for_size(cls, size: str, **values: Any) -> ServiceConfig:
        if size not in SIZES:
            raise ConfigError(f"Unknown size {size!r}; pick one of {', '.join(SIZES)}.")
        return cls(size=size, preset=SIZES[size], **values)

    @classmethod
    def load(cls, path: Path) -> ServiceConfig:
        if not path.is_file():
            raise ConfigError(f"No training service here ({path}); run `thau-train init` first.")
        values = json.loads(path.read_text("utf-8"))
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"{path}: unknown settings {', '.join(unknown)}.")
        return cls(**values)

    def save(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))


@dataclass(frozen=True)
class ServicePaths:
    """Where a service keeps its files."""

    root: Path

    @classmethod
    def default(cls) -> ServicePaths:
        return cls(data_dir() / "train_service")

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def queue(self) -> Path:
        return self.root / "queue.db"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / "train.lock"

    @property
    def active_run(self) -> Path:
        return self.root / "run.json"

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    @property
    def runs(self) -> Path:
        return self.root / "runs"


# -- files, processes and the lock ---------------------------------------------------------
def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON to a temporary file, flush it to disk, and rename it over ``path``."""
    write_json(path, value)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


class ProcessLock:
    """An exclusive lock between processes: ``flock`` on a file that records the holder's PID.

    The kernel drops an ``flock`` when its process dies (SIGKILL included), so a lock file
    left by a dead PID never blocks: the next process takes it over.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; ``False`` when a live process holds it."""
        if self._fd is not None:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def holder(self) -> int | None:
        """The PID written in the lock file when that process is alive, else ``None``."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() and pid_alive(int(text)) else None


# -- the pluggable steps -------------------------------------------------------------------
@dataclass
class TrainJob:
    """What a train step gets: data files, the run folder and where to start from."""

    preset: str
    train_file: Path
    valid_file: Path
    out_dir: Path
    init_adapter: Path | None
    overrides: dict[str, Any]
    cancel: threading.Event
    on_process: Callable[[int], None] = lambda pid: None
    notes: list[str] = field(default_factory=list)  # what the step wants recorded


@dataclass(frozen=True)
class Registered:
    """The name and number a register step gave a version, and what it did."""

    name: str
    number: int
    note: str = ""


Trainer = Callable[[TrainJob], Path]  # returns the trained adapter folder
Evaluator = Callable[[Path | None], dict[str, Any]]  # adapter folder (None: base) -> report
Exporter = Callable[[Path, "ServiceConfig"], dict[str, Any]]  # fills the staged folder
Registrar = Callable[[Path, "ServiceConfig", dict[str, Any]], Registered]  # folder, report


@dataclass
class Steps:
    """The train, evaluate, export and register steps of a cycle. Without ``register``,
    versions are numbered by the service's own counter."""

    train: Trainer
    evaluate: Evaluator
    export: Exporter | None = None
    register: Registrar | None = None


def trainer_accepts(flag: str) -> bool:
    """Whether ``thau-train run`` has the option ``flag``."""
    import argparse

    from thau.train.presets import add_run_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_run_arguments(parser)
    _, unknown = parser.parse_known_args([flag, "x"])
    return not unknown


def _death_signal() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that makes the child get SIGKILL when its parent dies
    (``PR_SET_PDEATHSIG``). libc is loaded here, in the parent: nothing is imported after
    the fork."""
    if sys.platform != "linux":
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def train_command(job: TrainJob) -> list[str]:
    """``python -m train run ...`` for a job; ``overrides`` become ``--flag value``."""
    cmd = [sys.executable, "-m", "thau.train", "run", "--preset", job.preset, "--no-progress"]
    cmd += ["--train", str(job.train_file), "--valid", str(job.valid_file)]
    cmd += ["--out", str(job.out_dir)]
    if job.init_adapter is not None:
        if trainer_accepts("--init-adapter"):
            cmd += ["--init-adapter", str(job.init_adapter)]
        else:
            job.notes.append("trained from the base: `thau-train run` has no --init-adapter")
    for name, value in job.overrides.items():
        cmd += ["--" + name.replace("_", "-"), str(value)]
    return cmd


def subprocess_train(job: TrainJob) -> Path:
    """The default train step: the real trainer in a subprocess that ``cancel`` kills."""
    job.out_dir.parent.mkdir(parents=True, exist_ok=True)
    log = job.out_dir.parent / "train.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            train_command(job),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_death_signal(),
        )
        job.on_process(proc.pid)
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if job.cancel.is_set():
                    proc.kill()
                    proc.wait()
                    raise TrainingFailed("training was cancelled") from None
    if code != 0:
        tail = log.read_text("utf-8", errors="replace")[-2000:]
        raise TrainingFailed(f"the trainer exited with {code}: {tail.strip()}")
    adapter = job.out_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise TrainingFailed(f"the trainer wrote no adapter in {adapter}")
    return adapter


def _run(cmd: list[str], what: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TrainingFailed(f"{what} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return done.stdout


def gguf_adapter(adapter: Path, out: Path, base_gguf: str | None = None) -> Path:
    """``thau-export adapter``: a peft adapter folder as a llama.cpp GGUF LoRA."""
    if not out.is_file():
        cmd = [sys.executable, "-m", "thau.export", "adapter", "--adapter", str(adapter)]
        cmd += ["--out", str(out)] + (["--base", base_gguf] if base_gguf else [])
        _run(cmd, "thau-export adapter")
    return out


def make_subprocess_evaluate(config: ServiceConfig) -> Evaluator:
    """The default evaluate step: the adapter as GGUF, then ``thau-train eval`` (embedded
    backend) on the development cases. ``None`` evaluates the base model; a ``.gguf`` path
    is used as it is."""

    def evaluate(adapter: Path | None) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "thau.train", "eval", "--backend", "embedded", "--json", "-q"]
        cmd += ["--cases", config.eval_cases or str(eval_dir() / "dev.jsonl")]
        if config.base_gguf:
            cmd += ["--model", config.base_gguf]
        if config.eval_limit:
            cmd += ["--limit", str(config.eval_limit)]
        if adapter is not None and adapter.suffix == ".gguf":
            cmd += ["--adapter", str(adapter)]
        elif adapter is not None:
            gguf = gguf_adapter(adapter, adapter.parent / "adapter.gguf", config.base_gguf)
            cmd += ["--adapter", str(gguf)]
        return json.loads(_run(cmd, "evaluation"))

    return evaluate


def gguf_export(folder: Path, config: ServiceConfig) -> dict[str, Any]:
    """The default export step: the adapter as GGUF inside the staged version folder."""
    gguf = gguf_adapter(folder / "adapter", folder / "adapter.gguf", config.base_gguf)
    return {"gguf_adapter": gguf.name}


def export_register(folder: Path, config: ServiceConfig, report: dict[str, Any]) -> Registered:
    """The default register step: the next ``thau-<size>-vN`` in ``versions.json`` (the
    export's registry, one counter for every tool), then, with ``config.ollama``, the
    model in Ollama where a server answers (a Modelfile and a command where none does)."""
    from thau.export.ollama_register import register
    from thau.export.versions import VersionRegistry, scalar_metrics

    gguf = folder / "adapter.gguf"
    metrics = scalar_metrics(report)
    version = VersionRegistry().record(config.size, adapter=str(gguf), metrics=metrics)

    class Recorded(VersionRegistry):  # register() takes this version instead of a new one
        def record(self, size: str, **details: Any) -> Any:
            return version

    note = "not registered in Ollama (ollama is off in the service settings)"
    if config.ollama:
        try:
            done = register(
                f"thau-{config.size}",
                adapter=gguf,
                host=config.ollama_host,
                metrics=metrics,
                registry=Recorded(),
            )
            note = (
                f"created {version.name} in Ollama"
                if done.created
                else f"no Ollama server answers; later run: {done.command}"
            )
        except ThauError as exc:
            note = f"not registered in Ollama: {exc}"
    return Registered(version.name, version.number, note)


def default_steps(config: ServiceConfig) -> Steps:
    """The real trainer, evaluator, export and Ollama registration."""
    return Steps(
        train=subprocess_train,
        evaluate=make_subprocess_evaluate(config),
        export=gguf_export,
        register=export_register,
    )


# -- decisions -----------------------------------------------------------------------------
def regressions(
    baseline: dict[str, Any] | None, candidate: dict[str, Any], margin: float
) -> list[str]:
    """Why ``candidate`` is worse than ``baseline`` by more than ``margin`` (empty: it is not)."""
    if candidate.get("decision_accuracy") is None:
        return ["the evaluation has no decision_accuracy"]
    if not baseline:
        return []
    found = []
    for name, sign in WATCHED.items():
        old, new = baseline.get(name), candidate.get(name)
        if old is None or new is None:
            continue
        if sign * (new - old) < -margin:
            found.append(f"{name} {old:.4f} -> {new:.4f} (margin {margin})")
    return found


def _metrics(report: dict[str, Any]) -> dict[str, Any]:
    return {key: report.get(key) for key in ("n", *WATCHED)}


@dataclass
class CycleResult:
    """What one cycle did."""

    status: str  # waiting | busy | promoted | refused | failed
    reason: str = ""
    run_id: str | None = None
    version: str | None = None
    examples: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    finished: str = field(default_factory=now_iso)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the service ---------------------------------------------------------------------------
def _dump_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write(path, dumps_jsonl(rows))


class TrainingService:
    """The queue, the versions and the train/evaluate/promote cycle of one service folder."""

    def __init__(
        self,
        config: ServiceConfig,
        paths: ServicePaths | None = None,
        steps: Steps | None = None,
        system_prompt: str | None = None,
    ) -> None:
        self.config = config
        self.paths = paths or ServicePaths.default()
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.steps = steps or default_steps(config)
        self.store = ExampleStore(self.paths.queue)
        self._system_prompt = system_prompt
        self._cancel = threading.Event()
        self._busy = threading.Lock()
        self.last_result: CycleResult | None = None
        self.recover()

    @classmethod
    def open(cls, paths: ServicePaths | None = None, **kwargs: Any) -> TrainingService:
        """The service whose settings ``thau-train init`` wrote."""
        paths = paths or ServicePaths.default()
        return cls(ServiceConfig.load(paths.config), paths, **kwargs)

    def close(self) -> None:
        self.store.close()

    @property
    def system_prompt(self) -> str:
        if self._system_prompt is None:
            from thau.train.dataset import training_system_prompt

            self._system_prompt = training_system_prompt()
        return self._system_prompt

    # -- versions --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """``current`` (a number or None), ``last_number``, ``baseline``, ``versions``."""
        if not self.paths.state.is_file():
            return {"current": None, "last_number": 0, "baseline": None, "versions": []}
        return json.loads(self.paths.state.read_text("utf-8"))

    def version_name(self, number: int) -> str:
        return f"thau-{self.config.size}-v{number}"

    def current_version(self) -> dict[str, Any] | None:
        state = self.state()
        return next((v for v in state["versions"] if v["number"] == state["current"]), None)

    def version_folder(self, version: dict[str, Any]) -> Path:
        return self.paths.versions / version["folder"]

    # -- crash recovery --------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Undo what a killed cycle left: requeue ``training`` examples, drop half-written
        version and run folders. Does nothing while another live process runs a cycle."""
        lock = ProcessLock(self.paths.lock)
        if not lock.acquire():
            return {"requeued": 0, "removed": 0}
        try:
            return self._recover()
        finally:
            lock.release()

    def _recover(self) -> dict[str, int]:
        requeued = self.store.requeue_training()
        kept = {v["folder"] for v in self.state()["versions"]}
        versions = [p for p in self.paths.versions.glob("*") if p.name not in kept]
        removed = 0
        for stale in [*versions, *self.paths.runs.glob("*")]:
            shutil.rmtree(stale, ignore_errors=True)
            removed += 1
        self.paths.active_run.unlink(missing_ok=True)
        if requeued or removed:
            self.record(
                {
                    "status": "recovered",
                    "reason": f"{requeued} examples requeued, {removed} stale folders removed",
                }
            )
        return {"requeued": requeued, "removed": removed}

    def active_run(self) -> dict[str, Any] | None:
        """The cycle running now (in any process), or ``None``."""
        if ProcessLock(self.paths.lock).holder() is None:
            return None
        with contextlib.suppress(ValueError, OSError):
            return json.loads(self.paths.active_run.read_text("utf-8"))
        return None

    # -- the cycle -------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask a running cycle to stop (the trainer subprocess is killed)."""
        self._cancel.set()

    def run_cycle(self, *, force: bool = False) -> CycleResult:
        """One cycle; ``force`` trains on any pending example, below the threshold too."""
        if not self._busy.acquire(blocking=False):
            return CycleResult("busy", "a cycle is running in this process")
        try:
            lock = ProcessLock(self.paths.lock)
            if not lock.acquire():
                return CycleResult("busy", f"process {lock.holder()} is running a cycle")
            try:
                self._recover()
                self._cancel.clear()
                result = self._cycle(force)
            finally:
                self.paths.active_run.unlink(missing_ok=True)
                lock.release()
        finally:
            self._busy.release()
        self.last_result = result
        return result

    def _cycle(self, force: bool) -> CycleResult:
        pending = self.store.counts()["pending"]
        need = 1 if force else self.config.min_new_examples
        if pending < need:
            return CycleResult("waiting", f"{pending} pending examples, {need} needed")
        run_id = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        claimed = self.store.claim(run_id)
        write_json_atomic(
            self.paths.active_run,
            {"run_id": run_id, "pid": os.getpid(), "examples": len(claimed), "started": now_iso()},
        )
        work = self.paths.runs / run_id
        try:
            result = self._train_evaluate_promote(run_id, claimed, work)
        except Exception as exc:
            self.store.finish(run_id, "pending")
            result = CycleResult("failed", str(exc), run_id, examples=len(claimed))
        except BaseException:
            self.store.finish(run_id, "pending")
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.record(result.as_dict())
        return result

    def _train_evaluate_promote(
        self, run_id: str, claimed: list[StoredExample], work: Path
    ) -> CycleResult:
        state = self.state()
        current = self.current_version()
        train_file, valid_file = self._write_data(claimed, work, state["last_number"])
        start = Path(self.config.start_adapter) if self.config.start_adapter else None
        init = self.version_folder(current) / "adapter" if current else start

        def started(pid: int) -> None:
            info = json.loads(self.paths.active_run.read_text("utf-8"))
            write_json_atomic(self.paths.active_run, {**info, "trainer_pid": pid})

        job = TrainJob(
            preset=self.config.preset,
            train_file=train_file,
            valid_file=valid_file,
            out_dir=work / "run",
            init_adapter=init,
            overrides=dict(self.config.train_overrides),
            cancel=self._cancel,
            on_process=started,
        )
        adapter = self.steps.train(job)
        if self._cancel.is_set():
            raise TrainingFailed("the cycle was cancelled")
        report = self.steps.evaluate(adapter)
        baseline = current["metrics"] if current else state.get("baseline")
        if baseline is None:  # the first cycle: the start adapter (or the base) is the bar
            baseline = _metrics(self.steps.evaluate(start))
            write_json_atomic(self.paths.state, {**state, "baseline": baseline})
        result = CycleResult(
            "refused", run_id=run_id, examples=len(claimed), metrics=_metrics(report)
        )
        result.baseline = baseline
        worse = regressions(baseline, report, self.config.regression_margin)
        if worse:
            result.notes = job.notes
            result.reason = "evaluation regressed: " + "; ".join(worse)
            self.store.finish(run_id, "rejected", result.reason)
            return result
        registered, notes = self._promote(adapter, report, run_id, len(claimed))
        self.store.finish(run_id, "trained")
        result.status = "promoted"
        result.version = registered.name
        result.reason = "no watched metric regressed past the margin"
        result.notes = job.notes + notes
        return result

    def _write_data(self, claimed: list[StoredExample], work: Path, salt: int) -> tuple[Path, Path]:
        """The run's train file (new examples plus a replay sample) and valid file."""
        rng = random.Random(self.config.seed * 1_000_003 + salt)
        new = [{"messages": self._with_system(s.example.messages)} for s in claimed]
        dataset = Path(self.config.dataset_dir or datasets_dir() / "tool_calling")
        replay: list[dict[str, Any]] = []
        valid: list[dict[str, Any]] = []
        if (dataset / "train.jsonl").is_file():
            pool = read_jsonl(dataset / "train.jsonl")
            want = round(self.config.replay_ratio * len(new))
            want = min(len(pool), self.config.max_replay, want)
            replay = [{"messages": e["messages"]} for e in rng.sample(pool, want)]
        if (dataset / "valid.jsonl").is_file():
            pool = read_jsonl(dataset / "valid.jsonl")
            want = min(len(pool), self.config.valid_size)
            valid = [{"messages": e["messages"]} for e in rng.sample(pool, want)]
        rows = new + replay
        rng.shuffle(rows)
        work.mkdir(parents=True, exist_ok=True)
        train_file, valid_file = work / "train.jsonl", work / "valid.jsonl"
        _dump_jsonl(train_file, rows)
        _dump_jsonl(valid_file, valid or new[:8])
        return train_file, valid_file

    def _with_system(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if messages and messages[0]["role"] == "system":
            return messages
        return [{"role": "system", "content": self.system_prompt}, *messages]

    def _promote(
        self, adapter: Path, report: dict[str, Any], run_id: str, examples: int
    ) -> tuple[Registered, list[str]]:
        """Build the version folder completely under a temporary name and rename it; name
        and number it (the register step); then point ``state.json`` at it. Until that
        last atomic rename nothing refers to the folder, and recovery removes it."""
        state = self.state()
        self.paths.versions.mkdir(parents=True, exist_ok=True)
        staged = self.paths.versions / f".tmp-{run_id}"
        shutil.copytree(adapter, staged / "adapter")
        if (adapter.parent / "adapter.gguf").is_file():  # the evaluation's GGUF, reused
            shutil.copy2(adapter.parent / "adapter.gguf", staged / "adapter.gguf")
        write_json_atomic(staged / "report.json", report)
        exported = self.steps.export(staged, self.config) if self.steps.export else {}
        final = self.paths.versions / run_id
        os.rename(staged, final)
        if self.steps.register is not None:
            registered = self.steps.register(final, self.config, report)
        else:
            number = state["last_number"] + 1
            registered = Registered(self.version_name(number), number)
        meta = {
            "number": registered.number,
            "name": registered.name,
            "folder": run_id,
            "size": self.config.size,
            "preset": self.config.preset,
            "examples": examples,
            "metrics": _metrics(report),
            "exported": exported,
            "created": now_iso(),
            "parent": state["current"],
        }
        write_json_atomic(final / "meta.json", meta)
        state["versions"].append(meta)
        state["current"] = registered.number
        state["last_number"] = max(state["last_number"], registered.number)
        write_json_atomic(self.paths.state, state)
        return registered, [registered.note] if registered.note else []

    # -- records and reports ---------------------------------------------------------------
    def record(self, entry: dict[str, Any]) -> None:
        """Append one line to the history."""
        entry = {"time": now_iso(), **entry}
        with open(self.paths.history, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        """The last ``limit`` records, oldest first."""
        if not self.paths.history.is_file():
            return []
        out = []
        for line in self.paths.history.read_text("utf-8").splitlines()[-limit:]:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def status(self) -> dict[str, Any]:
        current = self.current_version()
        return {
            "size": self.config.size,
            "preset": self.config.preset,
            "current_version": current["name"] if current else None,
            "pending": self.store.counts()["pending"],
            "min_new_examples": self.config.min_new_examples,
            "auto_train_interval_hours": self.config.auto_train_interval_hours,
            "training": self.active_run(),
            "last_cycle": (  # this process's, else the history's (a new `thau-train status`)
                self.last_result.as_dict()
                if self.last_result
                else next(iter(self.history(1)), None)
            ),
        }

    def stats(self) -> dict[str, Any]:
        state = self.state()
        return {
            "examples": self.store.counts(),
            "versions": [
                {k: v[k] for k in ("name", "created", "examples", "metrics")}
                for v in state["versions"]
            ],
            "current_version": (self.current_version() or {}).get("name"),
            "baseline": state.get("baseline"),
            "history": self.history(10),
        }


# -- the scheduler -------------------------------------------------------------------------
class Scheduler:
    """Runs a cycle every ``auto_train_interval_hours`` in a background thread."""

    def __init__(self, service: TrainingService, interval_s: float | None = None) -> None:
        self.service = service
        self.interval_s = interval_s or service.config.auto_train_interval_hours * 3600
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self.next_run: float | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def busy(self) -> bool:
        """Whether a cycle runs now (a forced one here, or any in another process)."""
        worker = self._worker is not None and self._worker.is_alive()
        return worker or self.service.active_run() is not None

    def start(self) -> bool:
        """Start the schedule; ``False`` when it is already running."""
        if self.running:
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="thau-train-schedule", daemon=True)
        self._thread.start()
        return True

    def stop(self, *, cancel: bool = False, timeout: float = 10.0) -> bool:
        """Stop the schedule (with ``cancel``, a running cycle too); ``False`` if not running."""
        was = self.running
        self._stop.set()
        if cancel:
            self.service.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
        self.next_run = None
        return was

    def trigger(self) -> bool:
        """Run a forced cycle now in the background; ``False`` when one is running."""
        if self.busy:
            return False
        self._worker = threading.Thread(
            target=self.service.run_cycle, kwargs={"force": True}, daemon=True
        )
        self._worker.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a triggered cycle to end."""
        if self._worker is not None:
            self._worker.join(timeout)

    def _loop(self) -> None:
        while True:
            self.next_run = time.time() + self.interval_s
            if self._stop.wait(self.interval_s):
                return
            try:
                self.service.run_cycle()
            except Exception as exc:  # keep the schedule alive; record what went wrong
                self.service.record({"status": "failed", "reason": f"scheduler: {exc}"})
