"""Processes of a local cluster: start in the background, identify by PID *and* start time,
find everything a node agent started, and kill by PID.

Nothing here imports the scheduler or the agent (house rule): they are started with
``python -m`` and reached over HTTP.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from kvraft.testing.ports import free_port

__all__ = [
    "agent_descendants",
    "free_port",
    "http_ok",
    "kill_pids",
    "pid_alive",
    "proc_start_time",
    "spawn",
]


def proc_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks since boot): with the PID, an identity
    that a recycled PID does not share."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return int(fields[19])


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, session id) of a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[3])


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    st = _stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start_time is None or proc_start_time(pid) == start_time


def spawn(argv: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start in its own session (a terminal's Ctrl-C does not reach it), output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)


def http_ok(url: str, path: str = "/health", timeout_s: float = 2.0) -> bool:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout_s)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _json(path: Path) -> dict[str, object] | None:
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(path.read_text())
        return doc if isinstance(doc, dict) else None
    return None


def _is_task(pid: int) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return any(v.startswith(b"KVRAFT_JOB=") for v in environ.split(b"\0"))


def agent_descendants(agent_pid: int | None, data_dir: Path) -> set[int]:
    """Every live process a node agent started: its children, its zygote, each task's
    supervisor and the task's whole session (the process runtime starts every task in a
    session of its own; MPI daemons and ranks started inside a task stay in it), and any
    process of a task (``KVRAFT_JOB`` in its environment) whose working directory is inside
    the agent's data directory."""
    sessions: set[int] = set()
    pids: set[int] = set()
    records = [data_dir / "zygote.pid"]
    tasks = data_dir / "tasks"
    if tasks.is_dir():
        for name in ("shim.json", "started.json", "supervisor.json"):
            records += tasks.glob(f"*/*/*/{name}")
    for path in records:
        # {"pid", "start_time"}: a PID whose start time differs was reused by another process
        # (the record outlived its process: a crash, a reboot) and is not ours, nor its session
        doc = _json(path) or {}
        pid, start = doc.get("pid"), doc.get("start_time")
        if isinstance(pid, int) and pid > 0 and isinstance(start, int) and pid_alive(pid, start):
            pids.add(pid)
    for pid in list(pids):
        st = _stat(pid)
        if st is not None:
            sessions.add(st[2])
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[str, int, int]] = {}
    for pid in _all_pids():
        st = _stat(pid)
        if st is None:
            continue
        stats[pid] = st
        children.setdefault(st[1], []).append(pid)
    root = str(data_dir.resolve())
    for pid, (_, _, sid) in stats.items():
        if sid in sessions and sid not in (0, 1):
            pids.add(pid)
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(f"/proc/{pid}/cwd")
            # a task's (every runtime gives KVRAFT_JOB), not an operator's shell in that directory
            if (cwd == root or cwd.startswith(root + "/")) and _is_task(pid):
                pids.add(pid)
    # descendants of everything found, and of the agent itself
    todo = list(pids) + ([agent_pid] if agent_pid else [])
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in pids:
                pids.add(child)
                todo.append(child)
    pids.discard(os.getpid())
    return {p for p in pids if p in stats and stats[p][0] not in ("Z", "X")}


def kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL) -> int:
    n = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            n += 1
    return n


def wait_gone(pids: Iterable[int], timeout_s: float) -> set[int]:
    """The PIDs still alive after ``timeout_s``."""
    left = set(pids)
    deadline = time.monotonic() + timeout_s
    while left and time.monotonic() < deadline:
        left = {p for p in left if pid_alive(p)}
        if left:
            time.sleep(0.05)
    return left
