from asyncmig.cli import main

raise SystemExit(main())
