"""Show a generated image in the terminal, or open it in the system viewer.

- kitty's graphics protocol or iTerm2's inline images when ``TERM``/``TERM_PROGRAM`` say
  the terminal speaks them;
- otherwise a small preview in half-block characters (two pixels per cell) through rich,
  when Pillow is installed (it is optional: ``pip install pillow``);
- otherwise just the path.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.text import Text

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
InlineProtocol = Literal["kitty", "iterm2"]


def inline_protocol(env: Mapping[str, str] | None = None) -> InlineProtocol | None:
    """The inline image protocol the terminal announces, if any."""
    env = os.environ if env is None else env
    term = env.get("TERM", "").lower()
    program = env.get("TERM_PROGRAM", "").lower()
    if "kitty" in term or env.get("KITTY_WINDOW_ID") or program in ("ghostty", "kitty"):
        return "kitty"
    if program in ("iterm.app", "wezterm") or env.get("LC_TERMINAL", "") == "iTerm2":
        return "iterm2"
    return None


def kitty_sequence(png: bytes, columns: int) -> str:
    """kitty graphics protocol: transmit and show a PNG, in chunks of 4096 base64 bytes."""
    data = base64.standard_b64encode(png).decode("ascii")
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)] or [""]
    out = []
    for index, chunk in enumerate(chunks):
        more = 1 if index < len(chunks) - 1 else 0
        keys = f"f=100,a=T,c={columns},m={more}" if index == 0 else f"m={more}"
        out.append(f"\x1b_G{keys};{chunk}\x1b\\")
    return "".join(out)


def iterm2_sequence(png: bytes, name: str, columns: int) -> str:
    """iTerm2's inline image escape (OSC 1337), also understood by WezTerm."""
    encoded_name = base64.b64encode(name.encode()).decode("ascii")
    data = base64.b64encode(png).decode("ascii")
    args = f"name={encoded_name};size={len(png)};width={columns};preserveAspectRatio=1;inline=1"
    return f"\x1b]1337;File={args}:{data}\a"


def half_blocks(path: str | Path, columns: int = 40) -> Text | None:
    """The image in ``columns`` cells of ``▀`` (top pixel as colour, bottom as background);
    ``None`` without Pillow or for a file Pillow cannot read."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError):
        return None
    width = max(1, min(columns, rgb.width))
    rows = max(1, round(rgb.height * width / rgb.width / 2))
    small = rgb.resize((width, rows * 2))
    pixels = small.load()
    text = Text()
    for row in range(rows):
        for col in range(width):
            top = "#{:02x}{:02x}{:02x}".format(*pixels[col, row * 2])
            bottom = "#{:02x}{:02x}{:02x}".format(*pixels[col, row * 2 + 1])
            text.append("▀", style=f"{top} on {bottom}")
        if row < rows - 1:
            text.append("\n")
    return text


def show_image(
    path: str | Path,
    console: Console | None = None,
    columns: int = 40,
    env: Mapping[str, str] | None = None,
) -> str:
    """Show ``path`` the best way this terminal allows; returns how: ``kitty``, ``iterm2``,
    ``blocks`` or ``path``. The path is printed in every case."""
    console = console or Console()
    path = Path(path)
    protocol = inline_protocol(env) if console.is_terminal else None
    data = path.read_bytes() if protocol and path.is_file() else b""
    how = "path"
    if protocol and data.startswith(PNG_MAGIC):
        sequence = (
            kitty_sequence(data, columns)
            if protocol == "kitty"
            else iterm2_sequence(data, path.name, columns)
        )
        console.file.write(sequence + "\n")
        console.file.flush()
        how = protocol
    elif (blocks := half_blocks(path, columns)) is not None:
        console.print(blocks)
        how = "blocks"
    console.print(Text(str(path), style="dim"), soft_wrap=True)  # one line, easy to copy
    return how


def open_image(path: str | Path) -> bool:
    """Open ``path`` in the system's image viewer, without a shell; False if there is none."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(path)
    if sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined]
        return True
    opener = shutil.which("open" if sys.platform == "darwin" else "xdg-open")
    if opener is None:
        return False
    subprocess.Popen(
        [opener, str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return True
