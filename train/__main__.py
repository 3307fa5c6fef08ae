"""``python -m train`` is ``thau-train``."""

from train.cli import main

raise SystemExit(main())
