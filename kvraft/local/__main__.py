import sys

from kvraft.local.cli import main

sys.exit(main())
