from inceptune.cli import main

raise SystemExit(main())
