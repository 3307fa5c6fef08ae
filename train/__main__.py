"""``python -m train`` is ``thau-train``."""

from thau.train.cli import main

raise SystemExit(main())
