"""``process``: plain host processes under the per-task supervisor, for machines with no
container runtime.

Each task runs in its own session and process group, in its own cgroup when the cgroup tree
is writable (memory, cpu quota, pids and cpuset limits enforced; OOM detected from the cgroup
counter); otherwise no limits (``capabilities().limits`` says so). GPUs are fenced only by
``CUDA_VISIBLE_DEVICES`` / ``NVIDIA_VISIBLE_DEVICES``; there is no filesystem isolation.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from agent.runtime.base import Capabilities, ExecResult, TaskRun
from agent.runtime.cgroups import CgroupLayout
from agent.runtime.supervised import (
    CGROUP_PREFIX,
    StartFailure,
    SupervisedRuntime,
    node_cgroup_parent,
    pid_alive,
    proc_start_time,
    read_handle,
    read_json,
    run_command,
)

__all__ = ["ProcessRuntime"]



def _task_group(pid: int, start_time: Any) -> bool:
    """Whether process group ``pid`` can only be the task's (it led it, in its own session):
    a group outlives its leader, and no process can take the pid while any of it lives, so the
    pid must be no process's now, or still the task's (alive, or a zombie no one reaped)."""
    st = proc_start_time(pid, zombie=True)
    return st is None or st == start_time


class ProcessRuntime(SupervisedRuntime):
    name = "process"

    def __init__(self, data_dir: Path, node: str, *, cgroups: CgroupLayout | None = None, **kwargs: Any) -> None:
        super().__init__(data_dir, node, **kwargs)
        self.cgroups = cgroups if cgroups is not None else CgroupLayout.detect()
        self.cgroup_parent = node_cgroup_parent(node)

    def capabilities(self) -> Capabilities:
        return Capabilities(isolation="none", limits=self.cgroups.usable, devices=False,
                            network_namespaces=False, oom_detect=self.cgroups.usable, reattach=True)

    def _cgroup_rel(self, cid: str) -> str:
        return f"{self.cgroup_parent}/{cid}"

    def _env(self, run: TaskRun, workdir: Path) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": str(workdir),
               "LANG": "C.UTF-8", "KVRAFT_JOB": run.job, "KVRAFT_TASK": run.task,
               "KVRAFT_ATTEMPT": str(run.attempt), "KVRAFT_WORKDIR": str(workdir)}
        env.update(run.devices.env())
        env.update(dict(run.spec.env))
        return env

    async def _prepare(self, run: TaskRun, adir: Path, cid: str) -> dict[str, Any]:
        spec = run.spec
        res = spec.resources
        limited = bool(res.memory_mib or res.cpu_milli or res.pids or res.cpuset)
        if limited and not self.cgroups.usable:
            raise StartFailure("InvalidSpec", "resource limits requested but no writable cgroup hierarchy here")
        if spec.image not in ("", "host"):
            raise StartFailure("InvalidSpec", f"the process runtime runs host binaries only; image {spec.image!r} "
                                              "needs the runc or docker runtime")
        if spec.network not in ("host", ""):
            raise StartFailure("InvalidSpec", f"the process runtime has no network namespaces (network {spec.network!r})")
        workdir = self.workdir(run.key)
        cwd = str(_in_workdir(spec.workdir, workdir)) if spec.workdir else str(workdir)
        if not Path(cwd).is_dir():
            raise StartFailure("InvalidSpec", f"spec.workdir {spec.workdir!r} does not exist")
        env = self._env(run, workdir)
        prog = str(_in_workdir(spec.command[0], workdir)) if spec.command[0].startswith("/") else spec.command[0]
        if "/" not in prog and shutil.which(prog, path=env.get("PATH")) is None:
            raise StartFailure("StartError", f"executable not found: {prog!r} (PATH={env.get('PATH')})", 127)
        conf: dict[str, Any] = {"mode": "process", "argv": [prog, *spec.command[1:]], "env": env, "cwd": cwd}
        if spec.user:
            conf["user"] = list(spec.user)  # [uid, gid]: the supervisor drops to it for the task
        if self.cgroups.usable:
            rel = self._cgroup_rel(cid)
            dirs, files = self.cgroups.plan(rel, res)
            conf.update({"cgroup_dirs": dirs, "cgroup_files": files, "oom_file": self.cgroups.oom_file(rel),
                         "cgroup": rel})
        return conf

    async def _kill_remains(self, handle: dict[str, Any], adir: Path) -> None:
        started = read_json(adir / "started.json") or {}
        pid = started.get("pid")
        if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and _task_group(pid, started.get("start_time")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if self.cgroups.usable:
            self.cgroups.kill_and_remove(self._cgroup_rel(handle["id"]))

    async def _release(self, handle: dict[str, Any], adir: Path) -> None:
        if self.cgroups.usable:
            rel = self._cgroup_rel(handle["id"])
            self.cgroups.kill_and_remove(rel)
            self.cgroups.remove_empty_parents(rel, CGROUP_PREFIX)

    async def exec(self, key: str, attempt: int, argv: list[str], timeout_s: float) -> ExecResult:
        adir = self.attempt_dir(key, attempt)
        conf = read_json(adir / "supervisor.json")
        if conf is None or not pid_alive(read_json(adir / "started.json")):
            return ExecResult(126, b"", b"task is not running")
        user = conf.get("user")  # an exec runs as the task does
        ids: dict[str, Any] = {"user": user[0], "group": user[1], "extra_groups": []} if user else {}
        return await run_command(argv, timeout_s, env=conf.get("env"), cwd=conf.get("cwd"), **ids)

    async def sweep(self) -> list[str]:
        """Kill and remove task cgroups of this agent that no attempt directory owns."""
        removed = await self._sweep_leftovers()
        if not self.cgroups.usable:
            return removed
        ids = set()
        for adir in self._attempt_dirs():
            handle = read_handle(adir)
            if handle:
                ids.add(handle["id"])
        for base in self.cgroups.dirs(self.cgroup_parent)[:1]:
            if not base.is_dir():
                continue
            for child in base.iterdir():
                if child.is_dir() and child.name not in ids:
                    self.cgroups.kill_and_remove(f"{self.cgroup_parent}/{child.name}")
                    removed.append(child.name)
        return removed


def _in_workdir(path: str, workdir: Path) -> Path:
    """A job's path on this host: ``/workdir`` and what is below it name the task's work dir,
    where runc and Docker mount it, so one job file runs on every runtime (a job's
    ``workdir: /workdir`` was InvalidSpec on a process node: no such host directory); any other
    absolute path is the host's own."""
    inside = Path(os.path.normpath(path))
    return workdir / inside.relative_to("/workdir") if inside.is_relative_to("/workdir") else Path(path)
