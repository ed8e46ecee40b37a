from edgefusion.cli.main import main

raise SystemExit(main())
