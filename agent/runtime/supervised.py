"""What the runc and process drivers share: one state directory per attempt, a per-task
supervisor (``supervisor.py``) that outlives the agent, and re-attach from those files.

Layout under ``<data_dir>/tasks/<job>/<task>/``::

    workdir/                   shared by the task's attempts (checkpoints survive restarts)
    <attempt>/handle.json      written first: key, attempt, revision, spec, container id
              supervisor.json  what the supervisor runs
              shim.json        the supervisor's pid + start time (PID-reuse safe)
              started.json     the task's pid + start time
              stop.json        stop requested: signal and absolute SIGKILL deadline
              exit.json        exit code, signal, OOM, timestamps (written by the supervisor)
              lost.json        the supervisor died without exit.json; remains were killed
              cleaned.json     runtime resources released (logs kept)
              output.log[.N]   CRI-format log, rotated by the supervisor

Each step is crash-safe: files are written atomically (tmp, fsync, rename) and a state is
derived only from which files exist, so an agent SIGKILLed at any point finds the truth again.

Tasks of different tenants may run as different users (``spec.user``) on one node, so the
tree is closed to them: ``tasks/`` and each job's and task's directory are 0711 (a task can
reach its own work dir but list nothing), an attempt directory (the spec with its env, the
logs) is 0700, and a work dir with a user belongs to that user, 0700.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from agent.reconcile import AttemptState, ExitInfo, Observed
from agent.runtime.base import Capabilities, ExecResult, TaskRun, handle_gpus
from agent.runtime.cgroups import CgroupLayout, read_cgroup_stats
from kvraft.aio import cancel_and_wait

__all__ = [
    "StartFailure",
    "SupervisedRuntime",
    "clear_leftovers",
    "container_id",
    "doc_seconds",
    "exit_info",
    "pid_alive",
    "proc_start_time",
    "read_handle",
    "read_json",
    "run_command",
    "safe_name",
    "write_json",
]

SUPERVISOR = Path(__file__).with_name("supervisor.py")
STARTING_GRACE_S = 10.0  # a handle without a supervisor older than this was never started


class StartFailure(Exception):
    """The task cannot start (bad image, missing binary, impossible device request)."""

    def __init__(self, reason: str, message: str, exit_code: int = 128) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code


def write_json(path: Path, doc: dict[str, Any], sync: bool = True) -> None:
    """Atomic against any process crash (tmp + rename); ``sync`` adds fsync for power loss,
    used for the records that carry decisions (stop deadlines, exits, lost)."""
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(doc, f)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.rename(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def proc_start_time(pid: int, zombie: bool = False) -> int | None:
    """The start time of process ``pid``; None when there is none (or, unless ``zombie``, it
    has ended and awaits its reaper)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] == b"Z" and not zombie:
        return None  # a zombie has ended
    return int(fields[19])


def pid_alive(doc: dict[str, Any] | None) -> bool:
    """True when the process named by ``{"pid", "start_time"}`` still runs (not a reused pid).
    Without its start time (0: the supervisor found the task gone before it could read it) a
    record names no process: the pid alone may be anyone's by now."""
    pid = doc.get("pid") if doc else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    assert doc is not None
    st = proc_start_time(pid)
    return st is not None and st == doc.get("start_time")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def doc_seconds(doc: dict[str, Any] | None, name: str, default: float = 0.0) -> float:
    """A time or duration field of a state file; ``default`` when it is not a finite number
    >= 0 (a state file written by hand, or by a bug, must not stop the agent's passes)."""
    value = doc.get(name) if doc else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        return default
    return float(value)


def _handle_problem(doc: dict[str, Any] | None, adir: Path) -> str:
    """What is wrong with ``adir``'s handle ("" when nothing): it must name this attempt."""
    if doc is None:
        return "not a JSON object"
    key, attempt = key_from_dirs(adir.parent.parent.name, adir.parent.name), int(adir.name)
    if doc.get("key") != key or doc.get("attempt") != attempt or not _is_int(doc.get("attempt")):
        return f"names {doc.get('key')!r} attempt {doc.get('attempt')!r}, not {key!r} attempt {attempt}"
    if not _is_int(doc.get("revision")) or not isinstance(doc.get("id"), str) or not doc["id"]:
        return f"revision {doc.get('revision')!r}, id {doc.get('id')!r}"
    if not isinstance(doc.get("spec", {}), dict):
        return "its spec is not an object"
    return ""


