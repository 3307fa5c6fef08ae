"""Wiring: settings -> backend, registry and agent (shared by every front end)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thau.chat.agent import Agent, Approver, deny_all
from thau.chat.backends import Selection, create_backend
from thau.chat.backends.base import GenerationOptions
from thau.chat.config import Settings
from thau.tools.registry import ToolContext, ToolRegistry

if TYPE_CHECKING:
    from thau.tools.mcp_client import McpHub


@dataclass
class Session:
    settings: Settings
    selection: Selection
    registry: ToolRegistry
    agent: Agent

    def run_record(self) -> dict[str, Any]:
        """Who answers now, as a conversation records it (``Conversation.note_run``):
        backend, model, adapter (and its promoted version) and the system prompt."""
        backend = self.selection.backend
        adapter = getattr(backend, "adapter_path", None)
        choice = getattr(backend, "adapter_choice", None)
        promoted = choice is not None and choice.source == "promoted"
        return {
            "backend": backend.name,
            "model": backend.model,
            "adapter": str(adapter) if adapter else None,
            "adapter_version": choice.version if promoted else None,
            "system_prompt": self.agent.system_prompt(),
        }


def resolve_tool_mode(settings: Settings, selection: Selection) -> str:
    if settings.tool_mode != "auto":
        return settings.tool_mode
    try:
        return "native" if selection.backend.prefers_native_tools() else "text"
    except Exception:
        return "text"


def attach_mcp(registry: ToolRegistry, settings: Settings) -> McpHub | None:
    """Offer the configured MCP servers' tools in ``registry`` (once per registry; the
    servers start lazily, see :mod:`thau.tools.mcp_client`). ``ConfigError`` when the
    server list is invalid."""
    if settings.no_tools or not (settings.mcp_config or settings.mcp_servers):
        return None
    from thau.tools import mcp_client
    from thau.tools.mcp_config import load_servers

    hub = mcp_client.hub_of(registry)
    if hub is None:
        servers = load_servers(settings.mcp_config, settings.mcp_servers)
        hub = mcp_client.attach(registry, servers, data_dir=settings.data_dir)
    return hub


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
    attach_mcp(registry, settings)
    options = GenerationOptions(
        temperature=settings.temperature,
        num_ctx=settings.num_ctx,
        keep_alive=settings.keep_alive,
        grammar_tools=settings.grammar,
        tool_gate=settings.tool_gate,
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
