"""A third-party tool (tests/plugin_example) is found through its entry point, next to the
three built-ins, exactly as after ``pip install``: importlib.metadata reads a ``*.dist-info``
whose ``entry_points.txt`` is written from the example's own pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from thau.tools.registry import ENTRY_POINT_GROUP, ToolContext, ToolRegistry

EXAMPLE = Path(__file__).resolve().parent.parent / "plugin_example"
BUILTINS = {"generate_image", "code_execution", "web_search"}


def write_dist_info(site: Path, name: str, version: str, entry_points: dict) -> None:
    """What an installer leaves in site-packages for importlib.metadata to find."""
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, points in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in points.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def installed_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    write_dist_info(tmp_path, project["name"], project["version"], project["entry-points"])
    monkeypatch.syspath_prepend(str(EXAMPLE))  # the package's code
    monkeypatch.syspath_prepend(str(tmp_path))  # its metadata
    return project


def test_the_builtins_are_published_as_entry_points() -> None:
    registry = ToolRegistry.from_entry_points()
    assert set(registry.names()) >= BUILTINS
    assert not [e for e in registry.load_errors if any(b in e for b in BUILTINS)]


def test_the_example_plugin_is_found_next_to_the_builtins(
    installed_example: dict, tmp_path: Path
) -> None:
    assert installed_example["entry-points"][ENTRY_POINT_GROUP] == {
        "word_count": "thau_word_count:tool"
    }
    registry = ToolRegistry.from_entry_points()
    assert registry.load_errors == []
    assert BUILTINS | {"word_count"} <= set(registry.names())
    tool, args = registry.validate("word_count", {"text": "one two\nthree"})
    outcome = registry.execute(tool, args, ToolContext(data_dir=tmp_path))
    assert outcome.ok
    assert outcome.result == {"words": 3, "lines": 2, "characters": 13}
    assert tool.signature() == "word_count(text)"
    assert tool.native_schema()["function"]["parameters"]["required"] == ["text"]


def test_a_broken_plugin_is_reported_and_the_rest_still_load(
    installed_example: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = {ENTRY_POINT_GROUP: {"broken": "thau_no_such_module:tool"}}
    write_dist_info(tmp_path / "more", "thau-broken", "0.1.0", broken)
    monkeypatch.syspath_prepend(str(tmp_path / "more"))
    registry = ToolRegistry.from_entry_points()
    assert BUILTINS | {"word_count"} <= set(registry.names())
    assert "broken" not in registry
    [error] = [e for e in registry.load_errors if "'broken'" in e]
    assert "thau_no_such_module" in error


def test_a_tool_name_that_cannot_be_called_is_a_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``WordCount`` could never be written in ``<TOOL:name>``: refused at registration."""
    module = tmp_path / "code" / "thau_bad_name.py"
    module.parent.mkdir()
    module.write_text(
        "from pydantic import BaseModel\n"
        "from thau.tools import Tool\n"
        "class Args(BaseModel):\n    text: str\n"
        "tool = Tool('WordCount', 'Counts words.', Args, lambda a, c: len(a.text.split()))\n",
        "utf-8",
    )
    points = {ENTRY_POINT_GROUP: {"WordCount": "thau_bad_name:tool"}}
    write_dist_info(tmp_path / "meta", "thau-bad-name", "0.1.0", points)
    monkeypatch.syspath_prepend(str(module.parent))
    monkeypatch.syspath_prepend(str(tmp_path / "meta"))
    registry = ToolRegistry.from_entry_points()
    assert set(registry.names()) >= BUILTINS and "WordCount" not in registry
    [error] = [e for e in registry.load_errors if "WordCount" in e]
    assert "cannot be called" in error and "'wordcount'" in error