def read_handle(adir: Path) -> dict[str, Any] | None:
    """``adir``'s ``handle.json`` when it reads as this attempt's handle, else None (absent;
    torn by a power loss, as it is not fsynced; written by hand)."""
    doc = read_json(adir / "handle.json")
    return doc if not _handle_problem(doc, adir) else None


_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(text: str) -> str:
    """``text`` with everything but letters, digits, ``_.-`` replaced (container/cgroup names)."""
    return _SAFE.sub("_", text)[:200]


CGROUP_PREFIX = "kvraft-agent"  # every node's tasks' cgroups live under <prefix>/<node>/


def node_cgroup_parent(node: str) -> str:
    """The cgroup (relative to each hierarchy's root) under which ``node``'s tasks run."""
    return f"{CGROUP_PREFIX}/{safe_name(node)}"


def remove_node_cgroups(node: str) -> bool:
    """SIGKILL whatever is left in ``node``'s task cgroups and remove them, parent included
    (``kvraft-agent reset``): what an agent leaves when it and its tasks are killed for good,
    e.g. a torn-down local cluster. False when there was nothing to remove (or no cgroups)."""
    layout = CgroupLayout.detect()
    return layout.usable and layout.kill_and_remove(node_cgroup_parent(node))


def clear_leftovers(adir: Path) -> None:
    """Delete what an agent killed while it removed ``adir`` left (no ``handle.json``, which a
    start writes first: no attempt runs there), so that a new attempt never reads an old
    attempt's exit."""
    if adir.is_dir() and not (adir / "handle.json").exists():
        shutil.rmtree(adir, ignore_errors=True)


def container_id(node: str, key: str, attempt: int) -> str:
    return safe_name(f"{node}-{key.replace('/', '-')}-{attempt}")


