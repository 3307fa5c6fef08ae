"""A fake OpenAI-compatible server that follows OpenAI's Chat Completions API reference.

Endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions``. Streaming answers are
server-sent events (``text/event-stream``): ``data: {chat.completion.chunk}`` events with
``choices[0].delta.content`` or ``delta.tool_calls`` fragments (``index``, ``id``,
``function.name``, then ``function.arguments`` pieces), a chunk with ``finish_reason``,
a usage chunk when ``stream_options.include_usage`` is set, and ``data: [DONE]``.
Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from typing import Any

from tests.servers.base import Exchange, FakeServer, Recorded

CREATED = 1_748_779_200
_ERROR_TYPES = {401: "invalid_request_error", 404: "invalid_request_error"}


class FakeOpenAI(FakeServer):
    """vLLM / llama.cpp server / LM Studio as a client sees them; ``.url`` ends in /v1."""

    chat_path = "/v1/chat/completions"

    def __init__(
        self,
        api_key: str | None = None,
        models: tuple[str, ...] = ("thau-135m", "qwen2.5-0.5b-instruct"),
        strict_tool_messages: bool = False,
        accepts_stream_options: bool = True,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.models = list(models)
        self.strict_tool_messages = strict_tool_messages
        self.accepts_stream_options = accepts_stream_options
        self._completions = 0

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    # -- errors ---------------------------------------------------------------------
    def send_error(
        self,
        ex: Exchange,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        error = {"message": message, "type": kind, "param": param, "code": code}
        ex.send_json(status, {"error": error})

    def _authorized(self, request: Recorded, ex: Exchange) -> bool:
        if self.api_key is None:
            return True
        given = request.headers.get("authorization", "")
        if given == f"Bearer {self.api_key}":
            return True
        if given:
            key = given.removeprefix("Bearer ")
            message = f"Incorrect API key provided: {key[:3]}***. You can find your API key "
            message += "at https://platform.openai.com/account/api-keys."
        else:
            message = "You didn't provide an API key. You need to provide your API key in an "
            message += "Authorization header using Bearer auth (Authorization: Bearer YOUR_KEY)."
        self.send_error(ex, 401, message, code="invalid_api_key")
        return False

    # -- routes ---------------------------------------------------------------------
    def route(self, request: Recorded, ex: Exchange) -> None:
        method, path = request.method, request.path
        if path.startswith("/v1/") and not self._authorized(request, ex):
            return None
        if method == "GET" and path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "fake"}
                for m in self.models
            ]
            return ex.send_json(200, {"object": "list", "data": data})
        if method == "POST" and path == self.chat_path:
            return self._chat(request, ex)
        message = f"Unknown request URL: {method} {path}. Please check the URL for typos."
        self.send_error(ex, 404, message, code="unknown_url")

    def _tool_message_problem(self, messages: list[Any]) -> str | None:
        """What OpenAI would refuse in the tool-call messages, if anything."""
        pending: set[str] = set()
        for message in messages:
            role = message.get("role")
            if role == "tool":
                call_id = message.get("tool_call_id")
                if call_id not in pending:
                    return (
                        "Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'."
                    )
                pending.discard(call_id)
                continue
            if pending:
                return (
                    "An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not "
                    f"have response messages: {', '.join(sorted(pending))}"
                )
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                if call.get("type") != "function" or not call.get("id"):
                    return "Invalid tool_calls: each needs an id and type 'function'."
                if not isinstance(function.get("arguments"), str):
                    return "Invalid type for 'tool_calls.function.arguments': expected a string."
                pending.add(call["id"])
        return None

    def _chat(self, request: Recorded, ex: Exchange) -> None:
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self.send_error(ex, 400, "'messages' is a required property", param="messages")
        model = body.get("model")
        if model not in self.models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            return self.send_error(ex, 404, message, code="model_not_found")
        if "stream_options" in body and not self.accepts_stream_options:
            message = "Unrecognized request argument supplied: stream_options"
            return self.send_error(ex, 400, message, param="stream_options")
        if self.strict_tool_messages:
            problem = self._tool_message_problem(body["messages"])
            if problem:
                return self.send_error(ex, 400, problem, param="messages")
        reply = self.next_reply(request)
        if not self.wait(reply.delay):
            return ex.cut()
        error_reply = reply.http_error()
        if error_reply is not None:
            return self.send_error(ex, *error_reply)
        self._completions += 1
        ident = f"chatcmpl-fake{self._completions}"
        calls = [self._call(i, c) for i, c in enumerate(reply.tool_calls or [])]
        finish = reply.done_reason or ("tool_calls" if calls else "stop")
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(reply.text) + len(calls),
            "total_tokens": prompt_tokens + len(reply.text) + len(calls),
        }
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.text)}
            if calls:
                message["content"] = "".join(reply.text) or None
                message["tool_calls"] = [
                    {"id": c["id"], "type": "function", "function": c["function"]} for c in calls
                ]
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            completion = {
                "id": ident,
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
            return ex.send_json(200, completion)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def event(delta: dict[str, Any] | None, finish_reason: str | None = None) -> bytes:
            chunk: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": None,
                "choices": []
                if delta is None
                else [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                chunk["usage"] = usage if delta is None else None
            return self._sse(chunk)

        pieces = [event({"content": text}) for text in reply.text]
        for index, call in enumerate(calls):
            function = call["function"]
            first = {"name": function["name"], "arguments": ""}
            head = {"index": index, "id": call["id"], "type": "function", "function": first}
            pieces.append(event({"tool_calls": [head]}))
            for part in _split(function["arguments"], reply.argument_pieces):
                fragment = {"index": index, "function": {"arguments": part}}
                pieces.append(event({"tool_calls": [fragment]}))
        tail = [event({}, finish)]
        if include_usage:
            tail.append(event(None))
        tail.append(b"data: [DONE]\n\n")
        message = reply.error or "The server had an error while processing your request."
        in_stream_error = {"message": message, "type": "server_error", "param": None, "code": None}
        self.stream(
            ex,
            reply,
            content_type="text/event-stream; charset=utf-8",
            head=[event({"role": "assistant", "content": ""})],
            pieces=pieces,
            tail=tail,
            malformed=b'data: {"id": "' + ident.encode() + b'", "choices": [{"delta": {"con\n\n',
            stream_error=self._sse({"error": in_stream_error}),
            extra_headers={"Cache-Control": "no-cache"},
        )

    def _call(self, index: int, call: dict[str, Any]) -> dict[str, Any]:
        arguments = call.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments or {}, ensure_ascii=False)
        call_id = call.get("id") or f"call_fake{self._completions}_{index}"
        return {"id": call_id, "function": {"name": call["name"], "arguments": arguments}}

    @staticmethod
    def _sse(value: Any) -> bytes:
        return b"data: " + json.dumps(value, ensure_ascii=False).encode() + b"\n\n"


def _split(text: str, parts: int) -> list[str]:
    """``text`` in up to ``parts`` consecutive pieces (at least one, maybe empty)."""
    if not text or parts <= 1:
        return [text]
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]
