from scheduler.bench.cli import main

raise SystemExit(main())
