"""Keep the CLI help in README.md identical to the real ``--help`` output.

python scripts/readme_help.py          # rewrite README.md
python scripts/readme_help.py --check  # exit 1 when README.md is stale
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- \[\[\[cog-help -->\n).*?(<!-- \]\]\] -->)", re.DOTALL)


def help_text() -> str:
    sys.path.insert(0, str(ROOT))
    from thau.chat.cli import build_parser

    os.environ["COLUMNS"] = "100"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        build_parser().print_help()
    return out.getvalue()


def render(readme: str) -> str:
    body = "```\n$ thau-chat --help\n" + help_text() + "```\n"
    return BLOCK.sub(lambda m: m.group(1) + body + m.group(2), readme)


def main() -> int:
    current = README.read_text("utf-8")
    wanted = render(current)
    if "--check" in sys.argv:
        if current != wanted:
            print("README.md's CLI help is stale: run python scripts/readme_help.py")
            return 1
        return 0
    README.write_text(wanted, "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
