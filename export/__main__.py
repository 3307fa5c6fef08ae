"""``python -m export``: the same as ``thau-export``."""

from export.cli import main

raise SystemExit(main())
