"""``python -m vision_server serve ...``"""

from vision_server.cli import main

raise SystemExit(main())
