"""Parser + agent loop throughput on a scripted stream (targets: >= 200k tokens/s, and a
call dispatched < 1 ms after its body completes).

A scripted backend streams 100k "tokens" (chunks of 1-3 characters) of mixed text and
tool calls; each call runs a trivial tool. Prints JSON figures.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import BaseModel

from thau.chat.agent import Agent, TextDelta, ToolFinished
from thau.chat.backends.base import Chunk, GenerationOptions
from thau.prompt_format import format_tool_call
from thau.tools.registry import Tool, ToolContext, ToolRegistry

TOKENS = 100_000
WORDS = ["el", "modelo", "responde", "con", "texto", "y", "llama", "a", "una", "herramienta"]


class Args(BaseModel):
    n: int


def make_stream(seed: int = 0) -> tuple[list[str], dict[int, int]]:
    """Chunks, and for each call number the index of the chunk that completes its body."""
    rng = random.Random(seed)
    parts: list[str] = []
    n_calls = size = 0
    while size < TOKENS * 2:
        if rng.random() < 0.02:
            part = format_tool_call("mark", {"n": n_calls})
            n_calls += 1
        else:
            part = rng.choice(WORDS) + " "
        parts.append(part)
        size += len(part)
    text = "".join(parts)
    chunks, pos = [], 0
    while len(chunks) < TOKENS and pos < len(text):
        step = rng.randint(1, 3)
        chunks.append(text[pos : pos + step])
        pos += step
    ends = []
    start = 0
    while (found := text.find('{"n":', start)) >= 0:
        ends.append(text.index("}", found) + 1)
        start = ends[-1]
    completes: dict[int, int] = {}
    call, seen = 0, 0
    for index, chunk in enumerate(chunks):
        seen += len(chunk)
        while call < len(ends) and ends[call] <= seen:
            completes[call] = index
            call += 1
    return chunks, completes


class StreamBackend:
    name, model = "bench", "thau-bench"

    def __init__(self, chunks: list[str]) -> None:
        self.chunks = chunks
        self.sent_at: list[float] = []
        self.used = False

    def describe(self) -> str:
        return "bench"

    def prefers_native_tools(self) -> bool:
        return False

    def stream_chat(self, messages: Any, *, tools: Any = None, options: Any) -> Iterator[Chunk]:
        if self.used:
            yield Chunk(text="done")
            return
        self.used = True
        now = time.perf_counter
        sent = self.sent_at
        for chunk in self.chunks:
            sent.append(now())
            yield Chunk(text=chunk)


def main() -> dict[str, Any]:
    chunks, completes = make_stream()
    started: dict[int, float] = {}

    def mark(args: Args, ctx: ToolContext) -> int:
        started[args.n] = time.perf_counter()
        return args.n

    registry = ToolRegistry([Tool("mark", "bench tool", Args, mark)])
    backend = StreamBackend(chunks)
    with tempfile.TemporaryDirectory() as tmp:
        agent = Agent(
            backend,
            registry,
            context=ToolContext(Path(tmp)),
            max_steps=2,
            options=GenerationOptions(),
        )
        t0 = time.perf_counter()
        calls = 0
        for event in agent.run_turn([], "bench"):
            if isinstance(event, ToolFinished):
                calls += 1
            elif not isinstance(event, TextDelta):
                pass
        elapsed = time.perf_counter() - t0
    latencies = sorted(
        (started[n] - backend.sent_at[idx]) * 1000 for n, idx in completes.items() if n in started
    )
    figures = {
        "tokens": len(chunks),
        "tool_calls": calls,
        "elapsed_s": round(elapsed, 4),
        "tokens_per_s": round(len(chunks) / elapsed),
        "target_tokens_per_s": 200_000,
        "dispatch_latency_ms_median": round(statistics.median(latencies), 4),
        "dispatch_latency_ms_p95": round(latencies[int(len(latencies) * 0.95)], 4),
        "dispatch_latency_ms_max": round(latencies[-1], 4),
        "target_dispatch_ms": 1.0,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
