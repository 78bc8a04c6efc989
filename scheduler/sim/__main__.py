from scheduler.sim.cli import main

raise SystemExit(main())
