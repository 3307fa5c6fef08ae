"""How OpenMP's wait policy changes training speed, on an idle CPU and beside a busy
process. Prints one JSON object.

Each row is a real ``thau-train run`` of the default preset (SmolLM2-135M) for
``--steps`` optimizer steps in a fresh process (OpenMP reads ``OMP_WAIT_POLICY`` once,
when torch loads), with ``OMP_WAIT_POLICY`` unset (``auto``: what the trainer picks,
shown as ``chosen``), ``PASSIVE`` or ``ACTIVE``. ``busy`` rows run beside another process
that keeps one core spinning. tokens/s is the trainer's own figure (training loop only).

    python bench/openmp_wait.py [--steps 10] [--batch-size 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

POLICIES = ("auto", "PASSIVE", "ACTIVE")


def train(policy: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "auto":
        env["OMP_WAIT_POLICY"] = policy
    # the console script, not ``python -m train``: the repo root on sys.path would let the
    # data folder ``datasets/`` pass for the Hugging Face library
    command = [str(Path(sys.executable).with_name("thau-train")), "run", "--preset", "smollm2-135m"]
    command += ["--out", str(out), "--max-steps", str(args.steps), "--no-progress"]
    command += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    subprocess.run(command, env=env, check=True, capture_output=True)
    report = json.loads((out / "report.json").read_text())
    return {
        "policy": policy,
        "chosen": report["device"].get("omp_wait_policy"),
        "tokens_per_s": round(report["tokens_per_s"]),
        "s_per_step": round(report["timings"]["train_s"] / report["steps"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per row")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for load in ("idle", "busy"):
            spin = None
            if load == "busy":
                spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                for policy in POLICIES:
                    row = train(policy, Path(work) / f"{load}-{policy}", args)
                    rows.append({"cpu": load, **row})
            finally:
                if spin is not None:
                    spin.kill()
                    spin.wait()
    result = {"cores": os.cpu_count(), **vars(args), "rows": rows}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
