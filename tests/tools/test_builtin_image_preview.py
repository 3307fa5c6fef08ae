"""The terminal preview of generated images and the system viewer."""

from __future__ import annotations

import base64
import io
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from thau.tools import image_preview


@pytest.fixture
def png(tmp_path: Path, make_png: Callable[..., bytes]) -> Path:
    """4x4: the top half red, the bottom half blue."""
    path = tmp_path / "picture; with spaces.png"
    path.write_bytes(make_png(4, 4, lambda x, y: (255, 0, 0) if y < 2 else (0, 0, 255)))
    return path


def terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, color_system="truecolor", width=80), buffer


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TERM": "xterm-kitty"}, "kitty"),
        ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}, "kitty"),
        ({"TERM_PROGRAM": "iTerm.app"}, "iterm2"),
        ({"TERM_PROGRAM": "WezTerm"}, "iterm2"),
        ({"TERM": "xterm-256color"}, None),
        ({}, None),
    ],
)
def test_the_protocol_follows_the_terminal(env: dict[str, str], expected: str | None) -> None:
    assert image_preview.inline_protocol(env) == expected


def test_kitty_sequence_carries_the_png_in_chunks(png: Path) -> None:
    data = png.read_bytes() * 300  # long enough for several chunks
    sequence = image_preview.kitty_sequence(data, columns=20)
    parts = re.findall(r"\x1b_G([^;]*);([^\x1b]*)\x1b\\", sequence)
    assert len(parts) > 1
    assert parts[0][0] == "f=100,a=T,c=20,m=1"
    assert [keys for keys, _ in parts[1:]] == ["m=1"] * (len(parts) - 2) + ["m=0"]
    assert all(len(payload) <= 4096 for _, payload in parts)
    assert base64.b64decode("".join(payload for _, payload in parts)) == data


def test_iterm2_sequence_carries_the_png(png: Path) -> None:
    data = png.read_bytes()
    sequence = image_preview.iterm2_sequence(data, png.name, columns=30)
    match = re.fullmatch(r"\x1b\]1337;File=([^:]*):([A-Za-z0-9+/=]*)\a", sequence)
    assert match
    assert "inline=1" in match[1] and "width=30" in match[1] and f"size={len(data)}" in match[1]
    assert base64.b64decode(match[2]) == data


def test_half_blocks_show_the_colours(png: Path) -> None:
    text = image_preview.half_blocks(png, columns=4)
    assert text is not None
    assert text.plain == "▀▀▀▀\n▀▀▀▀"
    styles = [str(span.style) for span in text.spans]
    assert styles[:4] == ["#ff0000 on #ff0000"] * 4
    assert styles[4:] == ["#0000ff on #0000ff"] * 4


def test_show_image_uses_kitty_when_the_terminal_speaks_it(png: Path) -> None:
    console, buffer = terminal()
    how = image_preview.show_image(png, console, columns=10, env={"TERM": "xterm-kitty"})
    assert how == "kitty"
    assert buffer.getvalue().startswith("\x1b_Gf=100,a=T,c=10")
    assert png.name in buffer.getvalue()


def test_show_image_falls_back_to_half_blocks(png: Path) -> None:
    console, buffer = terminal()
    assert image_preview.show_image(png, console, columns=4, env={}) == "blocks"
    out = buffer.getvalue()
    assert out.count("▀") == 8
    assert out.count("\x1b[38;2;255;0;0;48;2;255;0;0m▀") == 4  # red over red
    assert out.count("\x1b[38;2;0;0;255;48;2;0;0;255m▀") == 4  # blue over blue


def test_without_pillow_only_the_path_is_shown(png: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # "import PIL" now raises ImportError
    assert image_preview.half_blocks(png) is None
    console, buffer = terminal()
    assert image_preview.show_image(png, console, env={}) == "path"
    assert "▀" not in buffer.getvalue()
    assert png.name in buffer.getvalue()


def test_open_image_runs_the_viewer_without_a_shell(
    png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.txt"
    for name in ("xdg-open", "open"):
        fake = bin_dir / name
        fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert image_preview.open_image(png) is True
    deadline = time.monotonic() + 5
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert record.read_text().splitlines() == [str(png.resolve())]


def test_open_image_without_a_viewer(
    png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert image_preview.open_image(png) is False
    with pytest.raises(FileNotFoundError):
        image_preview.open_image(tmp_path / "missing.png")
