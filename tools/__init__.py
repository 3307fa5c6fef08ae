"""THAU's tool registry and built-in tools.

A tool is a :class:`Tool`; packages publish tools through the entry-point group
``thau_chat.tools`` (the built-ins do too). See :mod:`tools.registry`.
"""

from tools.registry import ENTRY_POINT_GROUP, Tool, ToolContext, ToolOutcome, ToolRegistry

__all__ = ["ENTRY_POINT_GROUP", "Tool", "ToolContext", "ToolOutcome", "ToolRegistry"]
