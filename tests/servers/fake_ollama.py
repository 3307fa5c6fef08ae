"""A fake Ollama server that follows Ollama's documented REST API (docs/api.md).

Endpoints: ``GET /``, ``GET /api/version``, ``GET /api/tags``, ``POST /api/show`` and
``POST /api/chat``, which streams NDJSON (``application/x-ndjson``): one
``{"model", "created_at", "message": {"role": "assistant", "content"}, "done": false}``
object per line, then a final ``"done": true`` object with ``done_reason`` and the
timing counters. Errors are ``{"error": "..."}`` with the documented status codes.

Native tool calls arrive in a ``message.tool_calls`` chunk. Like the real server, it can
also leave a call it did not recognise as text in ``content``, with no ``tool_calls``
(``Reply.calls_as_text``): what a model does when it writes its own trained format.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from tests.servers.base import Exchange, FakeServer, Recorded

CREATED_AT = "2025-06-01T12:00:00.000000000Z"
CHATML_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)


def written_call(call: dict[str, Any], style: str) -> str:
    """A call as a model that is not THAU's writes it in its text: ``hermes``
    (``<tool_call>...</tool_call>``, Qwen), ``json`` (the bare object, Llama) or
    ``fenced`` (that object in a ```` ```json ```` block)."""
    body = json.dumps({"name": call["name"], "arguments": call["arguments"]})
    if style == "hermes":
        return f"<tool_call>\n{body}\n</tool_call>"
    if style == "fenced":
        return f"```json\n{body}\n```"
    if style == "json":
        return body
    raise ValueError(f"unknown call style {style!r}: use hermes, json or fenced")


def full_name(name: str) -> str:
    """``name`` with Ollama's implicit ``:latest`` tag."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class FakeOllama(FakeServer):
    """Ollama on 127.0.0.1; starts with ``thau-135m:latest`` and ``qwen2.5:0.5b``."""

    chat_path = "/api/chat"
    version = "0.12.6"

    def __init__(self) -> None:
        super().__init__()
        self.models: dict[str, dict[str, Any]] = {}
        self.add_model("thau-135m:latest", capabilities=["completion"], parameter_size="135M")
        self.add_model(
            "qwen2.5:0.5b",
            capabilities=["completion", "tools"],
            family="qwen2",
            parameter_size="494.03M",
        )

    # -- models ---------------------------------------------------------------------
    def add_model(
        self,
        name: str,
        capabilities: list[str] | None = None,
        *,
        family: str = "llama",
        parameter_size: str = "135M",
        template: str = CHATML_TEMPLATE,
    ) -> None:
        name = full_name(name)
        self.models[name] = {
            "name": name,
            "capabilities": list(capabilities or ["completion"]),
            "family": family,
            "parameter_size": parameter_size,
            "template": template,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
        }

    def remove_model(self, name: str) -> None:
        del self.models[full_name(name)]

    def _find(self, name: Any) -> dict[str, Any] | None:
        return self.models.get(full_name(name)) if isinstance(name, str) and name else None

    @staticmethod
    def _details(model: dict[str, Any]) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": model["family"],
            "families": [model["family"]],
            "parameter_size": model["parameter_size"],
            "quantization_level": "Q8_0",
        }

    # -- routes ---------------------------------------------------------------------
    def send_error(self, ex: Exchange, status: int, message: str) -> None:
        if status == 404 and message == "404 page not found":
            return ex.send_text(404, message)  # what Ollama's router says
        ex.send_json(status, {"error": message})

    def route(self, request: Recorded, ex: Exchange) -> None:
        method, path = request.method, request.path
        if method in ("GET", "HEAD") and path == "/":
            return ex.send_text(200, "Ollama is running")
        if method == "GET" and path == "/api/version":
            return ex.send_json(200, {"version": self.version})
        if method == "GET" and path == "/api/tags":
            return ex.send_json(200, {"models": [self._tag(m) for m in self.models.values()]})
        if method == "POST" and path == "/api/show":
            return self._show(request, ex)
        if method == "POST" and path == "/api/chat":
            return self._chat(request, ex)
        self.send_error(ex, 404, "404 page not found")

    def _tag(self, model: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": model["name"],
            "model": model["name"],
            "modified_at": CREATED_AT,
            "size": 145_000_000,
            "digest": model["digest"],
            "details": self._details(model),
        }

    def _show(self, request: Recorded, ex: Exchange) -> None:
        body = request.json if isinstance(request.json, dict) else {}
        name = body.get("model") or body.get("name")
        model = self._find(name)
        if model is None:
            return ex.send_json(404, {"error": f"model '{name}' not found"})
        ex.send_json(
            200,
            {
                "modelfile": f"FROM {model['name']}\n",
                "parameters": 'stop "<|im_end|>"',
                "template": model["template"],
                "details": self._details(model),
                "model_info": {"general.architecture": model["family"]},
                "capabilities": model["capabilities"],
                "modified_at": CREATED_AT,
            },
        )

    # -- chat -----------------------------------------------------------------------
    def _chat(self, request: Recorded, ex: Exchange) -> None:
        body = request.json
        if not isinstance(body, dict):
            return ex.send_json(400, {"error": "invalid request body"})
        name = body.get("model")
        if not name:
            return ex.send_json(400, {"error": "model is required"})
        model = self._find(name)
        if model is None:
            error = f'model "{name}" not found, try pulling it first'
            return ex.send_json(404, {"error": error})
        if body.get("tools") and "tools" not in model["capabilities"]:
            error = f"registry.ollama.ai/library/{model['name']} does not support tools"
            return ex.send_json(400, {"error": error})
        reply = self.next_reply(request)
        if not self.wait(reply.delay):
            return ex.cut()
        error_reply = reply.http_error()
        if error_reply is not None:
            return self.send_error(ex, *error_reply)
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        final = {
            "model": name,
            "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": reply.done_reason or "stop",
            "total_duration": 123_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": prompt_words,
            "prompt_eval_duration": 20_000_000,
            "eval_count": len(reply.text) + len(reply.tool_calls or []),
            "eval_duration": 100_000_000,
        }
        calls = [self._tool_call(c) for c in reply.tool_calls or []]
        if reply.calls_as_text and calls:
            written = [written_call(c["function"], reply.calls_as_text) for c in calls]
            reply = replace(reply, text=[*reply.text, *written], tool_calls=None)
            calls = []
        if body.get("stream", True) is False:
            final["message"] = {"role": "assistant", "content": "".join(reply.text)}
            if calls:
                final["message"]["tool_calls"] = calls
            return ex.send_json(200, final)
        messages = [{"role": "assistant", "content": text} for text in reply.text]
        if calls:
            messages.append({"role": "assistant", "content": "", "tool_calls": calls})
        pieces = [
            self._line({"model": name, "created_at": CREATED_AT, "message": m, "done": False})
            for m in messages
        ]
        message = reply.error or "an error was encountered while running the model"
        self.stream(
            ex,
            reply,
            content_type="application/x-ndjson",
            pieces=pieces,
            tail=[self._line(final)],
            malformed=b'{"model": "' + name.encode() + b'", "message": {"role": "assist\n',
            stream_error=self._line({"error": message}),
        )

    @staticmethod
    def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
        arguments = call.get("arguments") or {}
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        return {"function": {"name": call["name"], "arguments": arguments}}

    @staticmethod
    def _line(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False).encode() + b"\n"

    # -- convenience ----------------------------------------------------------------
    @property
    def chat_requests(self) -> list[Any]:
        """JSON bodies of the ``/api/chat`` requests, in order."""
        return super().chat_requests
