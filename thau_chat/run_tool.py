"""``thau-chat --run-tool NAME --args JSON``: run one tool without a model."""

from __future__ import annotations

import json
import sys

from thau.chat.config import Settings
from thau.chat.oneshot import terminal_approver
from thau.chat.parser import ToolCall
from thau.chat.session import attach_mcp, tool_context
from thau.errors import ToolError
from thau.tools.registry import ToolOutcome, ToolRegistry


def run_tool(settings: Settings, name: str, raw_args: str, *, as_json: bool) -> int:
    registry = ToolRegistry.from_entry_points()
    if "__" in name:  # only MCP tools are named <server>__<tool>
        attach_mcp(registry, settings)
    for problem in registry.load_errors:
        print(f"thau-chat: warning: {problem}", file=sys.stderr)
    try:
        arguments = json.loads(raw_args)
    except ValueError as exc:
        print(f"thau-chat: error: --args is not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        tool, args = registry.validate(name, arguments)
    except ToolError as exc:
        print(f"thau-chat: error: {exc}", file=sys.stderr)
        return 2
    context = tool_context(settings)
    if tool.needs_approval and not settings.yes:
        approval = terminal_approver(ToolCall(name, arguments, raw_args), tool)
        if not approval.approved:
            outcome = ToolOutcome(name, False, error=f"not approved: {approval.reason}")
            return _print(outcome, as_json)
        context.approved = True
    return _print(registry.execute(tool, args, context), as_json)


def _print(outcome: ToolOutcome, as_json: bool) -> int:
    if as_json:
        doc = {**outcome.payload(), "elapsed_s": round(outcome.elapsed_s, 4)}
        print(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
    elif outcome.ok:
        result = outcome.result
        if not isinstance(result, str):
            result = json.dumps(result, ensure_ascii=False, indent=2, default=str)
        print(result)
    else:
        print(f"thau-chat: error: {outcome.name}: {outcome.error}", file=sys.stderr)
    return 0 if outcome.ok else 1
