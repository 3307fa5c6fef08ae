"""The ``code_execution`` tool: run a short Python program in the sandbox."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from thau.tools.registry import Tool, ToolContext
from thau.tools.sandbox import Sandbox, SandboxLimits, mode_from_env


class CodeExecutionArgs(BaseModel):
    """Arguments of ``code_execution``."""

    code: str = Field(
        min_length=1,
        max_length=100_000,
        description="A complete Python 3 program; print what you want to see.",
    )
    language: Literal["python"] = Field("python", description="Only python is supported.")

    @field_validator("language", mode="before")
    @classmethod
    def _python_aliases(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("py", "python3", "python"):
            return "python"
        return value


def run(args: CodeExecutionArgs, context: ToolContext) -> dict[str, Any]:
    """Run ``args.code``; the sandbox's mode and limits come from ``THAU_SANDBOX*``.

    ``context.extra["sandbox"]`` (a :class:`Sandbox`) replaces the configured one.
    """
    sandbox = context.extra.get("sandbox")
    if not isinstance(sandbox, Sandbox):
        sandbox = Sandbox(
            mode_from_env(context.settings()), SandboxLimits.from_env(context.settings())
        )
    return sandbox.run(args.code).as_dict()


def preview(args: CodeExecutionArgs) -> tuple[str, str]:
    """What the person sees before approving: the code, highlighted as Python."""
    return "python", args.code


def _timeout(context: ToolContext) -> float:
    """The sandbox's own timeout plus a margin: the sandbox stops the code first."""
    try:
        return SandboxLimits.from_env(context.settings()).timeout_s + 15
    except Exception:  # a bad value is reported by run(), with its name
        return SandboxLimits().timeout_s + 15


tool = Tool(
    name="code_execution",
    description=(
        "Run a short Python 3 program and return its stdout, stderr and exit code. "
        "It runs in a sandbox: no network, no new processes, files only in its own "
        "temporary working directory, limited time and memory."
    ),
    args_model=CodeExecutionArgs,
    run=run,
    needs_approval=True,
    timeout=_timeout,
    preview=preview,
)
