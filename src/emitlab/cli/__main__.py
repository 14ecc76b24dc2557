from emitlab.cli import main

raise SystemExit(main())
