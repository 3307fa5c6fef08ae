"""Throughput and latency of ``thau-vision serve`` (tiny model) under concurrent clients.

Starts ``python -m thau.vision serve`` on 127.0.0.1 with the tiny pipeline, then runs
``--clients`` clients that each send requests back to back until ``--requests`` have been
sent. The queue is large enough that none is refused; generation itself is serialised, so
throughput is bounded by the pipeline and latency grows with the number of clients.
Prints one JSON object.

    python bench/vision_load.py [--clients 8] [--requests 48] [--size 256] [--steps 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def run_clients(base: str, clients: int, total: int, body: dict) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = 0

    async def client() -> None:
        nonlocal sent
        async with httpx.AsyncClient(base_url=base, timeout=600) as http:
            while sent < total:
                sent += 1
                seed = sent
                started = time.perf_counter()
                response = await http.post("/vision/generate", json={**body, "seed": seed})
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {"latencies": latencies, "statuses": statuses, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    args = parser.parse_args()

    import httpx

    from thau.vision.tiny import save_tiny_pipeline

    work = Path(tempfile.mkdtemp(prefix="thau-vision-load-"))
    model_dir = save_tiny_pipeline(work / "tiny")
    port = free_port()
    env = {
        **os.environ,
        "THAU_DATA_DIR": str(work / "data"),
        "THAU_CONFIG_DIR": str(work / "config"),
        "THAU_VISION_RATE_LIMIT": "0",
        "THAU_VISION_QUEUE_SIZE": str(args.clients * 2),
        "THAU_VISION_THREADS": str(args.threads),
        "THAU_VISION_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "thau.vision",
            "serve",
            "--port",
            str(port),
            "--model",
            str(model_dir),
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            try:
                if httpx.get(f"{base}/health", timeout=5).json()["ready"]:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        body = {
            "prompt": "a red fox",
            "width": args.size,
            "height": args.size,
            "num_inference_steps": args.steps,
        }
        httpx.post(f"{base}/vision/generate", json=body, timeout=300)  # warm-up
        result = asyncio.run(run_clients(base, args.clients, args.requests, body))
        stats = httpx.get(f"{base}/vision/stats", timeout=10).json()
    finally:
        server.terminate()
        server.wait(timeout=30)

    latencies = result["latencies"]
    print(
        json.dumps(
            {
                "benchmark": "vision_load",
                "clients": args.clients,
                "requests": len(latencies),
                "image": f"{args.size}x{args.size}",
                "steps": args.steps,
                "statuses": {str(code): count for code, count in result["statuses"].items()},
                "wall_s": round(result["wall_s"], 2),
                "throughput_images_per_s": round(len(latencies) / result["wall_s"], 3),
                "latency_s": {
                    "p50": round(percentile(latencies, 50), 3),
                    "p90": round(percentile(latencies, 90), 3),
                    "p99": round(percentile(latencies, 99), 3),
                    "max": round(max(latencies), 3),
                    "mean": round(statistics.fmean(latencies), 3),
                },
                "server_average_generation_s": stats["average_generation_s"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
