"""Start-up cost of ``thau-chat --help`` over a bare ``python -c pass`` (target: <= 0.25 s).

Prints JSON: medians of many runs of each, and their difference.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time


def median_wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(runs: int = 15) -> dict[str, float]:
    bare = median_wall([sys.executable, "-c", "pass"], runs)
    chat = median_wall([sys.executable, "-m", "thau.chat", "--help"], runs)
    figures = {
        "python_pass_s": round(bare, 4),
        "thau_chat_help_s": round(chat, 4),
        "overhead_s": round(chat - bare, 4),
        "target_s": 0.25,
        "runs": runs,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
