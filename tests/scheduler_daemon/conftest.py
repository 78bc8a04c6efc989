import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import cluster3, procs  # noqa: F401  (fixtures)
