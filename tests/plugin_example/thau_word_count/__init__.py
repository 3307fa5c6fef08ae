"""``word_count``: an example of a tool published by another package.

The whole contract: a pydantic model for the arguments, a run function that takes the
parsed arguments and a :class:`~tools.ToolContext`, and a module-level :class:`~tools.Tool`
named in the ``thau.tools`` entry-point group of this package's ``pyproject.toml``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from thau.tools import Tool, ToolContext


class WordCountArgs(BaseModel):
    text: str = Field(min_length=1, max_length=100_000, description="The text to count.")


def count(args: WordCountArgs, context: ToolContext) -> dict[str, int]:
    """Return JSON-friendly values: they go back to the model as the tool's result."""
    return {
        "words": len(args.text.split()),
        "lines": len(args.text.splitlines()),
        "characters": len(args.text),
    }


tool = Tool(
    name="word_count",
    description="Count the words, lines and characters of a text.",
    args_model=WordCountArgs,
    run=count,
    timeout=5.0,
)
