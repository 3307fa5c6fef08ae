"""The steps of a training cycle: train, evaluate, export and register.

Each is a plain callable (:class:`Steps`): the defaults (:func:`default_steps`) run the
real trainer as a killable subprocess, the real evaluator on the development and held-out
eval cases, the GGUF export and the version registry; tests pass tiny ones.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thau.errors import ThauError
from thau.resources import eval_dir
from thau.train_service_files import ServiceConfig


class TrainingFailed(ThauError):
    """A training, evaluation or export step did not complete."""


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
    """The train, evaluate, export and register steps of a cycle. ``evaluate`` scores the
    development cases and ``evaluate_holdout`` the held-out ones (without it the gate
    looks at dev only); without ``register``, versions are numbered by the service's own
    counter."""

    train: Trainer
    evaluate: Evaluator
    export: Exporter | None = None
    register: Registrar | None = None
    evaluate_holdout: Evaluator | None = None


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


def make_subprocess_evaluate(config: ServiceConfig, cases: str | None = None) -> Evaluator:
    """The default evaluate step: the adapter as GGUF, then ``thau-train eval`` (embedded
    backend) on ``cases`` (default: the development cases). ``None`` evaluates the base
    model; a ``.gguf`` path is used as it is."""
    cases = cases or config.eval_cases or str(eval_dir() / "dev.jsonl")

    def evaluate(adapter: Path | None) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "thau.train", "eval", "--backend", "embedded", "--json", "-q"]
        cmd += ["--cases", cases]
        base = config.base_path()
        if base:
            cmd += ["--model", base]
        if config.eval_limit:
            cmd += ["--limit", str(config.eval_limit)]
        if adapter is None:  # the base alone, not what thau-chat would load
            cmd += ["--adapter", "none"]
        elif adapter.suffix == ".gguf":
            cmd += ["--adapter", str(adapter)]
        elif adapter is not None:
            gguf = gguf_adapter(adapter, adapter.parent / "adapter.gguf", base)
            cmd += ["--adapter", str(gguf)]
        return json.loads(_run(cmd, "evaluation"))

    return evaluate


def gguf_export(folder: Path, config: ServiceConfig) -> dict[str, Any]:
    """The default export step: the adapter as GGUF inside the staged version folder."""
    gguf = gguf_adapter(folder / "adapter", folder / "adapter.gguf", config.base_path())
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
    holdout = config.holdout_cases or str(eval_dir() / "holdout.jsonl")
    return Steps(
        train=subprocess_train,
        evaluate=make_subprocess_evaluate(config),
        export=gguf_export,
        register=export_register,
        evaluate_holdout=make_subprocess_evaluate(config, holdout),
    )