class SupervisedRuntime:
    """Base of the ``process`` and ``runc`` drivers. Subclasses fill in ``_prepare`` (what the
    supervisor runs), ``_kill_remains`` (kill a task whose supervisor is gone) and
    ``_release`` (free runtime resources)."""

    name = "supervised"

    def __init__(self, data_dir: Path, node: str, *, log_max_bytes: int = 10 * 1024 * 1024,
                 log_max_files: int = 5, notify_socket: str = "") -> None:
        self.data_dir = Path(data_dir)
        self.tasks_dir = self.data_dir / "tasks"
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        self.tasks_dir.chmod(0o711)
        self.node = node
        self.log_max_bytes = log_max_bytes
        self.log_max_files = log_max_files
        self.notify_socket = notify_socket
        self._starting: set[tuple[str, int]] = set()
        self.supervisor_python = sys.executable
        zsock = self.data_dir / "zygote.sock"
        self.zygote_socket = str(zsock) if len(str(zsock)) < 100 else ""
        self._zygote_started = False
        self._zygote_proc: asyncio.subprocess.Process | None = None
        self._zygote_lock = asyncio.Lock()
        self._zygote_requests = asyncio.Semaphore(16)  # the zygote forks one at a time; keep its backlog short
        self._files: dict[Path, dict[str, dict[str, Any]]] = {}

    # --- paths ---------------------------------------------------------------------------
    def task_dir(self, key: str) -> Path:
        job, _, task = key.partition("/")
        return self.tasks_dir / quote(job, safe="") / quote(task, safe="")

    def attempt_dir(self, key: str, attempt: int) -> Path:
        return self.task_dir(key) / str(attempt)

    def workdir(self, key: str) -> Path:
        return self.task_dir(key) / "workdir"

    def capabilities(self) -> Capabilities:  # pragma: no cover - overridden
        raise NotImplementedError

    # --- hooks -----------------------------------------------------------------------------
    async def _prepare(self, run: TaskRun, adir: Path, cid: str) -> dict[str, Any]:
        raise NotImplementedError

    async def _kill_remains(self, handle: dict[str, Any], adir: Path) -> None:
        raise NotImplementedError

    async def _release(self, handle: dict[str, Any], adir: Path) -> None:
        raise NotImplementedError

    # --- start -----------------------------------------------------------------------------
    async def start(self, run: TaskRun) -> None:
        adir = self.attempt_dir(run.key, run.attempt)
        if (adir / "handle.json").exists():
            return  # started before (an agent restart mid-start): observe() resolves it
        clear_leftovers(adir)
        self._files.pop(adir, None)
        adir.mkdir(parents=True, exist_ok=True)
        adir.chmod(0o700)
        for d in (adir.parent.parent, adir.parent):  # the job's and the task's: traverse only
            d.chmod(0o711)
        workdir = self.workdir(run.key)
        workdir.mkdir(parents=True, exist_ok=True)
        if run.spec.user:  # a task run as a user writes its work dir (checkpoints) as that user
            with contextlib.suppress(PermissionError):  # not root: the start fails on the user instead
                os.chown(workdir, *run.spec.user)
                workdir.chmod(0o700)
        cid = container_id(self.node, run.key, run.attempt)
        handle = {"key": run.key, "attempt": run.attempt, "revision": run.revision, "runtime": self.name,
                  "id": cid, "spec": run.spec.to_json(), "grace_s": run.spec.grace_s, "created_at": time.time()}
        self._starting.add((run.key, run.attempt))
        try:
            write_json(adir / "handle.json", handle, sync=False)
            try:
                try:
                    conf = await self._prepare(run, adir, cid)
                except OSError as exc:  # a full disk, a file in the way: no start, and no agent bug
                    raise StartFailure("StartError", f"preparing the task failed: {exc}") from exc
            except StartFailure as exc:
                (adir / "output.log").write_text(
                    f"{_rfc3339(time.time())} stderr F [agent] {exc.reason}: {exc.message}\n")
                write_json(adir / "exit.json", {"id": cid, "pid": 0, "exit_code": exc.exit_code, "signal": None,
                                                "oom_killed": False, "reason": exc.reason, "message": exc.message,
                                                "started_at": time.time(), "finished_at": time.time()})
                return
            conf.update({"id": cid, "notify": self.notify_socket,
                         "log": {"path": str(adir / "output.log"), "max_bytes": self.log_max_bytes,
                                 "max_files": self.log_max_files}})
            write_json(adir / "supervisor.json", conf, sync=False)
            if not await self._launch_via_zygote(adir):
                proc = await asyncio.create_subprocess_exec(
                    self.supervisor_python, "-I", "-S", str(SUPERVISOR), str(adir),
                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                )
                async with asyncio.timeout(120):
                    await proc.communicate()
        finally:
            self._starting.discard((run.key, run.attempt))

    # --- zygote (fork server for supervisors) -------------------------------------------------
    async def _launch_via_zygote(self, adir: Path) -> bool:
        """Ask the zygote to fork this attempt's supervisor; False when no zygote can be
        reached (nothing was sent: the caller starts the supervisor directly)."""
        if not self.zygote_socket:
            return False
        async with self._zygote_requests:
            return await self._zygote_request(adir)

    async def _zygote_request(self, adir: Path) -> bool:
        for _ in range(2):
            try:
                reader, writer = await asyncio.open_unix_connection(self.zygote_socket)
            except OSError:
                if not await self._start_zygote():
                    return False
                continue
            try:
                writer.write(f"{adir}\n".encode())
                await writer.drain()
                async with asyncio.timeout(120):
                    await reader.read()  # the supervisor's ready line, then EOF
            finally:
                writer.close()
            return True
        return False

    async def _start_zygote(self) -> bool:
        async with self._zygote_lock:
            pid_file = self.data_dir / "zygote.pid"
            old = read_json(pid_file)
            if self._zygote_started and pid_alive(old):
                return True  # another start (of this agent) won the race
            if pid_alive(old):  # an unreachable zygote, or one of an earlier agent: replace it
                assert old is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(old["pid"]), signal.SIGKILL)
            proc = await asyncio.create_subprocess_exec(
                self.supervisor_python, "-I", "-S", str(SUPERVISOR), "--zygote", self.zygote_socket, str(pid_file),
                str(os.getpid()), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
            for _ in range(500):
                if os.path.exists(self.zygote_socket) and (read_json(pid_file) or {}).get("pid") == proc.pid:
                    self._zygote_started = True
                    self._zygote_proc = proc
                    return True
                if proc.returncode is not None:
                    return False
                await asyncio.sleep(0.01)
            return False

    async def ping(self) -> None:
        """The supervisor runs on this host's Python: nothing more to check (runc and Docker
        check their own binary or daemon)."""

    async def close(self) -> None:
        """A deliberate stop of the agent: stop the zygote this runtime started (a fork server
        that owns no task) and leave every task running under its supervisor, as a stopped
        kubelet or containerd leaves its shims; the next agent re-attaches to them. (A crashed
        agent's zygote exits by itself: it asked for SIGTERM on its parent's death.)"""
        proc, self._zygote_proc = self._zygote_proc, None
        self._zygote_started = False
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        doc = read_json(self.data_dir / "zygote.pid")
        if doc is not None and doc.get("pid") == proc.pid:
            for path in (self.zygote_socket, str(self.data_dir / "zygote.pid")):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    # --- observe / recover -------------------------------------------------------------------
    def _attempt_dirs(self) -> list[Path]:
        out: list[Path] = []
        if not self.tasks_dir.is_dir():
            return out
        for job in self.tasks_dir.iterdir():
            if not job.is_dir():
                continue
            for task in job.iterdir():
                if not task.is_dir():
                    continue
                out.extend(a for a in task.iterdir() if a.name.isdigit() and a.is_dir())
        return out

    async def observe(self) -> list[Observed]:
        out: list[Observed] = []
        dirs = self._attempt_dirs()
        for gone in set(self._files) - set(dirs):
            del self._files[gone]
        for adir in dirs:
            obs = await self._observe_one(adir)
            if obs is not None:
                out.append(obs)
        return out

    def _cached(self, adir: Path, name: str, names: set[str] | None = None) -> dict[str, Any] | None:
        """Read-once cache of the files that never change once written (handle, shim,
        started, exit): a relist of 100 attempts then costs one directory read and one
        /proc read each. ``names``: the directory's listing, so absent files are not opened."""
        entry = self._files.setdefault(adir, {})
        if name not in entry:
            if names is not None and name not in names:
                return None
            doc = read_json(adir / name)
            if doc is None:
                return None
            entry[name] = doc
        return entry[name]

    async def _observe_one(self, adir: Path) -> Observed | None:
        try:
            names = set(os.listdir(adir))
        except OSError:
            return None
        if "handle.json" not in names:
            return None  # being created (start writes it first), or an agent died right before
        handle = self._cached(adir, "handle.json", names)
        problem = _handle_problem(handle, adir)
        if problem:
            return await self._unreadable(adir, problem)
        assert handle is not None
        key, attempt = handle["key"], handle["attempt"]
        base = {"key": key, "attempt": attempt, "revision": handle["revision"],
                "grace_s": doc_seconds(handle, "grace_s", 30.0), "gpus": handle_gpus(handle),
                "stop_requested": "stop.json" in names,
                "held": "cleaned.json" not in names}
        started = self._cached(adir, "started.json", names)
        started_at = doc_seconds(started, "started_at")
        exit_doc = self._cached(adir, "exit.json", names)
        if exit_doc is not None:
            return Observed(state=AttemptState.EXITED, started_at_s=doc_seconds(exit_doc, "started_at") or started_at,
                            exit=exit_info(exit_doc), **base)
        lost = self._cached(adir, "lost.json", names)
        if lost is not None:
            return Observed(state=AttemptState.LOST, started_at_s=started_at, exit=_lost_info(lost),
                            never_ran=lost.get("never_ran") is True, **base)
        shim = self._cached(adir, "shim.json")  # not from the listing: a missing shim can mean lost
        if pid_alive(shim):
            state = AttemptState.RUNNING if started else AttemptState.STARTING
            return Observed(state=state, started_at_s=started_at, **base)
        if (key, attempt) in self._starting:
            return Observed(state=AttemptState.STARTING, **base)
        if shim is None and time.time() - doc_seconds(handle, "created_at") < STARTING_GRACE_S:
            return Observed(state=AttemptState.STARTING, **base)
        # the supervisor is gone and recorded no exit: it may have just written exit.json
        exit_doc = self._cached(adir, "exit.json")
        if exit_doc is not None:
            return Observed(state=AttemptState.EXITED, started_at_s=started_at, exit=exit_info(exit_doc), **base)
        message = "the task's supervisor died; exit status unknown" if shim else "never started (agent died while starting)"
        await self._kill_remains(handle, adir)
        write_json(adir / "lost.json", {"at": time.time(), "message": message, "never_ran": shim is None})
        return Observed(state=AttemptState.LOST, started_at_s=started_at,
                        exit=ExitInfo(None, None, False, time.time(), "Lost", message), never_ran=shim is None, **base)

    def _rebuilt_handle(self, key: str, attempt: int) -> dict[str, Any]:
        """What an attempt whose handle does not read is known by: its directory's names."""
        return {"key": key, "attempt": attempt, "revision": 0, "id": container_id(self.node, key, attempt), "spec": {}}

    async def _unreadable(self, adir: Path, problem: str) -> Observed:
        """An attempt whose handle does not read: the placement it ran for is unknown, so
        whatever still runs of it is killed and it is ``LOST`` under no placement (revision
        0): the reconcile cleans and removes it like an attempt of a placement that went, and
        the task's last report decides what follows (``reconcile``, rule 3)."""
        key, attempt = key_from_dirs(adir.parent.parent.name, adir.parent.name), int(adir.name)
        lost = read_json(adir / "lost.json")
        if lost is None:
            shim = read_json(adir / "shim.json")
            if pid_alive(shim):  # first the supervisor, so that it records nothing more
                assert shim is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(shim["pid"], signal.SIGKILL)
            await self._kill_remains(self._rebuilt_handle(key, attempt), adir)
            lost = {"at": time.time(), "message": f"attempt state unreadable (handle.json: {problem}); "
                                                  "what ran of it was killed"}
            write_json(adir / "lost.json", lost)
        return Observed(key=key, attempt=attempt, revision=0, state=AttemptState.LOST, exit=_lost_info(lost),
                        held=not (adir / "cleaned.json").exists(), grace_s=0.0)

    # --- stop / cleanup / remove -------------------------------------------------------------
    async def stop(self, key: str, attempt: int, grace_s: float) -> None:
        adir = self.attempt_dir(key, attempt)
        if not (adir / "stop.json").exists():
            write_json(adir / "stop.json", {"signal": int(signal.SIGTERM), "deadline": time.time() + grace_s,
                                            "requested_at": time.time()})
        shim = read_json(adir / "shim.json")
        if pid_alive(shim):
            assert shim is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(shim["pid"]), signal.SIGUSR1)

    async def cleanup(self, key: str, attempt: int) -> None:
        adir = self.attempt_dir(key, attempt)
        if not adir.is_dir() or (adir / "cleaned.json").exists():
            return
        await self._release(read_handle(adir) or self._rebuilt_handle(key, attempt), adir)
        write_json(adir / "cleaned.json", {"at": time.time()}, sync=False)

    async def remove(self, key: str, attempt: int) -> None:
        adir = self.attempt_dir(key, attempt)
        await self.cleanup(key, attempt)
        await asyncio.to_thread(shutil.rmtree, adir, True)
        self._files.pop(adir, None)
        tdir = self.task_dir(key)
        if tdir.is_dir() and not any(p.name.isdigit() for p in tdir.iterdir()):
            await asyncio.to_thread(shutil.rmtree, tdir, True)
            with contextlib.suppress(OSError):
                tdir.parent.rmdir()

    # --- logs, stats, exec -------------------------------------------------------------------
    def log_files(self, key: str, attempt: int) -> list[Path]:
        adir = self.attempt_dir(key, attempt)
        rotated = sorted((p for p in adir.glob("output.log.*") if p.suffix[1:].isdigit()),
                         key=lambda p: -int(p.suffix[1:]))
        current = adir / "output.log"
        return rotated + ([current] if current.exists() else [])

    def attempts(self, key: str) -> list[int]:
        tdir = self.task_dir(key)
        if not tdir.is_dir():
            return []
        return sorted(int(p.name) for p in tdir.iterdir() if p.name.isdigit())

    async def stats(self, key: str, attempt: int) -> dict[str, Any]:
        started = read_json(self.attempt_dir(key, attempt) / "started.json")
        if not pid_alive(started):
            return {}
        assert started is not None
        return read_cgroup_stats(int(started["pid"]))

    async def exec(self, key: str, attempt: int, argv: list[str], timeout_s: float) -> ExecResult:
        raise NotImplementedError

    async def sweep(self) -> list[str]:
        return await self._sweep_leftovers()

    async def _sweep_leftovers(self) -> list[str]:
        """Delete what removes cut short left (an agent killed mid-rmtree): attempt directories
        without their handle, which a start writes first, and task directories, work dir
        included, that no attempt is left in. Only at start-up, when nothing is starting."""
        removed: list[str] = []
        if not self.tasks_dir.is_dir():
            return removed
        for job in [d for d in self.tasks_dir.iterdir() if d.is_dir()]:
            for tdir in [d for d in job.iterdir() if d.is_dir()]:
                for adir in [a for a in tdir.iterdir() if a.name.isdigit() and not (a / "handle.json").exists()]:
                    await asyncio.to_thread(shutil.rmtree, adir, True)
                    removed.append(str(adir.relative_to(self.data_dir)))
                if not any(a.name.isdigit() for a in tdir.iterdir()):
                    await asyncio.to_thread(shutil.rmtree, tdir, True)
                    removed.append(str(tdir.relative_to(self.data_dir)))
            with contextlib.suppress(OSError):
                job.rmdir()
        return removed


