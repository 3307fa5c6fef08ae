"""Wiring: settings -> backend, registry and agent (shared by every front end)."""

from __future__ import annotations

from dataclasses import dataclass

from thau.chat.agent import Agent, Approver, deny_all
from thau.chat.backends import Selection, create_backend
from thau.chat.backends.base import GenerationOptions
from thau.chat.config import Settings
from thau.tools.registry import ToolContext, ToolRegistry


@dataclass
class Session:
    settings: Settings
    selection: Selection
    registry: ToolRegistry
    agent: Agent


def resolve_tool_mode(settings: Settings, selection: Selection) -> str:
    if settings.tool_mode != "auto":
        return settings.tool_mode
    try:
        return "native" if selection.backend.prefers_native_tools() else "text"
    except Exception:
        return "text"


def tool_context(settings: Settings) -> ToolContext:
    return ToolContext(
        data_dir=settings.data_dir, vision_url=settings.vision_url, approved=settings.yes
    )


def build_session(
    settings: Settings,
    *,
    approver: Approver = deny_all,
    selection: Selection | None = None,
    registry: ToolRegistry | None = None,
) -> Session:
    selection = selection or create_backend(settings)
    registry = registry if registry is not None else ToolRegistry.from_entry_points()
    options = GenerationOptions(
        temperature=settings.temperature,
        num_ctx=settings.num_ctx,
        keep_alive=settings.keep_alive,
        grammar_tools=settings.grammar,
    )
    agent = Agent(
        selection.backend,
        registry,
        context=tool_context(settings),
        approver=approver,
        tool_mode=resolve_tool_mode(settings, selection),
        tools_enabled=not settings.no_tools,
        max_steps=settings.max_steps,
        system=settings.system,
        options=options,
        auto_approve=settings.yes,
        result_limit=settings.tool_result_limit,
    )
    return Session(settings, selection, registry, agent)
