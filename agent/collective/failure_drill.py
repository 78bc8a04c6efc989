"""A failure drill, used by the tests and by ``bench --failure``: ranks exchange 1 MiB per
step; at step ``--at`` the victim rank crashes (``os._exit``), hangs (``SIGSTOP`` to
itself) or, with ``--mode absent``, stays alive but stops calling collectives (needs
``KVRAFT_COLLECTIVE_STALL_TIMEOUT_S``). Every survivor must raise ``PeerFailure``; it prints one line

    DETECTED rank=<r> after_s=<seconds since the victim's failure> error=<message> [links=<kinds>]

and exits with status 3. The victim writes the wall-clock time of its failure to
``--stamp`` first (same host, so ``time.time()`` is comparable).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

import agent.collective as gx

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["crash", "hang", "absent"], required=True)
    ap.add_argument("--victim", type=int, default=1)
    ap.add_argument("--at", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--stamp", required=True)
    ap.add_argument("--sync", action="store_true", help="blocking calls instead of async handles")
    ns = ap.parse_args(argv)
    comm = gx.init()
    grads = [np.full(1 << 18, comm.rank, np.float32)]
    try:
        for step in range(ns.steps):
            if comm.rank == ns.victim and step == ns.at:
                Path(ns.stamp).write_text(repr(time.time()))
                if ns.mode == "crash":
                    os._exit(1)
                if ns.mode == "absent":  # alive (heartbeats go on) but never joins again
                    time.sleep(3600)
                os.kill(os.getpid(), signal.SIGSTOP)
            if ns.sync:
                comm.allreduce(grads)
            else:
                h = comm.allreduce(grads, async_op=True)
                assert h is not None
                h.wait()
            time.sleep(0.01)
    except gx.PeerFailure as exc:
        detected = time.time()
        deadline = time.time() + 30
        while not Path(ns.stamp).exists() and time.time() < deadline:
            time.sleep(0.01)
        failed_at = float(Path(ns.stamp).read_text())
        links = getattr(comm.backend, "links", "-")  # ring backends: what the data links were
        print(f"DETECTED rank={comm.rank} after_s={detected - failed_at:.3f} error={exc} [links={links}]", flush=True)
        comm.close(barrier=False)
        time.sleep(0.5)  # mpirun tears the job down when one rank exits: let the others report
        return 3
    print(f"FINISHED rank={comm.rank} without detecting a failure", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
