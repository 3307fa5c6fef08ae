"""The incremental training service: queue -> train -> evaluate -> promote a version.

One cycle (:meth:`TrainingService.run_cycle`) takes every pending example, trains from the
current version's adapter on them mixed with a replay sample of the balanced dataset, and
evaluates the result on the development eval cases, then on the held-out cases. It
promotes ``thau-<size>-vN`` only when no watched metric regresses past
``regression_margin`` on either set (so that a version trained on a few corrections cannot
promote itself by fitting dev); otherwise the current version stays and the reason is
recorded. The steps are plain callables (:mod:`thau.train.service_steps`); the files are
described in :mod:`thau.train_service_files`.

Version names and numbers come from the export's registry (``versions.json`` in the data
dir, see :mod:`export.versions`), so ``thau-export versions`` and Ollama agree with it.

Crash safety: a version folder is built as ``versions/.tmp-*`` and renamed when complete;
``state.json`` (the only thing that makes a folder a version) is written to a temporary
file and renamed; the lock is an ``flock`` that the kernel drops with its process, so a
lock file left by a dead PID is simply taken over; and :meth:`TrainingService.recover`
puts ``training`` examples back to ``pending``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from thau.jsonl import atomic_write, dumps_jsonl, read_jsonl, write_json
from thau.resources import datasets_dir
from thau.train.process_lock import ProcessLock, pid_alive
from thau.train.scheduler import Scheduler
from thau.train.service_steps import (
    Registered,
    Steps,
    TrainingFailed,
    TrainJob,
    default_steps,
    export_register,
    gguf_adapter,
    gguf_export,
    make_subprocess_evaluate,
    subprocess_train,
    train_command,
    trainer_accepts,
)
from thau.train_queue import ExampleStore, StoredExample
from thau.train_service_files import (
    SIZES,
    ServiceConfig,
    ServicePaths,
    current_version,
    now_iso,
    read_state,
)

__all__ = [  # the service's names, wherever they live
    "SIZES",
    "WATCHED",
    "CycleResult",
    "ProcessLock",
    "Registered",
    "Scheduler",
    "ServiceConfig",
    "ServicePaths",
    "Steps",
    "TrainJob",
    "TrainingFailed",
    "TrainingService",
    "default_steps",
    "export_register",
    "gguf_adapter",
    "gguf_export",
    "make_subprocess_evaluate",
    "pid_alive",
    "regressions",
    "subprocess_train",
    "train_command",
    "trainer_accepts",
]

# metric -> +1 when higher is better, -1 when lower is better
WATCHED = {
    "decision_accuracy": 1,
    "json_valid_rate": 1,
    "args_match_rate": 1,
    "false_tool_rate": -1,
}


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
    holdout: dict[str, Any] | None = None  # the candidate's held-out metrics, when run
    holdout_baseline: dict[str, Any] | None = None
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
        return read_state(self.paths)

    def version_name(self, number: int) -> str:
        return f"thau-{self.config.size}-v{number}"

    def current_version(self) -> dict[str, Any] | None:
        return current_version(self.state())

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
        write_json(
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
            write_json(self.paths.active_run, {**info, "trainer_pid": pid})

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
            write_json(self.paths.state, {**state, "baseline": baseline})
        result = CycleResult(
            "refused", run_id=run_id, examples=len(claimed), metrics=_metrics(report)
        )
        result.baseline = baseline
        worse = regressions(baseline, report, self.config.regression_margin)
        if worse:
            return self._refuse(result, job, "evaluation regressed: " + "; ".join(worse))
        holdout = None
        if self.steps.evaluate_holdout is not None:
            holdout = self.steps.evaluate_holdout(adapter)
            result.holdout = _metrics(holdout)
            result.holdout_baseline = self._holdout_bar(current, start)
            worse = regressions(result.holdout_baseline, holdout, self.config.regression_margin)
            if worse:
                why = "held-out evaluation regressed: " + "; ".join(worse)
                return self._refuse(result, job, why)
        registered, notes = self._promote(adapter, report, run_id, len(claimed), holdout)
        self.store.finish(run_id, "trained")
        result.status = "promoted"
        result.version = registered.name
        result.reason = "no watched metric regressed past the margin"
        if holdout is not None:
            result.reason += " on the development or the held-out cases"
        result.notes = job.notes + notes
        return result

    def _refuse(self, result: CycleResult, job: TrainJob, reason: str) -> CycleResult:
        """The candidate stays unpromoted; its examples are marked ``rejected``."""
        result.notes = job.notes
        result.reason = reason
        assert result.run_id is not None
        self.store.finish(result.run_id, "rejected", reason)
        return result

    def _holdout_bar(self, current: dict[str, Any] | None, start: Path | None) -> dict[str, Any]:
        """The held-out metrics a candidate must not fall below: the current version's (or,
        before the first version, the start adapter's). Measured once for a version that
        has none recorded (one promoted before the gate ran the held-out cases) and kept
        in ``state.json``."""
        if current and current.get("holdout_metrics"):
            return dict(current["holdout_metrics"])
        key = current["number"] if current else None
        kept = self.state().get("holdout_baseline")
        if kept and kept.get("version") == key:
            return dict(kept["metrics"])
        assert self.steps.evaluate_holdout is not None
        adapter = self.version_folder(current) / "adapter" if current else start
        metrics = _metrics(self.steps.evaluate_holdout(adapter))
        bar = {"version": key, "metrics": metrics}
        write_json(self.paths.state, {**self.state(), "holdout_baseline": bar})
        return metrics

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
        self,
        adapter: Path,
        report: dict[str, Any],
        run_id: str,
        examples: int,
        holdout: dict[str, Any] | None = None,
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
        write_json(staged / "report.json", report)
        if holdout is not None:
            write_json(staged / "holdout_report.json", holdout)
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
            "holdout_metrics": _metrics(holdout) if holdout is not None else None,
            "exported": exported,
            "created": now_iso(),
            "parent": state["current"],
        }
        write_json(final / "meta.json", meta)
        state["versions"].append(meta)
        state["current"] = registered.number
        state["last_number"] = max(state["last_number"], registered.number)
        write_json(self.paths.state, state)
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