EXEC_DRAIN_S = 5.0  # after a timeout's kill, how long the rest of the output is waited for


async def run_command(argv: list[str], timeout_s: float, **kwargs: Any) -> ExecResult:
    """Run ``argv`` (in its own session) for at most ``timeout_s``. Past it, the command and
    whatever it started in its process group are killed, and what it wrote so far is the
    answer (exit code 124): output a child that escaped still holds open is not waited for
    beyond ``EXEC_DRAIN_S``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, **kwargs)
    except OSError as exc:
        return ExecResult(127, b"", str(exc).encode())
    out, err = bytearray(), bytearray()

    async def pump(stream: asyncio.StreamReader | None, into: bytearray) -> None:
        while stream is not None and (chunk := await stream.read(65536)):
            into.extend(chunk)

    done = asyncio.gather(pump(proc.stdout, out), pump(proc.stderr, err), proc.wait())
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(done)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(EXEC_DRAIN_S):
                await asyncio.shield(done)
        await cancel_and_wait(done)
        return ExecResult(124, bytes(out), bytes(err) + b"\n[agent] timed out")
    return ExecResult(proc.returncode if proc.returncode is not None else -1, bytes(out), bytes(err))



def exit_info(doc: dict[str, Any]) -> ExitInfo:
    code, sig = doc.get("exit_code"), doc.get("signal")
    return ExitInfo(
        exit_code=code if _is_int(code) else None,
        signal=sig if _is_int(sig) else None,
        oom_killed=doc.get("oom_killed") is True,
        finished_at_s=doc_seconds(doc, "finished_at"),
        reason=_text(doc, "reason"),
        message=_text(doc, "message"),
    )


def _lost_info(doc: dict[str, Any]) -> ExitInfo:
    return ExitInfo(None, None, False, doc_seconds(doc, "at"), "Lost", _text(doc, "message"))


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    return value if isinstance(value, str) else ""


def _rfc3339(t: float) -> str:
    secs = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{int((t - secs) * 1e9):09d}Z"


def key_from_dirs(job: str, task: str) -> str:
    return f"{unquote(job)}/{unquote(task)}"
