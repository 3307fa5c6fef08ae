"""The whole cycle with test steps: threshold, replay mix, promote, refuse, version counter."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.train.service.conftest import SYSTEM, QualityTrainer, good, quality_evaluate, wrong
from thau.train.service import (
    ProcessLock,
    Registered,
    ServiceConfig,
    ServicePaths,
    Steps,
    TrainingService,
    export_register,
    regressions,
)
from thau.train_queue import normalize


def add(service: TrainingService, records: list[dict]) -> None:
    service.store.add_many(normalize(r) for r in records)


def test_add_threshold_train_evaluate_promote_refuse_and_version(
    service: TrainingService, trainer: QualityTrainer
) -> None:
    add(service, [good(1), good(2)])
    waiting = service.run_cycle()
    assert waiting.status == "waiting" and "2 pending examples, 3 needed" in waiting.reason
    assert trainer.jobs == [] and service.current_version() is None

    add(service, [good(3), good(1)])  # good(1) again: a duplicate, dropped
    first = service.run_cycle()
    assert first.status == "promoted" and first.version == "thau-135m-v1"
    assert first.examples == 3 and first.baseline["decision_accuracy"] == 0.5
    rows = trainer.rows[0]
    assert len(rows) == 3 + 6  # the new examples and a replay sample twice their number
    assert all(r["messages"][0] == {"role": "system", "content": SYSTEM} for r in rows)
    users = [r["messages"][1]["content"] for r in rows]
    assert {"What is 1 plus 1?", "What is 3 plus 3?"} <= set(users)
    assert sum("(variant" in u for u in users) == 6
    assert trainer.jobs[0].init_adapter is None and trainer.jobs[0].preset == "smollm2-135m"
    assert service.store.counts() == {"pending": 0, "training": 0, "trained": 3, "rejected": 0}

    v1 = service.version_folder(service.current_version())
    assert v1.name == first.run_id
    meta = json.loads((v1 / "meta.json").read_text("utf-8"))
    assert meta["name"] == "thau-135m-v1" and meta["examples"] == 3
    assert (v1 / "adapter" / "adapter_config.json").is_file()
    assert json.loads((v1 / "report.json").read_text("utf-8"))["decision_accuracy"] == 1.0

    # bad answers: quality falls from 1.0 to 6/9, past the margin: v1 stays
    add(service, [wrong(1), wrong(2), wrong(3)])
    refused = service.run_cycle()
    assert refused.status == "refused" and refused.version is None
    assert "decision_accuracy 1.0000 -> 0.6667" in refused.reason
    assert "false_tool_rate 0.0000 -> 0.3333" in refused.reason
    assert service.current_version()["name"] == "thau-135m-v1"
    rejected = service.store.select("rejected")
    assert len(rejected) == 3 and all("regressed" in (r.note or "") for r in rejected)
    assert [p.name for p in service.paths.versions.iterdir()] == [v1.name]

    # good ones again: trained from v1's adapter, promoted as v2
    add(service, [good(4), good(5), good(6)])
    second = service.run_cycle()
    assert second.status == "promoted" and second.version == "thau-135m-v2"
    assert trainer.jobs[-1].init_adapter == v1 / "adapter"
    assert second.baseline == meta["metrics"]
    assert service.state()["current"] == 2 and service.state()["last_number"] == 2

    # below the threshold only a forced cycle trains
    add(service, [good(7)])
    assert service.run_cycle().status == "waiting"
    forced = service.run_cycle(force=True)
    assert forced.status == "promoted" and forced.version == "thau-135m-v3"

    history = [h["status"] for h in service.history()]
    assert history == ["promoted", "refused", "promoted", "promoted"]
    stats = service.stats()
    assert [v["name"] for v in stats["versions"]] == [f"thau-135m-v{n}" for n in (1, 2, 3)]
    assert stats["examples"] == {"pending": 0, "training": 0, "trained": 7, "rejected": 3}
    folders = {p.name for p in service.paths.versions.iterdir()}
    assert folders == {first.run_id, second.run_id, forced.run_id}
    assert list(service.paths.runs.iterdir()) == []  # work folders are removed


def test_a_failing_step_requeues_the_examples(config: ServiceConfig) -> None:
    def broken(job):
        raise RuntimeError("out of memory")

    service = TrainingService(
        config, steps=Steps(train=broken, evaluate=quality_evaluate), system_prompt=SYSTEM
    )
    add(service, [good(1), good(2), good(3)])
    result = service.run_cycle()
    assert result.status == "failed" and "out of memory" in result.reason
    assert service.store.counts()["pending"] == 3 and service.current_version() is None
    assert ProcessLock(service.paths.lock).acquire()  # released


def test_export_and_register_steps_name_a_complete_version(
    config: ServiceConfig, trainer: QualityTrainer
) -> None:
    seen = {}

    def export(folder: Path, cfg: ServiceConfig) -> dict:
        seen["export"] = (folder.name, sorted(p.name for p in folder.iterdir()))
        (folder / "adapter.gguf").write_bytes(b"GGUF")
        return {"gguf_adapter": "adapter.gguf"}

    def register(folder: Path, cfg: ServiceConfig, report: dict) -> Registered:
        seen["register"] = (folder.name, sorted(p.name for p in folder.iterdir()), report)
        number = 7 + len(seen.get("numbers", []))  # another tool took numbers 1 to 6
        seen.setdefault("numbers", []).append(number)
        return Registered(f"thau-{cfg.size}-v{number}", number, "no Ollama server answers")

    steps = Steps(train=trainer, evaluate=quality_evaluate, export=export, register=register)
    service = TrainingService(config, steps=steps, system_prompt=SYSTEM)
    add(service, [good(1), good(2), good(3)])
    result = service.run_cycle()
    assert result.status == "promoted" and result.version == "thau-135m-v7"
    assert seen["export"] == (f".tmp-{result.run_id}", ["adapter", "report.json"])
    assert seen["register"][:2] == (result.run_id, ["adapter", "adapter.gguf", "report.json"])
    assert seen["register"][2]["decision_accuracy"] == 1.0
    assert result.notes == ["no Ollama server answers"]
    folder = service.version_folder(service.current_version())
    meta = json.loads((folder / "meta.json").read_text("utf-8"))
    assert meta["exported"] == {"gguf_adapter": "adapter.gguf"} and meta["number"] == 7
    add(service, [good(4), good(5), good(6)])
    assert service.run_cycle().version == "thau-135m-v8"
    assert service.state()["last_number"] == 8


def test_the_default_register_step_numbers_in_versions_json(config: ServiceConfig) -> None:
    """The export's registry gives the number; Ollama not answering leaves a command."""
    import socket

    from thau.export.versions import VersionRegistry

    VersionRegistry().record("135m", adapter="made-by-hand.gguf")  # thau-export took v1
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config.ollama, config.ollama_host = True, f"http://127.0.0.1:{port}"
    folder = Path(config.dataset_dir).parent / "version"
    folder.mkdir()
    (folder / "adapter.gguf").write_bytes(b"GGUF adapter bytes")
    done = export_register(folder, config, {"n": 3, "decision_accuracy": 0.9, "confusion": {}})
    assert (done.name, done.number) == ("thau-135m-v2", 2)
    assert "no Ollama server answers" in done.note and "ollama create thau-135m-v2" in done.note
    recorded = VersionRegistry().list("135m")
    assert [v.name for v in recorded] == ["thau-135m-v1", "thau-135m-v2"]
    assert recorded[1].metrics == {"n": 3, "decision_accuracy": 0.9}
    assert recorded[1].adapter == str(folder / "adapter.gguf")
    config.ollama = False
    assert export_register(folder, config, {}).number == 3


