"""THAU's tool registry and built-in tools: the plugin API.

A tool is a :class:`Tool`; packages publish tools through the entry-point group
``thau.tools`` (the built-ins do too). See :mod:`thau.tools.registry`.
"""

from thau.errors import ToolError
from thau.tools.registry import ENTRY_POINT_GROUP, Tool, ToolContext, ToolOutcome, ToolRegistry

__all__ = ["ENTRY_POINT_GROUP", "Tool", "ToolContext", "ToolError", "ToolOutcome", "ToolRegistry"]
