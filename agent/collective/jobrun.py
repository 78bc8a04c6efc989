"""What each task of a scheduled training gang runs: one MPI world (or TCP ring) across agents.

    python -m agent.collective.jobrun [--backend auto|mpi|tcp] -- python3 train.py ARGS...

Every task of the gang is started by the agent of its own node, with the rank environment
the agent injects (``agent.rankenv``: ``KVRAFT_RANK``, ``KVRAFT_WORLD_SIZE``, ``KVRAFT_RUN_ID``,
``KVRAFT_ENDPOINTS``, ``KVRAFT_PLACEMENT``, ...). The ranks meet through kvraft
(``KvraftRendezvous`` under ``/jobs/<job>/launch/<run id>/``, keys on each rank's lease), so
no rank needs to know another's address in advance.

``mpi`` (the default when the Open MPI wheel and mpi4py are installed) is the launcher pattern
of Kubeflow's MPI Operator with kvraft in place of ssh:

1. every task starts an *exec server* and publishes ``ready/<rank>`` (for people and tools:
   nothing waits for it);
2. rank 0 runs ``mpirun -H r0:1,r1:1,... -n N`` at once -- before its own kvraft client is
   imported and connected, which overlaps mpirun's start -- with ``plm_ssh_agent`` set to
   the rsh agent below;
3. for "host" ``rK`` that rsh agent (a standard-library script relaying to rank 0's jobrun
   over loopback) writes the daemon's command line (``prted ...``) to ``exec/K`` and waits
   until rank K's exec server answers ``started/K``;
4. the exec server of task K runs the daemon *inside task K* (its process group, its cgroup,
   its GPUs' environment), without ``--daemonize`` so the agent's stop, kill and cancel reach
   it; the daemon starts MPI rank K there, which inherits the task's environment;
5. when mpirun ends, every daemon ends, every task exits with its status; a lost rank makes
   mpirun abort the world (non-zero exit), and the scheduler restarts the gang by policy.

Access is authenticated the way every kvraft client is (user/password or client
certificates); only a process that can write the job's keys can start a daemon in its tasks.

``tcp`` execs the program with ``KVRAFT_COLLECTIVE_BACKEND=tcp`` and
``KVRAFT_RENDEZVOUS=kvraft://``: the ring addresses go through the same kvraft rendezvous.

A program given as ``python3``/``python`` runs with this interpreter; a relative script path
that does not exist in the task's working directory is looked up in the kvraft source tree
(``examples/train_digits.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.collective.errors import CollectiveTimeout
from agent.collective.rendezvous import KvraftRendezvous, kvraft_from_url

__all__ = ["HOST_PREFIX", "first_error_line", "fresh_tmpdir", "main", "mpirun_argv", "resolve_program", "strip_daemonize",
           "sweep_tmpdirs"]

HOST_PREFIX = "r"  # mpirun's host names: r0, r1, ... (rank K's task hosts "rK")
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def resolve_program(argv: Sequence[str], cwd: Path | None = None) -> list[str]:
    out = list(argv)
    if not out:
        raise ValueError("missing program")
    if out[0] in ("python", "python3"):
        out[0] = sys.executable
    if len(out) > 1 and out[0] == sys.executable and out[1].endswith(".py") and not os.path.isabs(out[1]):
        here = (cwd or Path.cwd()) / out[1]
        if not here.exists() and (SOURCE_ROOT / out[1]).exists():
            out[1] = str(SOURCE_ROOT / out[1])
    return out


def strip_daemonize(command: str) -> str:
    """The daemon runs in the foreground inside the task (PRRTE's ``--daemonize`` would
    escape the task's process group)."""
    return " ".join(tok for tok in command.split(" ") if tok != "--daemonize")


def _mpirun() -> str | None:
    path = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    return shutil.which("mpirun", path=path)


def mpirun_argv(size: int, rsh_agent: str, program: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    exe = _mpirun()
    if exe is None:
        raise FileNotFoundError("mpirun not found: pip install 'kvraft[mpi]'")
    hosts = ",".join(f"{HOST_PREFIX}{r}:1" for r in range(size))
    return [exe, "--allow-run-as-root", "-H", hosts, "-n", str(size), "--map-by", "slot",
            "--prtemca", "plm_ssh_agent", rsh_agent, "--prtemca", "plm_ssh_no_tree_spawn", "1",
            # One rank per "host" (task). Tasks of one machine are separate hosts to PRRTE but
            # one node to hwloc: the shared-memory BTL and the HAN / sm collectives then mix the
            # two views and the world hung in its first MPI_Allreduce (measured here). The
            # communicator's own hierarchical mode follows the scheduler's placement instead.
            "--mca", "btl", "self,tcp", "--mca", "coll", "^han,sm", *extra, *program]


def _rdzv(env: dict[str, str], timeout_s: float) -> KvraftRendezvous:
    job = env.get("KVRAFT_JOB") or "default"
    return kvraft_from_url(f"kvraft:///jobs/{job}/launch", env.get("KVRAFT_RUN_ID", ""), timeout_s, env)


_T0 = time.monotonic()


def _log(msg: str) -> None:
    """One line on stderr, with the seconds since this wrapper started (the stages of forming
    the world: docs/e2e.md)."""
    print(f"jobrun[{os.environ.get('KVRAFT_TASK', '?')}] +{time.monotonic() - _T0:.2f}s: {msg}", file=sys.stderr,
          flush=True)


class ExecServer:
    """Runs the one daemon command mpirun sends to this rank, in this task."""

    def __init__(self, rdzv: KvraftRendezvous, rank: int, wait_s: float) -> None:
        self.rdzv = rdzv
        self.rank = rank
        self.wait_s = wait_s
        self.exit_code: int | None = None
        self.done = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.thread = threading.Thread(target=self._run, name="exec-server", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            doc = json.loads(self.rdzv.get(f"exec/{self.rank}", self.wait_s))
            command = strip_daemonize(str(doc["cmd"]))
            _log("mpirun asked for this rank's daemon; starting it")
            with fresh_tmpdir() as env:
                self.proc = subprocess.Popen(["/bin/sh", "-c", command], env=env)
                self.rdzv.set(f"started/{self.rank}", json.dumps({"pid": self.proc.pid}).encode())
                self.exit_code = self.proc.wait()
        except CollectiveTimeout:
            _log(f"mpirun never asked this rank to start within {self.wait_s:.0f} s")
            self.exit_code = 1
        except Exception as exc:  # report, never hang
            _log(f"exec server failed: {exc!r}")
            with _suppress():
                self.rdzv.set(f"started/{self.rank}", json.dumps({"error": repr(exc)}).encode())
            self.exit_code = 1
        finally:
            self.done.set()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def run_mpi(program: list[str], env: dict[str, str], mpi_args: list[str], wait_s: float) -> int:
    rank = int(env.get("KVRAFT_RANK", "0"))
    size = int(env.get("KVRAFT_WORLD_SIZE", "1"))
    # what the ranks inherit from the task (through the daemon): MPI, not a rendezvous
    os.environ["KVRAFT_COLLECTIVE_BACKEND"] = "mpi"
    os.environ.pop("KVRAFT_RENDEZVOUS", None)
    os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if rank == 0:
        return _run_rank0(program, env, size, mpi_args, wait_s)
    rdzv = _rdzv(dict(os.environ), wait_s)
    try:
        server = ExecServer(rdzv, rank, wait_s)
        server.start()
        _ready(rdzv, rank, env)
        server.done.wait()
        code = server.exit_code if server.exit_code is not None else 1
        if code != 0:
            _log(f"this rank's MPI daemon ended with exit code {code}: the world ended "
                 "(the ranks' output and the first error are in rank 0's log)")
        return code
    finally:
        rdzv.close()


def _ready(rdzv: KvraftRendezvous, rank: int, env: dict[str, str]) -> None:
    rdzv.set(f"ready/{rank}", json.dumps({"node": env.get("KVRAFT_NODE", ""), "pid": os.getpid()}).encode())
    _log(f"rank {rank} ready in {rdzv.prefix}")


def _run_rank0(program: list[str], env: dict[str, str], size: int, mpi_args: list[str], wait_s: float) -> int:
    """Rank 0 starts mpirun first, before its own kvraft client: mpirun's start-up overlaps
    the client's import and connection (and the other wrappers' start), and the relay holds
    mpirun's daemon requests until the client is there. It does not wait for every rank's
    ``ready`` either: a daemon request to a rank whose exec server is not up yet waits in
    kvraft (``exec/K``) until it is (``started/K``, ``wait_s``)."""
    _log(f"starting mpirun for {size} ranks")
    relay = RshRelay(None, wait_s)
    work = Path(env.get("KVRAFT_WORKDIR") or Path.cwd())
    agent_path = work / f".jobrun-rsh-{os.getpid()}"
    agent_path.write_text(RSH_SCRIPT.format(python=sys.executable, port=relay.port))
    agent_path.chmod(0o700)
    argv = mpirun_argv(size, str(agent_path), program, mpi_args)
    rdzv: KvraftRendezvous | None = None
    with fresh_tmpdir() as mpi_env:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=mpi_env)
        try:
            try:
                rdzv = _rdzv(dict(os.environ), wait_s)
            except BaseException as exc:
                relay.attach(None, f"rank 0 could not reach kvraft: {exc!r}")
                raise
            relay.attach(rdzv)
            server = ExecServer(rdzv, 0, wait_s)
            server.start()
            _ready(rdzv, 0, env)
            code, first_error = _watch(proc)
            rdzv.set("done", str(code).encode())
            server.done.wait(30)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if rdzv is not None:
                rdzv.close()
    if code != 0:  # the task log's last line says why (the scheduler's Failed event shows it)
        _log(f"the MPI world failed with exit code {code}"
             + (f"; first error: {first_error}" if first_error else "; no rank reported an error"))
    return code


ERROR_LINE = re.compile(r"^(?:\[[^\]]*\](?:<\w+>)?:?\s*)?([A-Za-z_][\w.]*(?:Error|Exception|Failure|Timeout|Exit)\b.*)$")


def first_error_line(line: str) -> str | None:
    """A Python exception line (``agent.collective.errors.PeerFailure: ...``) of a rank's
    output, without mpirun's ``[job,rank]<stderr>:`` tag (``--tag-output``), else None."""
    m = ERROR_LINE.match(line.strip())
    return m.group(1)[:400] if m and ":" in m.group(1) else None


def _watch(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """Pass mpirun's output through to ours; return its exit code and the first exception
    line any rank printed (the cause; later ones are usually its consequences)."""
    assert proc.stdout is not None
    first = ""
    raw = b"\n"
    for raw in proc.stdout:
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        if not first:
            first = first_error_line(raw.decode(errors="replace")) or ""
    if not raw.endswith(b"\n"):  # end mpirun's last line (once a lone NUL) before our reason on stderr
        sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()
    return proc.wait(), first


TMPDIR_PREFIX = "kvraft-mpi-"


def sweep_tmpdirs(parent: str | None = None) -> list[str]:
    """Remove ``kvraft-mpi-<pid>-*`` under ``parent`` (the temporary directory) whose
    process no longer exists; returns their paths. A PID reused by another process keeps its
    directory until that one ends too; names without a PID (older releases) are left alone."""
    root = Path(parent or tempfile.gettempdir())
    removed: list[str] = []
    try:
        entries = list(root.glob(f"{TMPDIR_PREFIX}*-*"))
    except OSError:
        return removed
    for entry in entries:
        pid_text = entry.name[len(TMPDIR_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(str(entry))
        except (PermissionError, OverflowError, OSError):
            continue  # alive under another user, or not a PID: not ours to judge
    return removed


@contextlib.contextmanager
def fresh_tmpdir() -> Iterator[dict[str, str]]:
    """The environment for mpirun or a PRRTE daemon with ``TMPDIR`` in a new directory of
    its own, removed afterwards. PRRTE and PMIx keep their session directory and rendezvous
    files under ``$TMPDIR/<prterun|prted>.<pid>``: a process SIGKILLed by ``kill-node`` leaves
    them behind, and a later daemon that got the same PID (PIDs wrap at 32768 on a busy
    machine) failed with "The PMIx server's listener thread failed to start" (seen here).

    The directory's name carries this process's PID (``kvraft-mpi-<pid>-<random>``). A jobrun
    stopped by SIGTERM or SIGKILL (how the agent stops a task) never reaches the removal, so
    each new one first removes the directories whose process is gone: a node keeps no more of
    them than it has jobruns alive."""
    sweep_tmpdirs()
    path = tempfile.mkdtemp(prefix=f"{TMPDIR_PREFIX}{os.getpid()}-")
    try:
        yield dict(os.environ, TMPDIR=path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


# mpirun's ssh agent: a standard-library script (-IS: ~20 ms to start, where importing the
# kvraft client took seconds per daemon on a loaded machine) that hands HOST and COMMAND to
# rank 0's jobrun over loopback; jobrun writes them to kvraft (``RshRelay``).
RSH_SCRIPT = """#!{python} -IS
import json, socket, sys
args = sys.argv[1:]
while args and args[0].startswith("-"):
    args = args[1:]
with socket.create_connection(("127.0.0.1", {port})) as s:
    s.sendall(json.dumps({{"host": args[0] if args else "", "cmd": " ".join(args[1:])}}).encode() + b"\\n")
    answer = json.loads(s.makefile().readline() or "{{}}")
if not answer.get("ok"):
    sys.stderr.write("jobrun rsh: %s\\n" % answer.get("error", "no answer"))
    sys.exit(1)
"""


class RshRelay:
    """Rank 0's loopback listener for ``RSH_SCRIPT``: one request per daemon. It may start
    before rank 0's rendezvous exists (``rdzv`` None): requests wait for ``attach``."""

    def __init__(self, rdzv: KvraftRendezvous | None, wait_s: float) -> None:
        import socket

        self.rdzv = rdzv
        self.error = ""
        self.attached = threading.Event()
        if rdzv is not None:
            self.attached.set()
        self.wait_s = wait_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._accept, name="rsh-relay", daemon=True).start()

    def attach(self, rdzv: KvraftRendezvous | None, error: str = "") -> None:
        """The rendezvous is there (or, with ``error``, will never be): answer the requests."""
        self.rdzv, self.error = rdzv, error
        self.attached.set()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="rsh-request", daemon=True).start()

    def _serve(self, conn: Any) -> None:
        with conn:
            try:
                req = json.loads(conn.makefile().readline())
                if not self.attached.wait(self.wait_s):
                    error = f"rank 0's rendezvous not ready within {self.wait_s:.0f} s"
                elif self.rdzv is None:
                    error = self.error or "rank 0 has no rendezvous"
                else:
                    error = relay_exec(self.rdzv, str(req.get("host", "")), str(req.get("cmd", "")), self.wait_s)
            except Exception as exc:  # answer, never hang mpirun
                error = repr(exc)
            conn.sendall(json.dumps({"ok": not error, "error": error}).encode() + b"\n")


def relay_exec(rdzv: KvraftRendezvous, host: str, command: str, wait_s: float) -> str:
    """Ask rank K's exec server to run ``command``; "" when it started, else the reason."""
    if not host.startswith(HOST_PREFIX) or not host[len(HOST_PREFIX):].isdigit() or not command:
        return f"cannot parse host {host!r} / command"
    rank = int(host[len(HOST_PREFIX):])
    rdzv.set(f"exec/{rank}", json.dumps({"cmd": command}).encode())
    answer = json.loads(rdzv.get(f"started/{rank}", wait_s))
    return f"rank {rank} could not start the daemon: {answer['error']}" if "error" in answer else ""


def rsh(args: list[str], wait_s: float) -> int:
    """``jobrun --rsh HOST COMMAND...``: the same request as ``RSH_SCRIPT``, straight to kvraft
    (for use outside rank 0's jobrun, e.g. by hand)."""
    while args and args[0].startswith("-"):  # ssh options PRRTE may pass
        args = args[1:]
    rdzv = _rdzv(dict(os.environ), wait_s)
    try:
        error = relay_exec(rdzv, args[0] if args else "", " ".join(args[1:]), wait_s)
    finally:
        rdzv.close()
    if error:
        _log(f"rsh: {error}")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    wait_s = float(os.environ.get("KVRAFT_JOBRUN_WAIT_S", "300"))
    if raw[:1] == ["--rsh"]:
        return rsh(raw[1:], wait_s)
    if "--" not in raw:
        print("usage: python -m agent.collective.jobrun [--backend auto|mpi|tcp] [--mpi-arg A]... -- PROGRAM ARGS",
              file=sys.stderr)
        return 2
    split = raw.index("--")
    ap = argparse.ArgumentParser(prog="python -m agent.collective.jobrun")
    ap.add_argument("--backend", choices=["auto", "mpi", "tcp"], default=os.environ.get("KVRAFT_JOBRUN_BACKEND", "auto"))
    ap.add_argument("--mpi-arg", action="append", default=[], help="extra mpirun argument (repeatable)")
    ns = ap.parse_args(raw[:split])
    program = resolve_program(raw[split + 1 :])
    env = dict(os.environ)
    backend = ns.backend
    if backend == "auto":
        backend = "mpi" if _mpirun() is not None and _has_mpi4py() else "tcp"
    t0 = time.monotonic()
    if backend == "tcp":
        os.environ["KVRAFT_COLLECTIVE_BACKEND"] = "tcp"
        os.environ.setdefault("KVRAFT_RENDEZVOUS", "kvraft://")
        os.execv(program[0], program)
    code = run_mpi(program, env, list(ns.mpi_arg), wait_s)
    if code == 0:  # a failure's reason is the last line already (run_mpi)
        _log(f"mpirun world ended with {code} after {time.monotonic() - t0:.1f} s")
    return code


def _has_mpi4py() -> bool:
    import importlib.util

    return importlib.util.find_spec("mpi4py") is not None


if __name__ == "__main__":
    sys.exit(main())
