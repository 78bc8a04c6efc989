"""``python -m agent`` runs ``kvraft-agent``."""

import sys

from agent.main import main

sys.exit(main())
