from httpjail_py.cli import main

raise SystemExit(main())
