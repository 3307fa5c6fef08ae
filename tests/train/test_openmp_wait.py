"""The OpenMP wait policy: the user's choice is kept, a busy CPU gets passive waits."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from thau.train.openmp_wait import (
    BUSY_CORES,
    VARIABLE,
    busy_cores,
    wait_policy,
    wait_policy_setting,
)


@contextmanager
def spinning_process() -> Iterator[None]:
    """Another process keeping one core busy."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spin.kill()
        spin.wait()


def test_the_users_setting_is_kept_whatever_the_load() -> None:
    environ = {VARIABLE: "ACTIVE"}
    for busy in (0.0, 2.0):
        assert wait_policy_setting(environ, busy=busy) == {}
    assert wait_policy(environ) == "ACTIVE"


def test_a_busy_cpu_gets_passive_waits() -> None:
    assert wait_policy_setting({}, busy=BUSY_CORES) == {VARIABLE: "PASSIVE"}
    assert wait_policy_setting({"OTHER": "1"}, busy=1.5) == {VARIABLE: "PASSIVE"}


def test_an_idle_cpu_keeps_openmps_default() -> None:
    assert wait_policy_setting({"OTHER": "1"}, busy=0.1) == {}
    assert wait_policy({"OTHER": "1"}) == "default"


def test_busy_cores_sees_another_process_computing() -> None:
    with spinning_process():
        assert busy_cores(0.5) >= BUSY_CORES


@pytest.mark.timeout(120)
def test_the_trainer_starts_with_passive_waits_beside_a_busy_process() -> None:
    """The real start-up path of ``thau-train run``: a fresh process applies the policy,
    then imports the trainer (and torch) while another process computes, and OpenMP is
    told to sleep between regions."""
    code = (
        "import os; from thau.train.openmp_wait import apply_wait_policy; "
        "apply_wait_policy(); import thau.train.trainer as t; "
        f"print(os.environ.get('{VARIABLE}'), t.device_info(t.torch.device('cpu'), 1)"
        "['omp_wait_policy'])"
    )
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    with spinning_process():
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
    assert out.stdout.split() == ["PASSIVE", "PASSIVE"]


def test_nothing_changes_once_torch_has_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenMP has read its settings by then: even a busy CPU gets no setting."""
    import torch  # noqa: F401

    monkeypatch.delenv(VARIABLE, raising=False)
    assert wait_policy_setting(busy=2.0) == {}
    assert wait_policy_setting({}, busy=2.0) == {VARIABLE: "PASSIVE"}  # another environment


def test_importing_the_trainer_leaves_the_environment_alone() -> None:
    """No work at import time: the policy is the ``run`` command's business."""
    code = (
        "import os; before = dict(os.environ); import thau.train.trainer; "
        "print(before == dict(os.environ))"
    )
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    with spinning_process():
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
    assert out.stdout.strip() == "True"
