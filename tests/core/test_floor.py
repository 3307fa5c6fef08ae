"""The bottom floor (``thau.errors``, ``paths``, ``settings``, ``prompt_format``,
``jsonl``, ``resources``) imports no part, and the parts do not import each other in a
circle; importing a module does no work beyond definitions."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from thau import jsonl
from thau.errors import ConfigError
from thau.settings import tool_environment

ROOT = Path(__file__).resolve().parents[2]
PARTS = {
    "thau_chat": "chat",
    "tools": "tools",
    "train": "train",
    "export": "export",
    "vision_server": "vision",
}


def imported(folder: Path) -> set[str]:
    """The ``thau.*`` modules that the files under ``folder`` import, anywhere."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return {n for n in names if n == "thau" or n.startswith("thau.")}


def part_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PARTS.values() else None


def test_the_bottom_floor_imports_no_part() -> None:
    assert {m for m in imported(ROOT / "thau") if part_of(m)} == set()


def test_no_import_cycles_between_parts() -> None:
    edges = {
        name: {p for m in imported(ROOT / folder) if (p := part_of(m)) and p != name}
        for folder, name in PARTS.items()
    }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
            for nxt in edges[start]
        )

    assert [p for p in edges if reaches(p, p, {p})] == []
    assert edges["tools"] == set()  # tools are a floor of their own: plugins import them


def test_importing_a_part_changes_no_environment() -> None:
    code = (
        "import os; before = dict(os.environ)\n"
        "import thau.chat.cli, thau.tools.code_execution, thau.train.cli, thau.export.cli\n"
        "print(before == dict(os.environ))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr


def test_jsonl_reads_objects_and_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    jsonl.atomic_write(path, jsonl.dumps_jsonl([{"a": 1}, {"b": "ñ"}]) + "\n{broken\n")
    with pytest.raises(jsonl.JsonlError, match=r"a.jsonl:4: not JSON"):
        jsonl.read_jsonl(path)
    jsonl.atomic_write(path, '{"a": 1}\n[1, 2]\n')
    with pytest.raises(jsonl.JsonlError, match=r"a.jsonl:2: not a JSON object"):
        jsonl.read_jsonl(path)
    jsonl.write_json(tmp_path / "deep" / "x.json", {"k": "ü"})
    assert json.loads((tmp_path / "deep" / "x.json").read_text("utf-8")) == {"k": "ü"}
    assert [p.name for p in tmp_path.rglob(".*.tmp")] == []  # no temporary file left


def test_tool_settings_come_from_the_environment_over_config_toml(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'sandbox_timeout = 9\nsearch_backend = "searxng"\n'
        "[sandbox]\nmemory_mb = 512\n[search]\ncache_ttl = 60\n",
        "utf-8",
    )
    from thau.settings import read_config_file

    env = tool_environment(
        {"THAU_SEARCH_BACKEND": "ddgs", "OLLAMA_API_KEY": "k"}, read_config_file(config)
    )
    assert env["THAU_SANDBOX_TIMEOUT"] == "9"
    assert env["THAU_SANDBOX_MEMORY_MB"] == "512"
    assert env["THAU_SEARCH_CACHE_TTL"] == "60"
    assert env["THAU_SEARCH_BACKEND"] == "ddgs"  # the environment wins
    assert env["OLLAMA_API_KEY"] == "k"
    config.write_text("sandbox_timeout = [", "utf-8")
    with pytest.raises(ConfigError, match=r"config\.toml"):
        read_config_file(config)


def test_a_tool_reads_config_toml_through_its_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code tool's sandbox timeout set in config.toml is the one the call gets."""
    from thau import paths
    from thau.tools import ToolContext
    from thau.tools.code_execution import tool

    paths.config_file().parent.mkdir(parents=True, exist_ok=True)
    paths.config_file().write_text("[sandbox]\ntimeout = 4\n", "utf-8")
    assert tool.timeout_for(ToolContext(data_dir=tmp_path)) == 4 + 15
    monkeypatch.setenv("THAU_SANDBOX_TIMEOUT", "6")
    assert tool.timeout_for(ToolContext(data_dir=tmp_path)) == 6 + 15
