"""How much a sandboxed ``pass`` costs over a plain ``python -c pass`` subprocess.

Runs the three kinds of call interleaved (so that a busy machine slows them alike) and
prints JSON: the median wall time of each in milliseconds and the sandbox's overhead
against the plain call (target: at most 150 ms).

    python bench/sandbox_overhead.py --runs 40
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from thau.tools.sandbox import Sandbox, SandboxLimits, bwrap_problem

TARGET_MS = 150.0


def _ms(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def measure(runs: int) -> dict[str, object]:
    limits = SandboxLimits(timeout_s=30)
    calls: dict[str, Callable[[], object]] = {
        "plain": lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
        "fallback": lambda: Sandbox("fallback", limits).run("pass"),
    }
    problem = bwrap_problem()
    if problem is None:
        calls["bwrap"] = lambda: Sandbox("bwrap", limits).run("pass")
    for call in calls.values():  # warm the page cache and the probes
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            times[name].append(_ms(call))
    medians = {name: round(statistics.median(values), 1) for name, values in times.items()}
    overhead = {
        name: round(medians[name] - medians["plain"], 1) for name in calls if name != "plain"
    }
    return {
        "runs": runs,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "median_ms": medians,
        "overhead_ms": overhead,
        "target_overhead_ms": TARGET_MS,
        "within_target": {name: value <= TARGET_MS for name, value in overhead.items()},
        "bwrap": "available" if problem is None else problem,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="calls of each kind (default 40)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.runs), indent=2))


if __name__ == "__main__":
    main()
