"""MCP tools as registry tools: names, argument validation by JSON schema, results.

A server's tool ``Read File`` on server ``files`` becomes ``files__read_file``. Its
arguments are checked against the server's own JSON schema (``jsonschema``) before the
call leaves THAU, and :meth:`McpTool.parameters` hands that schema unchanged to the
prompt, the native tools API and the embedded backend's grammar.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import keyword
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model, model_validator
from pydantic_core import PydanticCustomError

from thau.errors import ToolError
from thau.jsonl import atomic_write
from thau.prompt_format import dumps, to_tool_name
from thau.tools.mcp_models import RemoteResult, RemoteTool
from thau.tools.registry import Tool, ToolContext

MAX_RESULT_CHARS = 100_000
"""Text kept from one result (the agent cuts it again, to what the model sees)."""
MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_SUFFIXES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
}


def registry_name(server: str, tool: str) -> str:
    """``<server>__<tool>``, lower-cased, other characters to ``_``."""
    return to_tool_name(f"{server}__{tool}")


@dataclass(frozen=True)
class McpTool(Tool):
    """A tool that lives on an MCP server."""

    server: str = ""
    remote_name: str = ""
    input_schema: dict[str, Any] = field(default_factory=dict)

    def parameters(self) -> dict[str, Any]:
        """The server's JSON schema (a copy; callers may change it)."""
        schema = copy.deepcopy(self.input_schema)
        schema.pop("title", None)
        schema.pop("$schema", None)
        schema.setdefault("properties", {})
        return schema


def args_model(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model that validates a call's arguments against ``schema``.

    Its fields are the schema's top-level properties (so prompts list the required
    ones); other keys pass through to ``jsonschema``, which decides.
    Raises ``ToolError`` when ``schema`` itself is not a valid JSON schema of an object.
    """
    import jsonschema  # here: only sessions with MCP tools pay for it
    from jsonschema.exceptions import best_match

    if schema.get("type", "object") != "object":
        raise ToolError(f"{name}: arguments that are not a JSON object are not supported")
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ToolError(f"{name}: the server's input schema is invalid: {exc.message}") from None
    validator = validator_class(schema)

    def check(cls: type[BaseModel], data: Any) -> Any:
        error = best_match(validator.iter_errors(data))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            message = f"{where}: {error.message}" if where else error.message
            raise PydanticCustomError("json_schema", "{message}", {"message": message})
        return data

    required = set(schema.get("required", []))
    fields: dict[str, Any] = {}
    for prop, spec in schema.get("properties", {}).items():
        if _usable_field(prop):
            default = spec.get("default") if isinstance(spec, dict) else None
            fields[prop] = (Any, ...) if prop in required else (Any, default)
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{to_tool_name(name)}_args",
        __config__=ConfigDict(extra="allow"),
        __validators__={"check_schema": model_validator(mode="before")(check)},
        **fields,
    )


def _usable_field(name: str) -> bool:
    return (
        name.isidentifier()
        and not keyword.iskeyword(name)
        and not name.startswith(("_", "model_"))
        and not hasattr(BaseModel, name)
    )


def arguments_of(args: BaseModel) -> dict[str, Any]:
    """The arguments as the model gave them."""
    return args.model_dump(exclude_unset=True)


Caller = Callable[[str, dict[str, Any]], RemoteResult]
"""``call(remote tool name, arguments) -> result``; raises ``ToolError``."""


def make_tool(
    server: str,
    remote: RemoteTool,
    call: Caller,
    *,
    needs_approval: bool,
    timeout: float,
) -> McpTool:
    """The registry tool for ``remote``; raises ``ToolError`` when it cannot be offered."""
    name = registry_name(server, remote.name)
    model = args_model(name, remote.input_schema)

    def run(args: BaseModel, context: ToolContext) -> Any:
        result = call(remote.name, arguments_of(args))
        return tool_result(result, context.data_dir, stem=name)

    description = remote.description.strip() or f"{remote.name} (from the MCP server {server})"
    return McpTool(
        name=name,
        description=description,
        args_model=model,
        run=run,
        needs_approval=needs_approval,
        timeout=timeout,
        server=server,
        remote_name=remote.name,
        input_schema=dict(remote.input_schema),
    )


def tool_result(result: RemoteResult, data_dir: Path, *, stem: str) -> Any:
    """What the model and the person see of ``result``.

    Text alone comes back as text; structured content as its JSON; with images (saved
    under ``<data dir>/images``, like generated ones) or other content, a dict of
    ``text``, ``structured``, ``images`` and ``other``. An error result raises ``ToolError``.
    """
    texts: list[str] = []
    images: list[str] = []
    other: list[dict[str, Any]] = []
    for block in result.blocks:
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "image":
            saved = _save_image(block, data_dir / "images", stem)
            if isinstance(saved, Path):
                images.append(str(saved))
            else:
                other.append(saved)
        elif kind == "resource" and "text" in block:
            texts.append(str(block["text"]))
        else:
            other.append(_described(block))
    text = _capped("\n".join(texts))
    if result.is_error:
        raise ToolError(text or "the MCP tool reported an error without a message")
    structured = result.structured
    if structured is not None and len(dumps(structured)) > MAX_RESULT_CHARS:
        structured = _capped(dumps(structured))
    if not images and not other:
        if structured is not None:
            return structured
        return text
    out: dict[str, Any] = {}
    if text and structured is None:
        out["text"] = text
    if structured is not None:
        out["structured"] = structured
    if images:
        out["images"] = images
    if other:
        out["other"] = other
    return out


def _capped(text: str) -> str:
    if len(text) <= MAX_RESULT_CHARS:
        return text
    cut = len(text) - MAX_RESULT_CHARS
    return f"{text[:MAX_RESULT_CHARS]} ... [cut {cut} characters]"


def _save_image(block: dict[str, Any], folder: Path, stem: str) -> Path | dict[str, Any]:
    """Write an image block to ``folder``; a description instead when it cannot be kept."""
    mime = str(block.get("mime_type", ""))
    data = str(block.get("data", ""))
    suffix = IMAGE_SUFFIXES.get(mime.lower())
    if suffix is None or len(data) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        return _described(block)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return {"type": "image", "mime_type": mime, "note": "not valid base64; not saved"}
    digest = hashlib.sha256(raw).hexdigest()[:16]
    path = folder / f"{stem}-{digest}{suffix}"
    if not path.exists():  # the same image is kept once
        atomic_write(path, raw)
    return path


def _described(block: dict[str, Any]) -> dict[str, Any]:
    """A block THAU does not keep, without its bulky data."""
    out = {k: v for k, v in block.items() if k not in ("data", "blob")}
    for key in ("data", "blob"):
        if key in block:
            out["note"] = f"{len(str(block[key])) * 3 // 4} bytes not kept"
    return out
