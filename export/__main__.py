"""``python -m export``: the same as ``thau-export``."""

from thau.export.cli import main

raise SystemExit(main())
