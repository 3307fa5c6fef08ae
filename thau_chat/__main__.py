from thau_chat.cli import main

raise SystemExit(main())