def test_half_written_versions_are_removed_on_restart(service: TrainingService) -> None:
    add(service, [good(1), good(2), good(3)])
    first = service.run_cycle()
    assert first.version == "thau-135m-v1"
    # a crash during the next promotion: a staged folder, examples still training
    half = service.paths.versions / ".tmp-20260101-000000-abcdef"
    (half / "adapter").mkdir(parents=True)
    add(service, [good(4), good(5), good(6)])
    service.store.claim("killed-run")
    # ...or after the folder's rename, before state.json named it: not a version either
    orphan = service.paths.versions / "killed-run"
    (orphan / "adapter").mkdir(parents=True)
    restarted = TrainingService(service.config, service.paths, service.steps, SYSTEM)
    assert not half.exists() and not orphan.exists()
    assert restarted.store.counts()["pending"] == 3
    assert restarted.current_version()["name"] == "thau-135m-v1"
    assert [p.name for p in service.paths.versions.iterdir()] == [first.run_id]
    assert restarted.run_cycle().version == "thau-135m-v2"


def test_a_live_lock_makes_a_cycle_wait_and_a_dead_one_is_taken_over(
    service: TrainingService,
) -> None:
    add(service, [good(1), good(2), good(3)])
    lock = service.paths.lock
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'{os.getpid()}\\n'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = service.run_cycle()
        assert busy.status == "busy" and str(holder.pid) in busy.reason
        assert ProcessLock(lock).holder() == holder.pid
    finally:
        holder.kill()
        holder.wait()
    assert lock.read_text().strip() == str(holder.pid)  # the dead PID is still written there
    assert ProcessLock(lock).holder() is None
    assert service.run_cycle().status == "promoted"


