"""The ``generate_image`` tool: ask the vision server for an image and keep a local copy.

The server (``thau-vision serve``, see ``vision_server``) answers ``POST /vision/generate``
with ``{success, image_url: "/vision/image/<name>", seed, metadata}``; the image is then
fetched from ``image_url`` into ``<data dir>/images/<name>`` unless it is already there
(a server on the same machine may have written it there itself). ``THAU_VISION_API_KEY``,
when set, is sent as a bearer key (the server requires it when it was started with one).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import BaseModel, Field

from thau.errors import ToolError
from thau.tools.registry import Tool, ToolContext

DEFAULT_GENERATE_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 5.0
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")
START_HINT = (
    "Start it with `thau-vision serve` (install it with `pip install 'thau[vision]'`), "
    "or point THAU_VISION_URL (--api) at a running one."
)


ONLY_IF_ASKED = "Only when the person asks; left out, the server uses its model's default."


class GenerateImageArgs(BaseModel):
    """Arguments of ``generate_image``. Only ``prompt`` is needed: whatever else is left out
    (None) is not sent, so the vision server applies its model's own defaults (a distilled
    model wants 1-4 steps and no guidance, a standard one about 30 steps and 7.5)."""

    prompt: str = Field(
        min_length=1, max_length=2000, description="What to draw, written in English."
    )
    negative_prompt: str | None = Field(
        None, max_length=2000, description="What the image must not show, in English."
    )
    num_inference_steps: int | None = Field(
        None, ge=1, le=100, description=f"More steps, more detail. {ONLY_IF_ASKED}"
    )
    guidance_scale: float | None = Field(
        None, ge=0, le=20, description=f"How closely to follow the prompt. {ONLY_IF_ASKED}"
    )
    width: int | None = Field(
        None,
        ge=256,
        le=1024,
        multiple_of=8,
        description=f"Pixels, a multiple of 8. {ONLY_IF_ASKED}",
    )
    height: int | None = Field(
        None,
        ge=256,
        le=1024,
        multiple_of=8,
        description=f"Pixels, a multiple of 8. {ONLY_IF_ASKED}",
    )
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Same seed, same image.")

    def request_body(self) -> dict[str, Any]:
        """What is sent: the fields that were given (an empty negative prompt is none)."""
        body = self.model_dump(exclude_none=True)
        if not body.get("negative_prompt"):
            body.pop("negative_prompt", None)
        return body


def _detail(response: httpx.Response) -> str:
    """The reason an error answer gives (the vision server's ``error.message`` first)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        for key in ("detail", "error", "message"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:200]


def generate_timeout(env: Mapping[str, str]) -> float:
    """``THAU_VISION_TIMEOUT``: seconds one generation may take (default 600)."""
    raw = env.get("THAU_VISION_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_GENERATE_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ToolError(f"THAU_VISION_TIMEOUT={raw!r} is not a positive number of seconds.")
    return value


def _transport_error(base: str, exc: httpx.TransportError, limit: float) -> ToolError:
    if isinstance(exc, httpx.ConnectError):
        return ToolError(f"The vision server is not answering at {base}. {START_HINT}")
    if isinstance(exc, httpx.TimeoutException):
        return ToolError(
            f"The vision server at {base} did not answer in time (limit "
            f"{limit:g} s; set THAU_VISION_TIMEOUT to wait longer)."
        )
    return ToolError(f"Talking to the vision server at {base} failed: {exc}")


def _check(response: httpx.Response, base: str, what: str) -> None:
    if response.status_code != 200:
        response.read()  # a streamed answer: its body holds the reason
    if response.status_code == 401:
        raise ToolError(
            f"The vision server at {base} wants an API key: set THAU_VISION_API_KEY to the "
            "key it was started with."
        )
    if response.status_code == 429:
        raise ToolError(f"The vision server at {base} is busy: {_detail(response)}")
    if response.status_code == 503:
        raise ToolError(
            f"The vision server at {base} is not ready ({_detail(response) or 'HTTP 503'}). "
            f"Wait until its model has loaded, or restart it: {START_HINT}"
        )
    if response.status_code != 200:
        raise ToolError(
            f"The vision server could not {what} (HTTP {response.status_code}: "
            f"{_detail(response)})."
        )


def image_name(image_url: str) -> str:
    """The file name an ``image_url`` points at; never a path that leaves the images dir."""
    name = unquote(urlsplit(image_url).path.rstrip("/").rsplit("/", 1)[-1])
    if not _SAFE_NAME.fullmatch(name) or name.startswith(".."):
        raise ToolError(f"The vision server sent an image URL with an unsafe name: {image_url!r}")
    return name if "." in name else f"{name}.png"


def absolute_url(base: str, image_url: str) -> str:
    if urlsplit(image_url).scheme in ("http", "https"):
        return image_url
    return f"{base}/{image_url.lstrip('/')}"


def _download(client: httpx.Client, base: str, url: str, target: Path) -> None:
    """Stream ``url`` into ``target`` through a temporary file (no half-written images)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".download-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh, client.stream("GET", url) as response:
            _check(response, base, "send the image")
            for chunk in response.iter_bytes():
                fh.write(chunk)
        if os.path.getsize(tmp) == 0:
            raise ToolError(f"The vision server sent an empty image from {url}.")
        os.replace(tmp, target)
    except httpx.TransportError as exc:
        raise _transport_error(base, exc, client.timeout.read or 0.0) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def generate(args: GenerateImageArgs, context: ToolContext) -> dict[str, Any]:
    """Ask for the image, fetch it, return where it is."""
    base = context.vision_url.rstrip("/")
    timeout = httpx.Timeout(generate_timeout(context.settings()), connect=CONNECT_TIMEOUT_S)
    payload = args.request_body()
    headers = {}
    if key := context.settings().get("THAU_VISION_API_KEY", "").strip():
        headers["Authorization"] = f"Bearer {key}"
    with httpx.Client(timeout=timeout, headers=headers) as client:
        try:
            response = client.post(f"{base}/vision/generate", json=payload)
        except httpx.TransportError as exc:
            raise _transport_error(base, exc, client.timeout.read or 0.0) from None
        _check(response, base, "make the image")
        try:
            body = response.json()
        except ValueError:
            raise ToolError(f"The vision server at {base} answered something not JSON.") from None
        if not isinstance(body, dict) or not body.get("success"):
            reason = _detail(response) if isinstance(body, dict) else "unexpected answer"
            raise ToolError(f"The vision server could not make the image: {reason}")
        image_url = body.get("image_url")
        if not isinstance(image_url, str) or not image_url:
            raise ToolError("The vision server said success but sent no image_url.")
        url = absolute_url(base, image_url)
        path = context.data_dir / "images" / image_name(image_url)
        if not (path.is_file() and path.stat().st_size > 0):
            _download(client, base, url, path)
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    return {
        "image_url": url,
        "path": str(path),
        "seed": body.get("seed"),
        "width": metadata.get("width", args.width),
        "height": metadata.get("height", args.height),
        "metadata": metadata,
    }


def _tool_timeout(context: ToolContext) -> float:
    try:
        return generate_timeout(context.settings()) + 30
    except ToolError:  # reported by generate(), with its name
        return DEFAULT_GENERATE_TIMEOUT_S + 30


tool = Tool(
    name="generate_image",
    description=(
        "Create an image from an English text description and return where it was saved. "
        "Write the prompt in English even when the user writes in another language."
    ),
    args_model=GenerateImageArgs,
    run=generate,
    timeout=_tool_timeout,
)
