"""``thau-chat``: the interactive chat, the one-shot ``--message`` and ``--run-tool``.

Only argparse is imported at start-up; everything else loads when it is needed, so
``thau-chat --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from thau import __version__

EPILOG = """\
examples:
  thau-chat                                   interactive chat
  thau-chat --message "Dibuja un gato"        one answer, then exit
  echo "2+2?" | thau-chat --message - --json  read stdin, print JSON
  thau-chat -m "Hola" --json-stream           one JSON event per line, live
  thau-chat --run-tool web_search --args '{"query": "llama.cpp"}'

settings: flags > THAU_* environment > $XDG_CONFIG_HOME/thau/config.toml > defaults
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="thau-chat",
        description="Chat with a small local model that can call tools.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--message", "-m", metavar="TEXT", help="one-shot: answer TEXT and exit (- reads stdin)")
    add("--json", action="store_true", help="one-shot/--run-tool: print one JSON document")
    add(
        "--json-stream",
        action="store_true",
        help="one-shot: print each event as a line of JSON as it happens",
    )
    add("--model", help="model name (Ollama/OpenAI) or path to a GGUF file")
    add("--backend", choices=["auto", "ollama", "openai", "embedded"], help="default: auto")
    add("--host", help="backend URL (default: $OLLAMA_HOST or http://localhost:11434)")
    add("--api", help="vision server URL (default: http://localhost:8000)")
    add(
        "--adapter",
        metavar="PATH|shipped|none",
        help="embedded: the LoRA to load (default: the training service's promoted version, "
        "else the shipped one)",
    )
    add("--yes", "-y", action="store_const", const=True, help="approve tools that ask for approval")
    add("--no-tools", action="store_const", const=True, help="never call tools")
    add("--max-steps", type=int, metavar="N", help="tool steps per turn (default: 5)")
    add("--system", metavar="TEXT", help="replace the system prompt")
    add("--temperature", type=float, metavar="T", help="sampling temperature (default: 0.2)")
    add(
        "--tool-mode",
        choices=["auto", "text", "native"],
        help="<TOOL:...> text or the backend's tools API",
    )
    add(
        "--no-grammar",
        action="store_const",
        const=False,
        dest="grammar",
        help="embedded: don't constrain tool-call JSON with a grammar",
    )
    add(
        "--tool-gate",
        type=float,
        metavar="P",
        help="embedded THAU adapters: open a tool call only above probability P (0: off)",
    )
    add(
        "--verbose",
        "-v",
        action="store_const",
        const=True,
        help="chat: print timings, tokens/s and tool results' JSON after each answer "
        "(/verbose toggles)",
    )
    add(
        "--mcp-config",
        action="append",
        metavar="FILE",
        help="use the MCP servers of this mcpServers JSON file (repeatable)",
    )
    add("--load", metavar="FILE|ID", help="continue a saved conversation")
    add("--run-tool", metavar="NAME", help="run one tool directly, without a model")
    add("--args", metavar="JSON", default="{}", help="arguments for --run-tool")
    add("--version", action="version", version=f"thau-chat {__version__}")
    return p


def fail(message: str, code: int = 1) -> int:
    print(f"thau-chat: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.json_stream and (args.message is None or args.json or args.run_tool):
        return fail("--json-stream goes with --message, without --json or --run-tool", 2)
    from thau.chat.config import load_settings
    from thau.errors import ThauError

    try:
        settings = load_settings(
            model=args.model,
            backend=args.backend,
            host=args.host,
            vision_url=args.api,
            adapter=args.adapter,
            yes=args.yes,
            no_tools=args.no_tools,
            max_steps=args.max_steps,
            system=args.system,
            temperature=args.temperature,
            tool_mode=args.tool_mode,
            grammar=args.grammar,
            tool_gate=args.tool_gate,
            verbose=args.verbose,
            mcp_config=args.mcp_config,
        )
    except ThauError as exc:
        return fail(str(exc), 2)
    try:
        if args.run_tool:
            from thau.chat.run_tool import run_tool

            return run_tool(settings, args.run_tool, args.args, as_json=args.json)
        if args.message is not None:
            from thau.chat.oneshot import run_once

            return run_once(
                settings,
                args.message,
                as_json=args.json,
                load=args.load,
                json_stream=args.json_stream,
            )
        from thau.chat.repl import run_repl

        return run_repl(settings, load=args.load)
    except ThauError as exc:
        return fail(_one_line(exc))
    except KeyboardInterrupt:
        return fail("interrupted", 130)


def _one_line(exc: Any) -> str:
    return " ".join(str(exc).split())
