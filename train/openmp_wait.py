"""How torch's OpenMP threads wait between parallel regions, chosen before torch loads.

A training step runs thousands of small parallel regions on a CPU, so how the
threads wait between them shows in the run time. Measured on the 2-core machine that
trains the default adapter (SmolLM2-135M, batches of 8):

- idle cores: OpenMP's default (spin a moment, then sleep) trains 1.4-1.6x faster than
  ``PASSIVE`` (sleep at once), which pays a wake-up per region;
- one core busy with another process: the default is about 2.3x slower than ``PASSIVE``,
  since a spinning thread takes the time its partner needs to finish.

So ``PASSIVE`` is chosen only when other work keeps the CPU busy as the run starts, and a
value the user set in ``OMP_WAIT_POLICY`` is always kept. OpenMP reads the variable once,
when torch loads it: after ``import torch`` nothing here has any effect.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

VARIABLE = "OMP_WAIT_POLICY"
BUSY_CORES = 0.5  # other work using at least half a core makes spinning a loss


def busy_cores(sample_s: float = 0.25) -> float:
    """How many cores' worth of CPU the machine used over ``sample_s`` seconds (this
    process sleeps meanwhile, so it is other work)."""
    import psutil

    return psutil.cpu_percent(interval=sample_s) / 100 * (psutil.cpu_count() or 1)


def wait_policy_setting(
    environ: Mapping[str, str] | None = None, busy: float | None = None
) -> dict[str, str]:
    """What to add to the environment before torch loads: ``{"OMP_WAIT_POLICY":
    "PASSIVE"}`` on a busy CPU, else nothing (OpenMP's default, or the user's setting).

    ``busy`` (cores in use by other work) is measured when not given.
    """
    environ = os.environ if environ is None else environ
    if VARIABLE in environ or ("torch" in sys.modules and environ is os.environ):
        return {}  # the user's choice; or too late, OpenMP has read its settings
    if (busy_cores() if busy is None else busy) >= BUSY_CORES:
        return {VARIABLE: "PASSIVE"}
    return {}


def apply_wait_policy() -> None:
    """Set the policy in this process's environment; call it before torch loads (the
    ``thau-train run`` command does, first thing)."""
    os.environ.update(wait_policy_setting())


def wait_policy(environ: Mapping[str, str] | None = None) -> str:
    """The policy in force: ``OMP_WAIT_POLICY``'s value, or ``default``."""
    return (os.environ if environ is None else environ).get(VARIABLE, "default")
