"""An Ollama server, through the official ``ollama`` client (``/api/chat`` NDJSON stream)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import ollama

from thau.chat.backends.base import Chunk, GenerationOptions, is_thau_model, wire_messages
from thau.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ModelNotFound,
    StreamInterrupted,
)
from thau.prompt_format import Message

STAT_KEYS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


def _tagged(name: str) -> str:
    """``name`` with Ollama's implicit ``:latest`` tag."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class OllamaBackend:
    """Streams chat replies from an Ollama server."""

    name = "ollama"
    probe_timeout = 1.0
    """Seconds ``is_available`` waits for an answer."""

    def __init__(self, host: str, model: str, timeout: float) -> None:
        self.host = host
        self.model = model
        self.timeout = timeout
        self.client = ollama.Client(host=host, timeout=timeout)
        self._native: bool | None = None

    def describe(self) -> str:
        return f"Ollama at {self.host} ({self.model})"

    # -- probes ---------------------------------------------------------------------
    def _probe(self, timeout: float) -> ollama.Client:
        return ollama.Client(host=self.host, timeout=timeout)

    def _model_names(self, timeout: float) -> list[str]:
        with self._probe(timeout) as client:
            return [m.model or "" for m in client.list().models]

    def is_available(self) -> bool:
        """True when an Ollama server answers ``/api/tags`` within ``probe_timeout``."""
        try:
            self._model_names(self.probe_timeout)
        except (ollama.ResponseError, ConnectionError, httpx.HTTPError, ValueError):
            return False
        return True

    def has_model(self) -> bool:
        """True when the server lists the model (``name`` means ``name:latest``)."""
        try:
            names = self._model_names(min(self.timeout, 10.0))
        except (ollama.ResponseError, ConnectionError, httpx.HTTPError, ValueError):
            return False
        return _tagged(self.model) in {_tagged(n) for n in names}

    def prefers_native_tools(self) -> bool:
        """Native tools when the model's capabilities include ``tools`` (not for THAU)."""
        if is_thau_model(self.model):
            return False
        if self._native is None:
            try:
                with self._probe(min(self.timeout, 10.0)) as client:
                    capabilities = client.show(self.model).capabilities or []
                self._native = "tools" in capabilities
            except (ollama.ResponseError, ConnectionError, httpx.HTTPError, ValueError):
                return False
        return self._native

    # -- chat -----------------------------------------------------------------------
    def _options(self, options: GenerationOptions) -> dict[str, Any]:
        sent: dict[str, Any] = {"temperature": options.temperature, "num_ctx": options.num_ctx}
        if options.stop:  # an empty list would wipe the Modelfile's stop sequences
            sent["stop"] = list(options.stop)
        if options.seed is not None:
            sent["seed"] = options.seed
        if options.max_tokens is not None:
            sent["num_predict"] = options.max_tokens
        return sent

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        options: GenerationOptions,
    ) -> Iterator[Chunk]:
        """Stream the reply: text chunks, native tool calls, then the final stats."""
        native = tools is not None or options.native_messages
        try:
            stream = self.client.chat(
                self.model,
                messages=wire_messages(messages, native=native),
                tools=tools,
                stream=True,
                options=self._options(options),
                keep_alive=options.keep_alive,
            )
        except ValueError as exc:  # the request itself did not validate
            raise BackendError(f"Could not build the request for Ollama: {exc}") from exc
        done = False
        try:
            for part in stream:
                message = part.message
                if message is not None and message.content:
                    yield Chunk(text=message.content)
                if message is not None and message.tool_calls:
                    calls = [
                        {"name": c.function.name, "arguments": dict(c.function.arguments or {})}
                        for c in message.tool_calls
                    ]
                    yield Chunk(tool_calls=calls)
                if part.done:
                    done = True
                    stats: dict[str, Any] = {k: getattr(part, k) for k in STAT_KEYS}
                    stats = {k: v for k, v in stats.items() if v is not None}
                    if part.done_reason:
                        stats["done_reason"] = part.done_reason
                    yield Chunk(done=True, stats=stats)
        except (ollama.ResponseError, ConnectionError, httpx.HTTPError, ValueError) as exc:
            raise self._translate(exc) from exc
        finally:
            stream.close()
        if not done:
            raise StreamInterrupted(
                f"Ollama at {self.host} ended the reply without its final line; "
                "the server may have crashed or restarted. Try again."
            )

    # -- errors ---------------------------------------------------------------------
    def _translate(self, exc: Exception) -> BackendError:
        """The THAU error for what the client raised."""
        host, model = self.host, self.model
        if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError | ConnectionError):
            return BackendUnavailable(
                f"Ollama is not answering at {host}. "
                "Start it with `ollama serve`, or run with --backend embedded."
            )
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeout(
                f"Ollama at {host} did not answer within {self.timeout:g} s (a large model "
                "can take a while to load). Raise the limit with THAU_TIMEOUT, e.g. "
                "THAU_TIMEOUT=300."
            )
        if isinstance(exc, httpx.TransportError):
            return StreamInterrupted(
                f"The connection to Ollama at {host} broke off mid-reply ({exc}). Try again."
            )
        if isinstance(exc, ollama.ResponseError):
            text = str(exc.error)
            lowered = text.lower()
            if exc.status_code == 404 and "model" in lowered and "not found" in lowered:
                how = f"Pull it with `ollama pull {model}`"
                if is_thau_model(model):
                    how += ", or build and register it with `thau-export ollama`"
                return ModelNotFound(
                    f"Ollama at {host} has no model '{model}'. {how}, or pass --model."
                )
            if exc.status_code == 404:
                return BackendError(
                    f"The server at {host} answered 404 to /api/chat: it does not look like "
                    "Ollama. Check --host (an OpenAI-compatible server needs --backend openai)."
                )
            if exc.status_code == 400 and "does not support tools" in lowered:
                return BackendError(
                    f"The Ollama model '{model}' does not support native tool calls. "
                    "Run with --tool-mode text."
                )
            if exc.status_code == -1:  # an error object inside the stream
                return StreamInterrupted(f"Ollama at {host} stopped mid-reply: {text}")
            return BackendError(f"Ollama at {host} answered {exc.status_code}: {text}")
        if isinstance(exc, ValueError):  # a line that is not JSON, or not a chat chunk
            return StreamInterrupted(
                f"Ollama at {host} sent a malformed line mid-reply ({exc}). Try again; "
                "if it keeps happening, check the server's log."
            )
        return BackendError(f"Ollama at {host} failed: {exc}")
