import sys

from scheduler.dashboard.main import main

__all__: list[str] = []

sys.exit(main())
