from thau.chat.cli import main

raise SystemExit(main())
