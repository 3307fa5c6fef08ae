"""A bounded queue in front of one worker thread: diffusers pipelines are not thread-safe."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from thau.vision.errors import QueueFull

T = TypeVar("T")


class GenerationQueue:
    """Runs jobs one at a time off the event loop; refuses work past ``capacity`` waiting jobs.

    Only the event loop's thread calls :meth:`submit`, so the counters need no lock.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight = 0  # waiting + running
        self._recent_durations: deque[float] = deque(maxlen=20)

    @property
    def depth(self) -> int:
        """Jobs waiting behind the running one."""
        return max(0, self._in_flight - 1)

    @property
    def running(self) -> bool:
        return self._in_flight > 0

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the recent mean job time times the backlog."""
        mean = (
            sum(self._recent_durations) / len(self._recent_durations)
            if self._recent_durations
            else 1.0
        )
        return max(1, math.ceil(mean * max(1, self._in_flight - self.capacity)))

    async def submit(self, job: Callable[[], T]) -> T:
        """Run ``job`` on the worker thread and return its result; raises :class:`QueueFull`."""
        if self._in_flight >= self.capacity + 1:
            raise QueueFull(
                f"the generation queue is full ({self.capacity} waiting); retry later",
                retry_after=self.retry_after(),
            )
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thau-vision")
        self._in_flight += 1
        future: Future[T] = self._executor.submit(self._timed, job)
        # The place is given back when the job ends, not when the waiting request goes away.
        future.add_done_callback(lambda _: _call_soon(loop, self._release))
        return await asyncio.wrap_future(future)

    def _timed(self, job: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return job()
        finally:
            self._recent_durations.append(time.perf_counter() - started)

    def _release(self) -> None:
        self._in_flight -= 1

    def shutdown(self) -> None:
        """Drop waiting jobs; the running one finishes in the background."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop may close while a job ends
        loop.call_soon_threadsafe(callback)
