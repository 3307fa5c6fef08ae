"""``thau-vision``: the command line of the vision server."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from thau.errors import ConfigError
from thau.http_security import is_loopback
from thau.vision.model_defaults import CPU_MODEL, FAMILY_NAMES
from thau.vision.schedulers import SCHEDULER_NAMES

log = logging.getLogger("thau.vision")


NO_MODEL_ADVICE = f"""\
thau-vision: no --model given. On a CPU, use a distilled model: SD-Turbo makes a 512x512
image in one step. Either let the server fetch it into the Hugging Face cache on first start:

    thau-vision serve --model {CPU_MODEL}

or fetch it once into a folder (the fp16 copies and the single-file checkpoint are not
needed) and serve the folder, which works offline:

    hf download {CPU_MODEL} --exclude "*.fp16.*" --exclude "sd_turbo*" \\
        --local-dir ~/models/sd-turbo
    thau-vision serve --model ~/models/sd-turbo

Other choices and their speed: docs/vision.md ("Models for a CPU")."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thau-vision",
        description="THAU's image-generation server (FastAPI + diffusers).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the HTTP server",
        description="Run the server. Each option can also come from a THAU_VISION_* variable "
        "or the [vision] table of config.toml; options given here win.",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--model", help="hub id, local diffusers folder, or a .safetensors/.ckpt file"
    )
    serve.add_argument(
        "--pipeline-config",
        help="diffusers folder or hub id with the configs of a single-file model",
    )
    serve.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    serve.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"])
    serve.add_argument("--scheduler", choices=SCHEDULER_NAMES, help="default scheduler")
    serve.add_argument(
        "--family",
        choices=["auto", *FAMILY_NAMES],
        help="defaults for requests that leave them out (default auto: read from the model)",
    )
    serve.add_argument("--default-steps", type=int, metavar="N", help="override the family's")
    serve.add_argument("--default-guidance", type=float, metavar="G", help="override the family's")
    serve.add_argument("--default-width", type=int, metavar="PX", help="override the model's")
    serve.add_argument("--default-height", type=int, metavar="PX", help="override the model's")
    serve.add_argument("--images-dir", help="where images are saved (default <data dir>/images)")
    serve.add_argument("--rate-limit", type=int, help="generation requests/minute/client, 0: off")
    serve.add_argument("--queue-size", type=int, help="requests that may wait (default 4)")
    serve.add_argument("--max-images", type=int, help="most images per request (default 4)")
    serve.add_argument("--cors-origins", help="comma-separated allowed origins (default: off)")
    serve.add_argument("--threads", type=int, help="torch CPU threads")
    serve.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2  # argparse already refused anything else


def serve(args: argparse.Namespace) -> int:
    """Load the settings, build the app and run uvicorn until interrupted."""
    import uvicorn

    from thau.vision.app import create_app
    from thau.vision.settings import load_settings

    overrides = {key: value for key, value in vars(args).items() if key != "command"}
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"thau-vision: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    if not is_loopback(settings.host) and settings.api_key is None:
        log.warning(
            "binding %s without an API key: anyone who can reach this address can generate "
            "images. Set THAU_VISION_API_KEY.",
            settings.host,
        )
    if not settings.model:
        log.warning("no model configured: /health reports not ready and generation answers 503")
        print(NO_MODEL_ADVICE, file=sys.stderr)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        server_header=False,
    )
    return 0