@pytest.mark.parametrize(
    ("candidate", "problems"),
    [
        ({"decision_accuracy": 0.79, "false_tool_rate": 0.1}, []),
        ({"decision_accuracy": 0.77, "false_tool_rate": 0.1}, ["decision_accuracy"]),
        ({"decision_accuracy": 0.9, "false_tool_rate": 0.13}, ["false_tool_rate"]),
        ({"decision_accuracy": 0.9, "json_valid_rate": None}, []),
        ({"decision_accuracy": None}, ["no decision_accuracy"]),
    ],
)
def test_regressions_respect_the_margin(candidate: dict, problems: list[str]) -> None:
    baseline = {"decision_accuracy": 0.8, "false_tool_rate": 0.1, "json_valid_rate": 1.0}
    found = regressions(baseline, candidate, 0.02)
    assert len(found) == len(problems)
    assert all(p in f for p, f in zip(problems, found, strict=True))


def test_the_config_round_trips_and_refuses_unknown_sizes(tmp_path: Path) -> None:
    config = ServiceConfig.for_size("0.5b", min_new_examples=7)
    assert config.preset == "qwen2.5-0.5b"
    config.save(tmp_path / "c.json")
    assert ServiceConfig.load(tmp_path / "c.json") == config
    from thau.errors import ConfigError

    with pytest.raises(ConfigError, match="Unknown size"):
        ServiceConfig.for_size("7b")
    with pytest.raises(ConfigError, match="thau-train init"):
        TrainingService.open(ServicePaths(tmp_path / "nowhere"))


def test_the_train_command_is_the_real_trainer_cli(tmp_path: Path) -> None:
    from thau.train.presets import add_run_arguments
    from thau.train.service import TrainJob, train_command, trainer_accepts

    job = TrainJob(
        preset="smollm2-135m",
        train_file=tmp_path / "t.jsonl",
        valid_file=tmp_path / "v.jsonl",
        out_dir=tmp_path / "run",
        init_adapter=tmp_path / "v1" / "adapter",
        overrides={"epochs": 2, "batch_size": 4},
        cancel=threading.Event(),
    )
    cmd = train_command(job)
    assert cmd[1:4] == ["-m", "thau.train", "run"]
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    args = parser.parse_args(cmd[4:])  # every flag is one `thau-train run` knows
    assert (args.preset, args.epochs, args.batch_size) == ("smollm2-135m", 2, 4)
    assert (args.train, args.out) == (job.train_file, job.out_dir)
    if trainer_accepts("--init-adapter"):
        assert str(job.init_adapter) in cmd and job.notes == []
    else:
        assert job.notes == ["trained from the base: `thau-train run` has no --init-adapter"]


def test_the_first_version_starts_from_and_must_beat_the_start_adapter(
    service: TrainingService, trainer: QualityTrainer, tmp_path: Path
) -> None:
    """With a start adapter (the shipped one, by default for 135m), the first cycle trains
    from it and is compared with it, not with the much weaker base model."""
    start = tmp_path / "shipped"
    start.mkdir()
    (start / "quality.json").write_text(json.dumps({"quality": 0.9}), "utf-8")
    service.config.start_adapter = str(start)

    add(service, [good(1), wrong(2), wrong(3)])  # 9 rows, 2 wrong: quality 0.78 < 0.9
    refused = service.run_cycle()
    assert trainer.jobs[0].init_adapter == start
    assert refused.status == "refused" and refused.baseline["decision_accuracy"] == 0.9
    assert service.current_version() is None

    add(service, [good(4), good(5), good(6)])
    promoted = service.run_cycle()
    assert promoted.status == "promoted" and trainer.jobs[1].init_adapter == start
