"""The tool plugin surface: what a tool is and how tools are found and run.

A plugin package exposes, in the entry-point group ``thau.tools``, either a
:class:`Tool` or a function that takes no arguments and returns a ``Tool`` or a list
of them::

    [project.entry-points."thau.tools"]
    weather = "thau_weather:tool"
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from thau.errors import ToolArgumentsInvalid, ToolError, UnknownTool
from thau.prompt_format import is_tool_name, to_tool_name
from thau.settings import tool_environment

ENTRY_POINT_GROUP = "thau.tools"


@dataclass
class ToolContext:
    """What a running tool may know about the session."""

    data_dir: Path
    vision_url: str = "http://localhost:8000"
    approved: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] | None = None
    """Settings to use instead of :meth:`settings`' (tests, embedding hosts)."""

    def settings(self) -> Mapping[str, str]:
        """What a tool reads its settings from: the environment over ``config.toml``
        (:func:`thau.settings.tool_environment`), read when the call runs."""
        return tool_environment() if self.env is None else self.env


@dataclass(frozen=True)
class Tool:
    """One tool: a name, a description, an argument model and a run function."""

    name: str
    description: str
    args_model: type[BaseModel]
    run: Callable[[Any, ToolContext], Any]
    needs_approval: bool = False
    timeout: float | Callable[[ToolContext], float] = 60.0
    """Seconds a call may take, or a function of the context's settings."""
    preview: Callable[[Any], tuple[str, str]] | None = None
    """Takes the validated argument model; returns ``(lexer, text)`` shown when the
    person is asked to approve a call."""

    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments."""
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        schema.pop("description", None)  # the model's docstring; the tool has its own
        return schema

    def native_schema(self) -> dict[str, Any]:
        """The schema in the shape native tool APIs (Ollama, OpenAI) take.

        Optional fields (``anyOf: [X, null]``) become plain ``X``: some clients (the
        ``ollama`` package) drop ``anyOf`` and would send an empty schema.
        """
        parameters = self.parameters()
        for prop in parameters.get("properties", {}).values():
            options = prop.get("anyOf")
            if isinstance(options, list):
                kept = [o for o in options if o.get("type") != "null"]
                if len(kept) == 1:
                    del prop["anyOf"]
                    prop.update(kept[0])
        function = {"name": self.name, "description": self.description, "parameters": parameters}
        return {"type": "function", "function": function}

    def signature(self) -> str:
        """A one-line summary such as ``web_search(query, max_results=5)``."""
        parts = []
        for name, info in self.args_model.model_fields.items():
            if info.is_required():
                parts.append(name)
            else:
                parts.append(f"{name}={info.default!r}")
        return f"{self.name}({', '.join(parts)})"

    def timeout_for(self, context: ToolContext) -> float:
        """The call deadline under ``context``'s settings."""
        return self.timeout(context) if callable(self.timeout) else self.timeout

    def describe_call(self, arguments: dict[str, Any]) -> tuple[str, str]:
        """``(lexer, text)`` showing what a call will do: the preview, else its JSON."""
        if self.preview is not None:
            try:
                lexer, text = self.preview(self.args_model.model_validate(arguments))
                return lexer, str(text)
            except Exception:  # a broken preview must not hide the call
                pass
        return "json", json.dumps(arguments, ensure_ascii=False, indent=2, default=str)


@dataclass(frozen=True)
class ToolOutcome:
    """The result of running one call."""

    name: str
    ok: bool
    result: Any = None
    error: str | None = None
    elapsed_s: float = 0.0

    def payload(self) -> dict[str, Any]:
        if self.ok:
            return {"tool": self.name, "ok": True, "result": self.result}
        return {"tool": self.name, "ok": False, "error": self.error}


