import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dash_harness import browser, cluster3, page, procs  # noqa: E402,F401  (fixtures)
