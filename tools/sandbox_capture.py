"""Bounded capture of a child's output: the head and the tail are kept, the middle counted."""

from __future__ import annotations


class StreamCapture:
    """Keeps the first and last ``limit // 2`` bytes of a stream, however long it gets."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit - limit // 2
        self.tail_limit = limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_limit:
            self.tail += chunk
            if len(self.tail) > 2 * self.tail_limit:  # trim now and then, not on every chunk
                del self.tail[: -self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > self.head_limit + self.tail_limit

    def text(self) -> str:
        """The kept bytes as text; a marker says how much was left out in the middle."""
        tail = bytes(self.tail[-self.tail_limit :]) if self.tail_limit else b""
        if not self.truncated:
            return (bytes(self.head) + tail).decode("utf-8", errors="replace")
        omitted = self.total - len(self.head) - len(tail)
        head = bytes(self.head).decode("utf-8", errors="replace")
        marker = f"\n[... {omitted} bytes omitted ...]\n"
        return head + marker + tail.decode("utf-8", errors="replace")
