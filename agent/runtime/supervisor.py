"""The per-task supervisor (the containerd-shim / conmon pattern). Standard library only.

Run as ``python3 supervisor.py <state_dir>``; it reads ``<state_dir>/supervisor.json``::

    {"id": "<container id>", "mode": "process" | "runc",
     "argv": [...], "env": {...}, "cwd": "...",            # mode process
     "cgroup_dirs": [...], "cgroup_files": [[path, value], ...],   # created/written, then joined
     "oom_file": ".../memory.oom_control" | ".../memory.events" | "",
     "runc": {"binary": "runc", "root": "...", "bundle": "..."},    # mode runc
     "log": {"path": ".../output.log", "max_bytes": 10485760, "max_files": 5},
     "notify": "<agent data dir>/events.sock"}

What it does, in order (docs/design/agent.md, "Supervisor"):

1. Forks; the parent (the process the agent spawned) waits on a pipe until the task has
   started or failed to start, prints one line and exits, so the agent learns the outcome
   without polling. The child calls ``setsid``, becomes the child subreaper
   (``PR_SET_CHILD_SUBREAPER``) and shrugs off SIGHUP/SIGINT/SIGPIPE/SIGTERM (no-op
   handlers, so the task does not inherit them ignored): it outlives the agent.
2. Writes ``shim.json`` {pid, start_time} (start time = /proc/<pid>/stat field 22, against PID
   reuse), then starts the task with its stdout/stderr on pipes: ``process`` mode spawns it in
   its own session after joining the cgroups; ``runc`` mode runs ``runc run --detach`` and
   reaps the container init, which is re-parented to it.
3. Writes ``started.json`` {pid, start_time, started_at}, or ``exit.json`` with reason
   ``StartError`` when the task could not start (missing binary, runc error).
4. Copies the pipes into ``output.log`` in CRI format (``<RFC3339Nano> <stream> <P|F> <text>``),
   rotating by rename (``output.log`` -> ``.1`` -> ...; never copy-truncate).
5. On SIGUSR1 reads ``stop.json`` {signal, deadline}: sends the signal (to the process group,
   or ``runc kill``), then SIGKILL to everything left when the absolute ``deadline`` passes --
   the countdown survives an agent restart because the deadline is in the file. It also looks
   for ``stop.json`` every second: an agent killed between writing it and signalling sent
   nothing, and its successor, seeing the stop requested, asks for nothing more.
6. When the task ends: kills what is left of it, reads the OOM counter *before* anything is
   deleted (OOM only if it rose and the exit was SIGKILL), writes ``exit.json`` atomically
   {exit_code, signal, oom_killed, started_at, finished_at}, notifies the agent (a datagram
   on ``notify``) and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
CHUNK = 65536
PARTIAL_MAX = 16384
STOP_POLL_S = 1.0  # how often stop.json is looked for, should its SIGUSR1 never come


def now_rfc3339(t: float) -> str:
    secs = int(t)
    nanos = int((t - secs) * 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


def start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2 :].split()[19])


def write_json(path: str, doc: dict[str, Any], sync: bool = True) -> None:
    """Atomic against a crash of any process (tmp + rename); ``sync`` also against power loss."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.rename(tmp, path)
    if sync:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class RotatingLog:
    """CRI-format log lines, rotated by rename when the file would exceed ``max_bytes``."""

    def __init__(self, path: str, max_bytes: int, max_files: int) -> None:
        self.path = path
        self.max_bytes = max(max_bytes, 1024)
        self.max_files = max(max_files, 1)
        self.f = open(path, "ab")  # noqa: SIM115 - owned for the supervisor's life
        self.size = self.f.tell()

    def write(self, stream: str, tag: str, text: bytes, t: float) -> None:
        line = f"{now_rfc3339(t)} {stream} {tag} ".encode() + text + b"\n"
        if self.size and self.size + len(line) > self.max_bytes:
            self.rotate()
        self.f.write(line)
        self.size += len(line)

    def rotate(self) -> None:
        self.f.close()
        oldest = f"{self.path}.{self.max_files - 1}"
        if self.max_files == 1:
            os.unlink(self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(oldest)
            for n in range(self.max_files - 2, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            os.rename(self.path, f"{self.path}.1")
        self.f = open(self.path, "ab")  # noqa: SIM115
        self.size = 0

    def flush(self) -> None:
        self.f.flush()


class Supervisor:
    def __init__(self, state_dir: str, conf: dict[str, Any]) -> None:
        self.dir = state_dir
        self.conf = conf
        self.mode = conf["mode"]
        self.id = conf["id"]
        log = conf.get("log", {})
        self.log = RotatingLog(
            log.get("path", os.path.join(state_dir, "output.log")),
            int(log.get("max_bytes", 10 * 1024 * 1024)),
            int(log.get("max_files", 5)),
        )
        self.pid = 0
        self.pgid = 0
        self.status: int | None = None
        self.kill_deadline: float | None = None
        self.stop_signal_sent = False
        self.started_at = 0.0
        self.oom_start = 0
        self.reaped: dict[int, int] = {}  # statuses of children reaped before their pid was known

    # --- helpers -------------------------------------------------------------------------
    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def runc(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[bytes]:
        r = self.conf["runc"]
        argv = [r.get("binary", "runc"), "--root", r["root"], *args]
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=check)

    def oom_count(self) -> int:
        name = self.conf.get("oom_file") or ""
        if not name:
            return 0
        try:
            with open(name) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            pass
        return 0

    def _runc_oom_file(self) -> str:
        """The OOM counter of the cgroup runc put the init in, or "" to keep the configured one.

        An init that already ended (an OOM kill can come before ``runc run --detach`` returns) is
        a zombie, and the kernel shows a zombie in the root cgroup: that "/" is never the
        container's, so it is ignored rather than read as the root's counter."""
        try:
            with open(f"/proc/{self.pid}/cgroup") as f:
                lines = f.read().splitlines()
        except OSError:
            return ""
        for line in lines:
            _, controllers, rel = line.split(":", 2)
            if "memory" in controllers.split(","):
                return f"/sys/fs/cgroup/memory{rel}/memory.oom_control" if rel != "/" else ""
        for line in lines:
            if line.startswith("0::") and line[3:] != "/":
                return f"/sys/fs/cgroup{line[3:]}/memory.events"
        return ""

    def notify(self) -> None:
        target = self.conf.get("notify")
        if not target:
            return
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(self.dir.encode(), target)

    # --- start ---------------------------------------------------------------------------
    def setup_cgroups(self) -> None:
        for d in self.conf.get("cgroup_dirs", []):
            os.makedirs(d, exist_ok=True)
        for name, value in self.conf.get("cgroup_files", []):
            with open(name, "w") as f:
                f.write(str(value))

    def join_cgroups(self) -> None:  # runs in the child between fork and exec (the fallback)
        for d in self.conf.get("cgroup_dirs", []):
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write("0")

    def join_cgroups_as(self, uid: int, gid: int) -> Callable[[], None]:
        """The fallback for a task with a user: join the cgroups while still root, then drop
        to the user (Popen's own ``user=`` would drop before ``preexec_fn`` runs)."""
        def preexec() -> None:
            self.join_cgroups()
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        return preexec

    @staticmethod
    def go_home(homes: list[str]) -> None:
        for home in homes:  # best effort: kill_cgroup never kills this process anyway
            with contextlib.suppress(OSError):
                _write(os.path.join(home, "cgroup.procs"), "0")

    def cgroup_moves(self) -> list[tuple[str, str]] | None:
        """``(task leaf, this process's own cgroup)`` per hierarchy, so the supervisor can step
        into the task's cgroups around a plain spawn (the child inherits them) and step back
        out. None when a hierarchy's home cannot be told: then the child joins them itself
        between fork and exec, which costs a Python-level fork (5-13 ms here vs 1.6 ms)."""
        dirs = self.conf.get("cgroup_dirs", [])
        rel = str(self.conf.get("cgroup") or "").strip("/")
        if not dirs or not rel:
            return None
        try:
            with open("/proc/self/cgroup") as f:
                own = [line.rstrip("\n").split(":", 2) for line in f if line.strip()]
        except OSError:
            return None
        moves = []
        for leaf in dirs:
            if not leaf.rstrip("/").endswith("/" + rel):
                continue  # a parent: created, never joined
            root = leaf.rstrip("/")[: -len(rel) - 1]
            names = set(os.path.basename(root).split(","))
            home = next((path for _, ctrls, path in own if ctrls and names <= set(ctrls.split(","))), None)
            if home is None and os.path.exists(os.path.join(root, "cgroup.controllers")):
                home = next((path for _, ctrls, path in own if not ctrls), None)  # v2: the unified hierarchy
            if home is None:
                return None
            moves.append((leaf, root + home))
        return moves or None

    def start(self, out_w: int, err_w: int) -> str:
        """Start the task; return "" or the reason it could not start."""
        if self.mode == "process":
            try:
                self.setup_cgroups()
            except OSError as exc:
                return f"cgroup setup failed: {exc}"
            self.oom_start = self.oom_count()
            homes: list[str] = []  # where this supervisor returns to after the spawn
            try:
                for leaf, home in self.cgroup_moves() or ():
                    _write(os.path.join(leaf, "cgroup.procs"), "0")
                    homes.append(home)
            except OSError:
                self.go_home(homes)
                homes = []
            preexec = self.join_cgroups if self.conf.get("cgroup_dirs") and not homes else None
            ids: dict[str, Any] = {}
            user = self.conf.get("user")  # [uid, gid]: the task runs as it, with no supplementary groups
            if user and preexec is None:
                ids = {"user": user[0], "group": user[1], "extra_groups": []}
            elif user:
                preexec = self.join_cgroups_as(user[0], user[1])
            try:
                try:
                    proc = subprocess.Popen(
                        self.conf["argv"],
                        env=self.conf.get("env"),
                        cwd=self.conf.get("cwd") or None,
                        stdin=subprocess.DEVNULL,
                        stdout=out_w,
                        stderr=err_w,
                        start_new_session=True,
                        preexec_fn=preexec,
                        close_fds=True,
                        **ids,
                    )
                finally:
                    self.go_home(homes)
            except FileNotFoundError as exc:
                return f"executable not found: {exc.filename or self.conf['argv'][0]}"
            except PermissionError as exc:
                return f"permission denied: {exc.filename or self.conf['argv'][0]}"
            except (OSError, subprocess.SubprocessError) as exc:
                return f"cannot start {self.conf['argv'][0]}: {exc}"
            self.pid = proc.pid
            self.pgid = proc.pid
            proc.returncode = 0  # the supervisor reaps it itself (waitpid loop), not Popen
            return ""
        runc_log = self.path("runc.log")
        r = self.conf["runc"]
        argv = [r.get("binary", "runc"), "--root", r["root"], "--log", runc_log, "--log-format", "json",
                "run", "--detach", "--pid-file", self.path("init.pid"), "--bundle", r["bundle"], self.id]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, close_fds=True)
        except OSError as exc:
            return f"cannot run runc: {exc}"
        rc = self.wait_child(proc.pid)
        if rc != 0:
            return f"runc run failed (status {rc}): {last_runc_error(runc_log)}"
        with open(self.path("init.pid")) as f:
            self.pid = int(f.read().strip())
        if self.pid in self.reaped:  # the init already ended while runc was returning
            self.status = self.reaped.pop(self.pid)
        self.conf["oom_file"] = self._runc_oom_file() or self.conf.get("oom_file", "")
        self.oom_start = 0  # a fresh cgroup per attempt
        return ""

    def wait_child(self, pid: int) -> int:
        """Block until ``pid`` ends (reaping anything else that ends meanwhile)."""
        while True:
            try:
                got, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return -1
            if got == pid:
                return os.waitstatus_to_exitcode(status)
            self.reaped[got] = status

    # --- run -----------------------------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                got, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if got == 0:
                return
            if got == self.pid:
                self.status = status
            else:
                self.reaped[got] = status

    def send(self, sig: int) -> None:
        if self.mode == "process":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)
            if sig == signal.SIGKILL:
                self.kill_cgroup()
        else:
            name = signal.Signals(sig).name
            args = ["kill", "--all", self.id, name] if sig == signal.SIGKILL else ["kill", self.id, name]
            sent = False
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                sent = self.runc(*args).returncode == 0
            if not sent and self.status is None:  # runc does not know it (its state dir gone): tini passes it on
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
            if sig == signal.SIGKILL and self.status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)

    def kill_cgroup(self) -> None:
        for d in self.conf.get("cgroup_dirs", []):
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids = [int(p) for p in f.read().split()]
            except OSError:
                continue
            for p in pids:
                if p == os.getpid():
                    continue  # never this supervisor, whatever happened to its cgroup moves
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)

    def check_stop(self) -> None:
        try:
            with open(self.path("stop.json")) as f:
                stop = json.load(f)
        except (OSError, ValueError):
            return
        if not self.stop_signal_sent:
            self.stop_signal_sent = True
            self.send(int(stop.get("signal", signal.SIGTERM)))
        self.kill_deadline = float(stop.get("deadline", time.time()))

    def run(self, ready_w: int) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGUSR1, lambda *_: None)
        self.started_at = time.time()
        error = self.start(out_w, err_w)
        os.close(out_w)
        os.close(err_w)
        if error:
            self.finish_error(error, out_r, err_r)
            os.write(ready_w, f"error {error}\n".encode())
            os.close(ready_w)
            self.notify()
            return
        try:
            pid_start = start_time(self.pid)
        except (OSError, ValueError):
            pid_start = 0  # already gone; the exit is recorded below
        write_json(self.path("started.json"), {"pid": self.pid, "start_time": pid_start,
                                               "started_at": self.started_at}, sync=False)
        os.write(ready_w, f"started {self.pid}\n".encode())
        os.close(ready_w)
        sel = selectors.DefaultSelector()
        partial = {out_r: b"", err_r: b""}
        names = {out_r: "stdout", err_r: "stderr"}
        sel.register(out_r, selectors.EVENT_READ)
        sel.register(err_r, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        open_fds = {out_r, err_r}
        self.check_stop()
        drain_until: float | None = None
        stop_poll_at = 0.0
        while True:
            self.reap()
            if not self.stop_signal_sent and time.monotonic() >= stop_poll_at:
                # the agent signals after writing stop.json; one killed in between sent nothing
                stop_poll_at = time.monotonic() + STOP_POLL_S
                if os.path.exists(self.path("stop.json")):
                    self.check_stop()
            if self.status is not None and drain_until is None:
                # the task ended: nothing of it may outlive it (daemonized children holding the pipes)
                if self.mode == "process":
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(self.pgid, signal.SIGKILL)
                    self.kill_cgroup()
                drain_until = time.monotonic() + 2.0
            if not open_fds and self.status is not None:
                break
            if drain_until is not None and time.monotonic() > drain_until:
                break
            now = time.time()
            if self.kill_deadline is not None and self.status is None and now >= self.kill_deadline:
                self.send(signal.SIGKILL)
                self.kill_deadline = now + 1.0  # repeat until it is gone
            timeout = 0.5
            if self.kill_deadline is not None:
                timeout = max(0.0, min(timeout, self.kill_deadline - now))
            for key, _ in sel.select(timeout):
                fd = key.fd
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        sigs = os.read(wake_r, 256)
                        if signal.SIGUSR1 in sigs:
                            self.check_stop()
                    continue
                try:
                    data = os.read(fd, CHUNK)
                except OSError as exc:
                    if exc.errno == errno.EAGAIN:
                        continue
                    data = b""
                t = time.time()
                if not data:
                    if partial[fd]:
                        self.log.write(names[fd], "P", partial[fd], t)
                        partial[fd] = b""
                    sel.unregister(fd)
                    os.close(fd)
                    open_fds.discard(fd)
                    continue
                buf = partial[fd] + data
                *lines, rest = buf.split(b"\n")
                for line in lines:
                    self.log.write(names[fd], "F", line, t)
                while len(rest) > PARTIAL_MAX:
                    self.log.write(names[fd], "P", rest[:PARTIAL_MAX], t)
                    rest = rest[PARTIAL_MAX:]
                partial[fd] = rest
            self.log.flush()
        for fd in open_fds:
            if partial[fd]:
                self.log.write(names[fd], "P", partial[fd], time.time())
            os.close(fd)
        self.log.flush()
        assert self.status is not None
        self.finish(self.status)
        self.notify()

    def finish_error(self, error: str, out_r: int, err_r: int) -> None:
        t = time.time()
        for fd, name in ((out_r, "stdout"), (err_r, "stderr")):
            os.set_blocking(fd, False)
            with contextlib.suppress(OSError):
                data = os.read(fd, CHUNK)
                for line in data.splitlines():
                    self.log.write(name, "F", line, t)
            os.close(fd)
        self.log.write("stderr", "F", f"[supervisor] {error}".encode(), t)
        self.log.flush()
        code = 127 if "not found" in error else 126 if "permission" in error else 128
        self.remove_cgroups()
        write_json(self.path("exit.json"), {"id": self.id, "pid": 0, "exit_code": code, "signal": None,
                                            "oom_killed": False, "reason": "StartError", "message": error,
                                            "started_at": self.started_at, "finished_at": time.time()})

    def finish(self, status: int) -> None:
        finished = time.time()
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = 128 + sig if sig is not None else os.WEXITSTATUS(status)
        rose = self.oom_count() > self.oom_start
        oom = rose and (sig == signal.SIGKILL or code == 137)
        self.remove_cgroups()
        write_json(self.path("exit.json"), {"id": self.id, "pid": self.pid, "exit_code": code, "signal": sig,
                                            "oom_killed": oom, "reason": "", "message": "",
                                            "started_at": self.started_at, "finished_at": finished})

    def remove_cgroups(self) -> None:
        for d in self.conf.get("cgroup_dirs", []):
            with contextlib.suppress(OSError):
                os.rmdir(d)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def last_runc_error(path: str) -> str:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return "no runc log"
    for line in reversed(lines):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("level") in ("error", "fatal"):
            return str(doc.get("msg", ""))[:2000]
    return (lines[-1] if lines else "no runc log")[:2000]


def _ignore(signum: int, frame: object) -> None:
    return None


def become_supervisor(state_dir: str, ready_w: int) -> int:
    """In a freshly forked child: detach, become subreaper, supervise ``state_dir``'s task."""
    with open(os.path.join(state_dir, "supervisor.json")) as f:
        conf = json.load(f)
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # survive the agent's session ending and stray signals -- but with a handler, not SIG_IGN:
    # an ignored disposition survives exec, and the task (or runc) would inherit SIGTERM ignored
    # and only ever die by the SIGKILL at the end of its grace period. Handlers reset on exec.
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # subprocess restores SIGPIPE for the task
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    err = os.open(os.path.join(state_dir, "supervisor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(err, 2)
    os.close(null)
    os.close(err)
    me = os.getpid()
    write_json(os.path.join(state_dir, "shim.json"), {"pid": me, "start_time": start_time(me)}, sync=False)
    sup = Supervisor(state_dir, conf)
    try:
        sup.run(ready_w)
    except BaseException as exc:  # record why, so the agent reports it instead of LOST
        print(f"supervisor failed: {exc!r}", file=sys.stderr, flush=True)
        raise
    return 0


PR_SET_PDEATHSIG = 1


def zygote(sock_path: str, pid_file: str, parent: int = 0) -> int:
    """Fork server: one process with this module imported forks a supervisor per request
    (a line with the attempt's state dir) and answers the supervisor's ready line. Forking a
    warm interpreter costs a millisecond; starting one costs tens. Supervisors ``setsid`` and
    do not depend on the zygote: killing it (or the agent) leaves every task running.

    ``parent`` (the agent's pid): the zygote asks for SIGTERM when its parent dies, so an
    agent that crashed leaves no zygote behind (a stopped agent terminates it itself). The
    setting is cleared in forked children, so supervisors are unaffected."""
    with contextlib.suppress(OSError):  # already a session leader when started with a new session
        os.setsid()
    if parent:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the agent died before the request took effect
            return 0
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are supervisors' launch forks: auto-reap
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock_path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1024)
    me = os.getpid()
    write_json(pid_file, {"pid": me, "start_time": start_time(me)}, sync=False)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    while True:
        conn, _ = server.accept()
        request = b""
        try:
            while not request.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                request += chunk
            state_dir = request.decode(errors="replace").strip()
            if not state_dir or not os.path.isdir(state_dir):
                if state_dir:
                    conn.sendall(b"error no such state dir\n")
                conn.close()
                continue
        except OSError:  # a client that went away must never take the zygote down
            conn.close()
            continue
        if os.fork() == 0:
            server.close()
            code = 1
            try:
                code = become_supervisor(state_dir, conn.detach())
            finally:
                os._exit(code)
        conn.close()


def main(argv: list[str]) -> int:
    if len(argv) in (4, 5) and argv[1] == "--zygote":
        return zygote(argv[2], argv[3], int(argv[4]) if len(argv) == 5 else 0)
    state_dir = os.path.abspath(argv[1])
    ready_r, ready_w = os.pipe()
    if os.fork() != 0:
        os.close(ready_w)
        chunks = []
        while True:
            data = os.read(ready_r, 4096)
            if not data:
                break
            chunks.append(data)
        line = b"".join(chunks).decode().strip()
        print(line or "error supervisor died before starting the task", flush=True)
        return 0 if line.startswith("started") else 1
    os.close(ready_r)
    return become_supervisor(state_dir, ready_w)


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    os._exit(code)
