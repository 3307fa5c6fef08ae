"""Any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio) over httpx.

``POST {host}/chat/completions`` with ``stream: true``; the reply is read as
server-sent events (``data:`` lines, ending with ``data: [DONE]``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from thau.chat.backends.base import Chunk, GenerationOptions, is_thau_model
from thau.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ModelNotFound,
    StreamInterrupted,
)
from thau.prompt_format import Message


def openai_messages(messages: Sequence[Message], *, native: bool) -> list[dict[str, Any]]:
    """Messages in OpenAI's shape.

    With ``native``, assistant tool calls become ``tool_calls`` (ids made up when
    missing) and each tool result carries the ``tool_call_id`` of the call it answers,
    matched by tool name; a result that answers no call goes as a ``user`` message, and
    a call that got no result is left out (servers refuse unanswered calls).
    """
    if not native:
        return [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (tool name, call id) not answered yet
    answered: set[str] = set()
    for index, message in enumerate(messages):
        role = message["role"]
        content = message.get("content") or ""
        if role == "tool":
            name = message.get("tool_name")
            match = next((p for p in pending if name in (None, p[0])), None)
            if match is None:
                out.append({"role": "user", "content": content})
                continue
            pending.remove(match)
            answered.add(match[1])
            out.append({"role": "tool", "tool_call_id": match[1], "content": content})
            continue
        pending = []
        item: dict[str, Any] = {"role": role, "content": content}
        calls = message.get("tool_calls") if role == "assistant" else None
        if calls:
            item["tool_calls"] = []
            for number, call in enumerate(calls):
                call_id = str(call.get("id") or f"call_{index}_{number}")
                arguments = call.get("arguments") or {}
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments, ensure_ascii=False)
                function = {"name": call["name"], "arguments": arguments}
                item["tool_calls"].append({"id": call_id, "type": "function", "function": function})
                pending.append((call["name"], call_id))
        out.append(item)
    for item in out:
        if "tool_calls" in item:
            item["tool_calls"] = [c for c in item["tool_calls"] if c["id"] in answered]
            if not item["tool_calls"]:
                del item["tool_calls"]
    return out


def _error_text(response: httpx.Response) -> str:
    """The server's own error message, whatever shape it came in."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return str(error)
    return json.dumps(body)[:500]


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    # an event without its blank line at the end of the stream is incomplete: dropped


