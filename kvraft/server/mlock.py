"""``--memory-mlock`` (etcd 3.5: ``--experimental-memory-mlock``): the member's pages stay in RAM once touched.

etcd 3.5 locks its bbolt file's map (``mlock``) so a read never waits for the disk after the
page was first read. kvraft asks the kernel for the same on all of the process's memory:
``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)``. ``MCL_ONFAULT`` (Linux 4.4) locks a
page when it is first touched, so LMDB's large, sparse map costs only the pages the store
uses. The kernel refuses beyond ``RLIMIT_MEMLOCK`` unless the process has ``CAP_IPC_LOCK``;
the member then does not start, and says how to raise the limit.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["MlockError", "lock_memory", "locked_kib"]

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4


class MlockError(RuntimeError):
    """The kernel refused to lock the member's memory."""


def lock_memory() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        errno = ctypes.get_errno()
        raise MlockError(f"--memory-mlock: mlockall: {os.strerror(errno)} (raise the locked-memory limit: "
                         "LimitMEMLOCK=infinity in the systemd unit, ulimit -l unlimited, or CAP_IPC_LOCK)")


def locked_kib(pid: int | str = "self") -> int:
    """``VmLck`` of a process (``/proc/<pid>/status``), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    return 0
