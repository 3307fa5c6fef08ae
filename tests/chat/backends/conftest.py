"""Helpers of the backend tests: draining a stream and keeping what came before an error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from thau.chat.backends.base import Chunk
from thau.prompt_format import Message

HELLO: list[Message] = [
    {"role": "system", "content": "You are THAU."},
    {"role": "user", "content": "hola"},
]


@dataclass
class Drained:
    """What a stream gave before it ended or raised."""

    chunks: list[Chunk] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.chunks)

    @property
    def tool_calls(self) -> list[dict[str, object]]:
        return [call for c in self.chunks for call in c.tool_calls]

    @property
    def final(self) -> Chunk:
        (last,) = [c for c in self.chunks if c.done]
        return last


def _drain(stream: Iterator[Chunk]) -> Drained:
    out = Drained()
    try:
        for chunk in stream:
            out.chunks.append(chunk)
    except Exception as exc:
        out.error = exc
    return out


@pytest.fixture
def drain() -> Callable[[Iterator[Chunk]], Drained]:
    """``drain(backend.stream_chat(...))`` -> chunks, and the error if one was raised."""
    return _drain
