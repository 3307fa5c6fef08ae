"""The schedule: a training cycle every ``auto_train_interval_hours``, in a thread."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thau.train.service import TrainingService


class Scheduler:
    """Runs a cycle every ``auto_train_interval_hours`` in a background thread."""

    def __init__(self, service: TrainingService, interval_s: float | None = None) -> None:
        self.service = service
        self.interval_s = interval_s or service.config.auto_train_interval_hours * 3600
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self.next_run: float | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def busy(self) -> bool:
        """Whether a cycle runs now (a forced one here, or any in another process)."""
        worker = self._worker is not None and self._worker.is_alive()
        return worker or self.service.active_run() is not None

    def start(self) -> bool:
        """Start the schedule; ``False`` when it is already running."""
        if self.running:
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="thau-train-schedule", daemon=True)
        self._thread.start()
        return True

    def stop(self, *, cancel: bool = False, timeout: float = 10.0) -> bool:
        """Stop the schedule (with ``cancel``, a running cycle too); ``False`` if not running."""
        was = self.running
        self._stop.set()
        if cancel:
            self.service.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
        self.next_run = None
        return was

    def trigger(self) -> bool:
        """Run a forced cycle now in the background; ``False`` when one is running."""
        if self.busy:
            return False
        self._worker = threading.Thread(
            target=self.service.run_cycle, kwargs={"force": True}, daemon=True
        )
        self._worker.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a triggered cycle to end."""
        if self._worker is not None:
            self._worker.join(timeout)

    def _loop(self) -> None:
        while True:
            self.next_run = time.time() + self.interval_s
            if self._stop.wait(self.interval_s):
                return
            try:
                self.service.run_cycle()
            except Exception as exc:  # keep the schedule alive; record what went wrong
                self.service.record({"status": "failed", "reason": f"scheduler: {exc}"})
