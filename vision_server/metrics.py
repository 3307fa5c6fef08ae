"""Prometheus metrics; each app has its own registry so several apps can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

GENERATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class VisionMetrics:
    """The counters, gauges and histograms ``GET /metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "thau_vision_requests",
            "HTTP requests answered, by route and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.images = Counter(
            "thau_vision_images_generated", "Images generated", registry=self.registry
        )
        self.failures = Counter(
            "thau_vision_generation_failures", "Generations that raised", registry=self.registry
        )
        self.rejected = Counter(
            "thau_vision_rejected",
            "Generation requests refused before running, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.generation_seconds = Histogram(
            "thau_vision_generation_seconds",
            "Time the pipeline took per image",
            buckets=GENERATION_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "thau_vision_queue_depth", "Requests waiting for the pipeline", registry=self.registry
        )
        self.ready = Gauge(
            "thau_vision_ready", "1 when a model is loaded and ready", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
