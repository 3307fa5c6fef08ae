"""Embedded backend decode speed vs raw ``llama_cpp.Llama.create_chat_completion``
(same model, same settings, same Llama instance, one run; target ratio >= 0.95).

Prints JSON: decode tokens/s of each (time after the first token), and the ratio.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from thau.chat.backends.base import GenerationOptions
from thau.chat.backends.embedded import EmbeddedBackend

MESSAGES = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]
MAX_TOKENS = 128


def decode_rate(stream: Iterable[Any]) -> float:
    first = None
    count = 0
    for _ in stream:
        count += 1
        if first is None:
            first = time.perf_counter()
    assert first is not None and count > 1
    return (count - 1) / (time.perf_counter() - first)


def main(rounds: int = 5) -> dict[str, float]:
    backend = EmbeddedBackend(n_ctx=1024)
    llm = backend.llm
    options = GenerationOptions(temperature=0, max_tokens=MAX_TOKENS)
    ours, raw = [], []
    for _ in range(rounds):
        chunks = backend.stream_chat(MESSAGES, options=options)
        ours.append(decode_rate(c for c in chunks if c.text))
        parts = llm.create_chat_completion(
            MESSAGES, temperature=0, top_k=1, max_tokens=MAX_TOKENS, stream=True
        )
        raw.append(decode_rate(p for p in parts if p["choices"][0]["delta"].get("content")))
    figures = {
        "thau_tokens_per_s": round(statistics.median(ours), 2),
        "raw_tokens_per_s": round(statistics.median(raw), 2),
        "ratio": round(statistics.median(ours) / statistics.median(raw), 3),
        "target_ratio": 0.95,
        "rounds": rounds,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