class OpenAIBackend:
    """Streams chat replies from an OpenAI-compatible ``/chat/completions``."""

    name = "openai"
    probe_timeout = 1.0

    def __init__(self, host: str, model: str, api_key: str | None, timeout: float) -> None:
        host = host.rstrip("/")
        self.host = host if "://" in host else f"http://{host}"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)
        self._stream_options = True  # turned off for servers that refuse it

    def describe(self) -> str:
        return f"OpenAI-compatible server at {self.host} ({self.model})"

    def prefers_native_tools(self) -> bool:
        """THAU models speak the text protocol; other models get the ``tools`` API."""
        return not is_thau_model(self.model)

    # -- probes ---------------------------------------------------------------------
    def _model_ids(self, timeout: float) -> list[str]:
        response = self.client.get(f"{self.host}/models", timeout=timeout)
        response.raise_for_status()
        return [str(m.get("id")) for m in response.json().get("data", [])]

    def is_available(self) -> bool:
        """True when the server answers ``GET /models`` at all."""
        try:
            self.client.get(f"{self.host}/models", timeout=self.probe_timeout)
        except httpx.HTTPError:
            return False
        return True

    def has_model(self) -> bool:
        try:
            return self.model in self._model_ids(min(self.timeout, 10.0))
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    # -- chat -----------------------------------------------------------------------
    def _body(
        self,
        messages: Sequence[Message],
        tools: list[dict[str, Any]] | None,
        options: GenerationOptions,
    ) -> dict[str, Any]:
        native = tools is not None or options.native_messages
        body: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(messages, native=native),
            "stream": True,
            "temperature": options.temperature,
        }
        if self._stream_options:
            body["stream_options"] = {"include_usage": True}
        if options.max_tokens is not None:
            body["max_tokens"] = options.max_tokens
        if options.stop:
            body["stop"] = list(options.stop)
        if options.seed is not None:
            body["seed"] = options.seed
        if tools:
            body["tools"] = tools
        return body

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        options: GenerationOptions,
    ) -> Iterator[Chunk]:
        """Stream the reply: text chunks, then the tool calls (if any), then the stats."""
        start = time.perf_counter()
        url = f"{self.host}/chat/completions"
        try:
            for attempt in range(2):
                body = self._body(messages, tools, options)
                with self.client.stream("POST", url, json=body) as response:
                    if response.status_code >= 400:
                        response.read()
                        text = _error_text(response)
                        retry = response.status_code == 400 and "stream_options" in text
                        if retry and attempt == 0 and self._stream_options:
                            self._stream_options = False
                            continue
                        raise self._http_error(response.status_code, text)
                    yield from self._read(response, start)
                    return
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise self._unavailable() from exc
            raise BackendTimeout(
                f"The server at {self.host} did not answer within {self.timeout:g} s. "
                "Raise the limit with THAU_TIMEOUT, e.g. THAU_TIMEOUT=300."
            ) from exc
        except httpx.ConnectError as exc:
            raise self._unavailable() from exc
        except httpx.TransportError as exc:
            raise StreamInterrupted(
                f"The connection to {self.host} broke off mid-reply ({exc}). Try again."
            ) from exc

    def _read(self, response: httpx.Response, start: float) -> Iterator[Chunk]:
        calls: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] = {}
        finish: str | None = None
        complete = False
        for data in _sse_data(response.iter_lines()):
            if data.strip() == "[DONE]":
                complete = True
                break
            try:
                event = json.loads(data)
            except ValueError as exc:
                raise StreamInterrupted(
                    f"The server at {self.host} sent an event that is not JSON mid-reply "
                    f"({data[:80]!r}). Try again."
                ) from exc
            if not isinstance(event, dict):
                continue
            if event.get("error"):
                error = event["error"]
                message = error.get("message", error) if isinstance(error, dict) else error
                raise StreamInterrupted(f"The server at {self.host} stopped mid-reply: {message}")
            if isinstance(event.get("usage"), dict):
                usage = event["usage"]
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield Chunk(text=delta["content"])
                for fragment in delta.get("tool_calls") or []:
                    _add_fragment(calls, fragment)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        if not complete and finish is None:
            raise StreamInterrupted(
                f"The server at {self.host} ended the reply before it was complete "
                "(no finish_reason, no [DONE]). Try again."
            )
        if calls:
            yield Chunk(tool_calls=[_finished_call(calls[i]) for i in sorted(calls)])
        stats: dict[str, Any] = {"total_duration": int((time.perf_counter() - start) * 1e9)}
        if "prompt_tokens" in usage:
            stats["prompt_eval_count"] = usage["prompt_tokens"]
        if "completion_tokens" in usage:
            stats["eval_count"] = usage["completion_tokens"]
        if finish:
            stats["done_reason"] = finish
        yield Chunk(done=True, stats=stats)

    # -- errors ---------------------------------------------------------------------
    def _unavailable(self) -> BackendUnavailable:
        return BackendUnavailable(
            f"No OpenAI-compatible server is answering at {self.host}. Start it (vLLM, "
            "llama.cpp server, LM Studio) or check --host; or run with --backend embedded."
        )

    def _http_error(self, status: int, text: str) -> BackendError:
        host, model = self.host, self.model
        if status in (401, 403):
            if self.api_key:
                return BackendError(
                    f"The server at {host} refused the API key ({status}: {text}). "
                    "Set THAU_API_KEY to a valid key."
                )
            return BackendError(
                f"The server at {host} needs an API key ({status}: {text}). Set THAU_API_KEY."
            )
        if status == 404 and "model" in text.lower():
            return ModelNotFound(
                f"The server at {host} has no model '{model}' ({text}). See what it serves "
                f"with `curl {host}/models`, then pass --model."
            )
        if status == 404:
            return BackendError(
                f"The server at {host} has no /chat/completions ({text}). Is --host the "
                "OpenAI-compatible base URL (usually ending in /v1)?"
            )
        return BackendError(f"The server at {host} answered {status}: {text}")


def _add_fragment(calls: dict[int, dict[str, Any]], fragment: dict[str, Any]) -> None:
    """Merge one streamed ``delta.tool_calls`` fragment into the calls, by index."""
    index = fragment.get("index")
    if not isinstance(index, int):
        known = {c["id"] for c in calls.values()}
        new = fragment.get("id") and fragment["id"] not in known
        index = len(calls) if new or not calls else max(calls)
    call = calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
    if fragment.get("id"):
        call["id"] = fragment["id"]
    function = fragment.get("function") or {}
    if function.get("name") and not call["name"]:
        call["name"] = function["name"]
    if isinstance(function.get("arguments"), str):
        call["arguments"] += function["arguments"]


def _finished_call(call: dict[str, Any]) -> dict[str, Any]:
    """``{name, arguments, id}``; arguments that are not a JSON object stay raw."""
    text = call["arguments"].strip()
    try:
        arguments = json.loads(text) if text else {}
    except ValueError:
        arguments = {"__raw__": call["arguments"]}
    if not isinstance(arguments, dict):
        arguments = {"__raw__": call["arguments"]}
    return {"name": call["name"], "arguments": arguments, "id": call["id"]}
