"""Server overhead: the tiny pipeline called directly vs. through ``POST /vision/generate``.

Both paths use the same pipeline object; the server also validates, queues, runs the job on
its worker thread, writes the PNG (with metadata) and the JSON sidecar, and answers over HTTP.
Runs are interleaved in pairs; the figure is the median of the per-pair ratios (robust to
drift on a shared machine), with the ratio of the two medians beside it. Prints one JSON
object.

    python bench/vision_overhead.py [--runs 12] [--size 256] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "a red fox in the snow"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import httpx
    import torch
    import uvicorn

    from thau.vision import VisionSettings, create_app
    from thau.vision.loading import load_pipeline
    from thau.vision.tiny import save_tiny_pipeline

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="thau-vision-bench-"))
    model_dir = save_tiny_pipeline(work / "tiny")
    settings = VisionSettings(
        model=str(model_dir),
        images_dir=work / "images",
        rate_limit=0,
        threads=args.threads,
        log_level="warning",
    )
    pipeline = load_pipeline(settings).pipeline  # the same loading path as the server's

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, pipeline), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def direct(seed: int) -> float:
        started = time.perf_counter()
        with torch.inference_mode():  # as the server runs it: compare like with like
            pipeline(
                PROMPT,
                num_inference_steps=args.steps,
                guidance_scale=7.5,
                width=args.size,
                height=args.size,
                generator=torch.Generator("cpu").manual_seed(seed),
            )
        return time.perf_counter() - started

    body = {
        "prompt": PROMPT,
        "num_inference_steps": args.steps,
        "guidance_scale": 7.5,
        "width": args.size,
        "height": args.size,
    }
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:

        def served(seed: int) -> float:
            started = time.perf_counter()
            response = client.post("/vision/generate", json={**body, "seed": seed})
            response.raise_for_status()
            return time.perf_counter() - started

        direct(0), served(0)  # warm-up: first calls allocate
        direct_s, served_s = [], []
        for run in range(args.runs):
            if run % 2:  # alternate the order so drift hits both alike
                direct_s.append(direct(run + 1))
                served_s.append(served(run + 1))
            else:
                served_s.append(served(run + 1))
                direct_s.append(direct(run + 1))
    server.should_exit = True
    thread.join(timeout=10)

    direct_median = statistics.median(direct_s)
    served_median = statistics.median(served_s)
    ratio = statistics.median(s / d for s, d in zip(served_s, direct_s, strict=True))
    print(
        json.dumps(
            {
                "benchmark": "vision_overhead",
                "image": f"{args.size}x{args.size}",
                "steps": args.steps,
                "runs": args.runs,
                "torch_threads": args.threads,
                "direct_median_s": round(direct_median, 4),
                "server_median_s": round(served_median, 4),
                "overhead_median_ms": round((served_median - direct_median) * 1000, 1),
                "ratio": round(ratio, 3),
                "ratio_of_medians": round(served_median / direct_median, 3),
                "ratio_limit": 1.10,
                "within_limit": ratio <= 1.10,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