def _readable(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class ToolRegistry:
    """The tools of a session, by name."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[Callable[[], Iterable[Tool]]] = []
        self.load_errors: list[str] = []
        for tool in tools:
            self.register(tool)

    @classmethod
    def from_entry_points(cls) -> ToolRegistry:
        """All tools published in the ``thau.tools`` group, built-ins included."""
        registry = cls()
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            try:
                loaded = ep.load()
                found = loaded() if callable(loaded) and not isinstance(loaded, Tool) else loaded
                for tool in [found] if isinstance(found, Tool) else list(found):
                    registry.register(tool)
            except Exception as exc:  # a broken plugin must not break the chat
                registry.load_errors.append(f"plugin {ep.name!r} ({ep.value}) failed: {exc}")
        return registry

    def register(self, tool: Tool) -> None:
        if not isinstance(tool, Tool):
            raise ToolError(f"{tool!r} is not a thau.tools.Tool")
        if not is_tool_name(tool.name):
            raise ToolError(
                f"tool name {tool.name!r} cannot be called: a tool name is lower-case letters, "
                "digits and _ (it must fit <TOOL:name>), e.g. "
                f"{to_tool_name(tool.name)!r}"
            )
        if tool.name in self._tools:
            raise ToolError(f"two tools are named {tool.name!r}")
        self._tools[tool.name] = tool

    def add_pending(self, load: Callable[[], Iterable[Tool]]) -> None:
        """Tools known later: ``load()`` runs (once) at the next look at the tools, and a
        failure or a clash becomes a ``load_errors`` entry (MCP servers list theirs so)."""
        self._pending.append(load)

    def _settle(self) -> None:
        while self._pending:
            load = self._pending.pop(0)
            try:
                found = list(load())
            except Exception as exc:
                self.load_errors.append(str(exc) or type(exc).__name__)
                continue
            for tool in found:
                try:
                    self.register(tool)
                except ToolError as exc:
                    self.load_errors.append(str(exc))

    def __iter__(self) -> Iterator[Tool]:
        self._settle()
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        self._settle()
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        self._settle()
        return name in self._tools

    def names(self) -> list[str]:
        self._settle()
        return list(self._tools)

    def get(self, name: str) -> Tool:
        self._settle()
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(self._tools) or "none"
            raise UnknownTool(f"unknown tool {name!r}; available tools: {known}") from None

    def native_schemas(self) -> list[dict[str, Any]]:
        return [tool.native_schema() for tool in self]

    def validate(self, name: str, arguments: Any) -> tuple[Tool, BaseModel]:
        """The tool and its parsed arguments, or ``UnknownTool``/``ToolArgumentsInvalid``."""
        tool = self.get(name)
        if not isinstance(arguments, dict):
            raise ToolArgumentsInvalid(f"{name}: arguments must be a JSON object")
        try:
            return tool, tool.args_model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolArgumentsInvalid(f"{name}: invalid arguments ({_readable(exc)})") from None

    def execute(self, tool: Tool, args: BaseModel, context: ToolContext) -> ToolOutcome:
        """Run a validated call with the tool's timeout; never raises (but Ctrl-C).

        Calls run one at a time on a worker thread that is reused; a call that times
        out or is interrupted keeps its thread, and the next call gets a fresh one.
        """
        start = time.perf_counter()
        try:
            deadline = tool.timeout_for(context)
        except Exception as exc:  # a bad setting (THAU_SANDBOX_TIMEOUT=abc) is the call's error
            return ToolOutcome(tool.name, False, error=f"{type(exc).__name__}: {exc}")
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tool")
        future = self._pool.submit(tool.run, args, context)
        try:
            try:
                result = future.result(timeout=deadline)
            except BaseException:  # a timeout or Ctrl-C: leave the busy worker behind
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                raise
            json.dumps(result, default=str)  # results must be representable
        except concurrent.futures.TimeoutError:
            return ToolOutcome(
                tool.name,
                False,
                error=f"timed out after {deadline:g} s",
                elapsed_s=time.perf_counter() - start,
            )
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            return ToolOutcome(
                tool.name,
                False,
                error=f"{type(exc).__name__}: {message}",
                elapsed_s=time.perf_counter() - start,
            )
        return ToolOutcome(tool.name, True, result=result, elapsed_s=time.perf_counter() - start)
