"""Whether the agent's data directory is still the one it started with.

The data directory holds every attempt's state (handles, supervisors' exit records, runc's
root). Removed (or replaced) while the agent runs, the agent would see no attempts, report
its running tasks lost and start them again beside the copies still running, on the same
GPUs. So each reconcile pass first checks the directory's identity (device and inode, taken
at start); when it changed the agent stops acting, kills what still runs of its tasks (the
runtime's sweep: every task cgroup or container of this node that no attempt owns) and
exits 1, naming the directory (``Agent.fatal``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataDirGone", "DirIdentity"]


class DataDirGone(RuntimeError):
    """The data directory was removed or replaced while the agent ran."""


class DirIdentity:
    def __init__(self, path: Path) -> None:
        self.path = path
        st = os.stat(path)
        self._id = (st.st_dev, st.st_ino)

    def check(self) -> None:
        """``DataDirGone`` naming what happened, when the directory is not the one of the start."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise DataDirGone(f"the data dir {self.path} was removed while the agent ran") from None
        if (st.st_dev, st.st_ino) != self._id:
            raise DataDirGone(f"the data dir {self.path} was replaced while the agent ran (another directory "
                              "is there now)")
