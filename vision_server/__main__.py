"""``python -m thau.vision serve ...``"""

from thau.vision.cli import main

raise SystemExit(main())
