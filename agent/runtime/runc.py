"""``runc``: one OCI bundle per attempt, run detached under the per-task supervisor.

The bundle follows the reference's verified recipe (docs/design/agent.md, "runc"): read-only
root (host ``/usr`` skeleton or an image directory / unpacked OCI layout), a writable task
work dir at ``/workdir``, tmpfs ``/tmp``, generated ``/etc``, tini (``tini-static`` bound at
``/dev/kvraft-init``) as PID 1 so SIGTERM reaches the task, memory / CPU / pids / cpuset
limits in ``/kvraft-agent/<node>/<id>`` cgroups, GPU and RDMA device nodes with
device-cgroup allow rules (everything else denied), ``NVIDIA_VISIBLE_DEVICES`` /
``CUDA_VISIBLE_DEVICES`` by UUID, ``IPC_LOCK`` and the memlock limit for RDMA, and host
network, a fresh network namespace (``none``) or a named one (a ``/run/netns/...`` path).

runc's state lives under a private ``--root`` (``<data_dir>/runc``), so ``sweep`` and
``runc list`` never see containers this agent did not create.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

from agent.runtime.base import Capabilities, ExecResult, RuntimeUnavailable, TaskRun
from agent.runtime.cgroups import CgroupLayout, cfs_quota_us
from agent.runtime.images import ImageError, host_rootfs, resolve_image
from agent.runtime.supervised import (
    CGROUP_PREFIX,
    StartFailure,
    SupervisedRuntime,
    node_cgroup_parent,
    read_handle,
    run_command,
    safe_name,
)

__all__ = ["RuncRuntime", "runc_available"]

DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
TINI_CANDIDATES = ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/bin/tini")
INIT_PATH = "/dev/kvraft-init"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def runc_available(binary: str = "runc") -> str:
    """'' when runc can run containers here, else the reason it cannot."""
    import os

    if shutil.which(binary) is None:
        return f"{binary} not installed (apt-get install runc)"
    if os.geteuid() != 0:
        return "runc needs root"
    if not CgroupLayout.detect().usable:
        return "no writable cgroup hierarchy"
    return ""


class RuncRuntime(SupervisedRuntime):
    name = "runc"

    def __init__(self, data_dir: Path, node: str, *, binary: str = "runc", **kwargs: Any) -> None:
        super().__init__(data_dir, node, **kwargs)
        why = runc_available(binary)
        if why:
            raise RuntimeUnavailable(why)
        self.binary = shutil.which(binary) or binary
        self.root = self.data_dir / "runc"
        self.root.mkdir(parents=True, exist_ok=True)
        self.images = self.data_dir / "images"
        self.cgroups = CgroupLayout.detect()
        self.cgroup_parent = node_cgroup_parent(node)
        self.init = next((p for p in TINI_CANDIDATES if Path(p).exists()), "")

    def capabilities(self) -> Capabilities:
        return Capabilities(isolation="container", limits=True, devices=True, network_namespaces=True,
                            oom_detect=True, reattach=True)

    async def ping(self) -> None:
        if not os.access(self.binary, os.X_OK):  # removed or broken by a package upgrade
            raise RuntimeUnavailable(f"the runc binary {self.binary} is gone or not executable")

    async def runc(self, *args: str, timeout_s: float = 60.0) -> ExecResult:
        return await run_command([self.binary, "--root", str(self.root), *args], timeout_s)

    # --- bundle ------------------------------------------------------------------------------
    async def _prepare(self, run: TaskRun, adir: Path, cid: str) -> dict[str, Any]:
        config = await asyncio.to_thread(self._bundle, run, adir, cid)
        bundle = adir / "bundle"
        (bundle / "config.json").write_text(json.dumps(config, indent=1))
        return {"mode": "runc", "runc": {"binary": self.binary, "root": str(self.root), "bundle": str(bundle)},
                "oom_file": self.cgroups.oom_file(f"{self.cgroup_parent}/{cid}")}

    def _bundle(self, run: TaskRun, adir: Path, cid: str) -> dict[str, Any]:
        spec = run.spec
        res = spec.resources
        bundle = adir / "bundle"
        uid, gid = spec.user or (0, 0)
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        ]
        if spec.image in ("", "host"):
            rootfs = bundle / "rootfs"
            host_rootfs(rootfs, uid=uid, gid=gid)
            mounts.append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
            search = [Path("/usr/local/sbin"), Path("/usr/local/bin"), Path("/usr/sbin"), Path("/usr/bin")]
            lookup_root = Path("/")
        else:
            try:
                rootfs = resolve_image(spec.image, self.images)
            except ImageError as exc:
                raise StartFailure("ImageError", str(exc)) from exc
            search = [Path(p) for p in PATH_ENV.split(":")]
            lookup_root = rootfs
            bundle.mkdir(parents=True, exist_ok=True)
        prog = spec.command[0]
        workdir = self.workdir(run.key)
        if "/" in prog:  # where the container's path is on the host: the work dir is mounted at /workdir
            inside = Path(posixpath.normpath(posixpath.join("/", spec.workdir or "/workdir", prog)))
            host = workdir / inside.relative_to("/workdir") if inside.is_relative_to("/workdir") \
                else lookup_root / inside.relative_to("/")
            found = host.exists() or host.is_symlink()
            if found and not host.is_symlink() and (host.is_dir() or not host.stat().st_mode & 0o111):
                what = "a directory" if host.is_dir() else "not executable"
                raise StartFailure("StartError", f"permission denied: {prog!r} is {what}", 126)
        else:
            found = any((lookup_root / d.relative_to("/") / prog).exists() for d in search)
        if not found:
            raise StartFailure("StartError", f"executable not found in the image: {prog!r}", 127)
        mounts.append({"destination": "/workdir", "type": "bind", "source": str(workdir), "options": ["rbind", "rw"]})
        if not self.init:
            raise StartFailure("StartError", "no tini on this host (apt-get install tini)")
        mounts.append({"destination": INIT_PATH, "type": "bind", "source": self.init, "options": ["bind", "ro"]})
        mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", "mode=1777", "size=262144k"]})
        env = {"PATH": PATH_ENV, "HOME": "/root" if uid == 0 else "/tmp", "LANG": "C.UTF-8",
               "KVRAFT_JOB": run.job, "KVRAFT_TASK": run.task, "KVRAFT_ATTEMPT": str(run.attempt),
               "KVRAFT_WORKDIR": "/workdir"}
        env.update(run.devices.env())
        env.update(dict(spec.env))
        caps = list(DEFAULT_CAPS)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 1048576 if nofile == resource.RLIM_INFINITY else nofile
        rlimits = [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}]
        devices: list[dict[str, Any]] = []
        allow: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
        for t, major in (("c", 1), ("c", 5), ("c", 136)):  # null/zero/full/random/urandom, tty/console/ptmx, pts
            allow.append({"allow": True, "type": t, "major": major, "access": "rwm"})
        nodes = [(f"/dev/nvidia{g.index}", g.major, g.minor) for g in run.devices.gpus]
        nodes += list(run.devices.control)
        if res.rdma:
            if not run.devices.rdma:
                raise StartFailure("InvalidSpec", "RDMA requested but this node has no RDMA devices")
            nodes += list(run.devices.rdma)
            caps.append("CAP_IPC_LOCK")
            memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
            memlock = 2**63 - 1 if memlock == resource.RLIM_INFINITY else memlock
            rlimits.append({"type": "RLIMIT_MEMLOCK", "hard": memlock, "soft": memlock})
        for path, major, minor in nodes:
            devices.append({"path": path, "type": "c", "major": major, "minor": minor, "fileMode": 0o666,
                            "uid": 0, "gid": 0})
            allow.append({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"})
        namespaces: list[dict[str, Any]] = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
        if spec.network == "none":
            namespaces.append({"type": "network"})
        elif spec.network == "job":
            namespaces.append({"type": "network", "path": self._job_netns(run.job)})
        elif spec.network not in ("host", ""):
            if not Path(spec.network).exists():
                raise StartFailure("InvalidSpec", f"network namespace {spec.network!r} does not exist")
            namespaces.append({"type": "network", "path": spec.network})
        resources: dict[str, Any] = {"devices": allow}
        if res.memory_mib:
            limit = res.memory_mib * 1024 * 1024
            resources["memory"] = {"limit": limit, "swap": limit}
        cpu: dict[str, Any] = {}
        if res.cpu_milli:
            cpu.update({"quota": cfs_quota_us(res.cpu_milli), "period": 100000})
        if res.cpuset:
            cpu["cpus"] = res.cpuset
        if cpu:
            resources["cpu"] = cpu
        if res.pids:
            resources["pids"] = {"limit": res.pids}
        return {
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": False,
                "user": {"uid": uid, "gid": gid},
                "args": [INIT_PATH, "-g", "-s", "--", *spec.command],
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": spec.workdir or "/workdir",
                "noNewPrivileges": True,
                "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
                "rlimits": rlimits,
            },
            "root": {"path": str(rootfs), "readonly": True},
            "hostname": safe_name(run.task)[:63] or "task",
            "mounts": mounts,
            "linux": {
                "cgroupsPath": f"/{self.cgroup_parent}/{cid}",
                "resources": resources,
                "devices": devices,
                "namespaces": namespaces,
                "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                                "/proc/scsi"],
                "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                  "/proc/sysrq-trigger"],
            },
        }

    # --- per-job network namespace -----------------------------------------------------------
    def _netns_name(self, job: str) -> str:
        return safe_name(f"kvraft-{self.node}-{job}")[:60]

    def _job_netns(self, job: str) -> str:
        """``/run/netns/kvraft-<node>-<job>``, created on first use: the job's tasks on this
        node share a loopback-only network namespace, isolated from other jobs and the host."""
        name = self._netns_name(job)
        path = Path("/run/netns") / name
        if not path.exists():
            add = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
            if add.returncode != 0 and not path.exists():
                raise StartFailure("StartError", f"cannot create network namespace {name}: {add.stderr.strip()}")
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], capture_output=True)
        return str(path)

    async def _release_job_netns(self, handle: dict[str, Any]) -> None:
        if handle.get("spec", {}).get("network") != "job":
            return
        job = handle["key"].split("/", 1)[0]
        for adir in self._attempt_dirs():
            other = read_handle(adir)
            if (other and other is not handle and other.get("id") != handle["id"]
                    and other["key"].split("/", 1)[0] == job and other.get("spec", {}).get("network") == "job"
                    and not (adir / "cleaned.json").exists()):
                return  # another task of the job still uses it
        await run_command(["ip", "netns", "delete", self._netns_name(job)], 30)

    # --- lifecycle ---------------------------------------------------------------------------
    async def _kill_remains(self, handle: dict[str, Any], adir: Path) -> None:
        cid = handle["id"]
        await self.runc("kill", "--all", cid, "KILL")
        for _ in range(50):
            state = await self.runc("state", cid)
            if state.exit_code != 0 or json.loads(state.stdout or b"{}").get("status") != "running":
                break
            await asyncio.sleep(0.1)
        await self.runc("delete", "--force", cid)

    async def _release(self, handle: dict[str, Any], adir: Path) -> None:
        cid = handle["id"]
        await self.runc("delete", "--force", cid)
        rel = f"{self.cgroup_parent}/{cid}"
        await asyncio.to_thread(self.cgroups.kill_and_remove, rel)
        await asyncio.to_thread(self.cgroups.remove_empty_parents, rel, CGROUP_PREFIX)
        bundle = adir / "bundle"
        await asyncio.to_thread(shutil.rmtree, bundle, True)
        await self._release_job_netns(handle)

    async def exec(self, key: str, attempt: int, argv: list[str], timeout_s: float) -> ExecResult:
        handle = read_handle(self.attempt_dir(key, attempt))
        if handle is None:
            return ExecResult(126, b"", b"no such task attempt")
        return await self.runc("exec", handle["id"], *argv, timeout_s=timeout_s)

    async def list_containers(self) -> list[dict[str, Any]]:
        out = await self.runc("list", "-f", "json")
        if out.exit_code != 0:
            return []
        with contextlib.suppress(ValueError):
            return list(json.loads(out.stdout or b"null") or [])
        return []

    async def sweep(self) -> list[str]:
        """Kill and delete containers and cgroups under this agent's root that no attempt owns."""
        removed = await self._sweep_leftovers()
        ids: set[str] = set()
        for adir in self._attempt_dirs():
            handle = read_handle(adir)
            if handle and not (adir / "cleaned.json").exists():
                ids.add(handle["id"])
        for c in await self.list_containers():
            if c.get("id") not in ids:
                await self.runc("kill", "--all", c["id"], "KILL")
                await self.runc("delete", "--force", c["id"])
                removed.append(c["id"])
        for base in self.cgroups.dirs(self.cgroup_parent)[:1]:
            if base.is_dir():
                for child in base.iterdir():
                    if child.is_dir() and child.name not in ids:
                        await asyncio.to_thread(self.cgroups.kill_and_remove, f"{self.cgroup_parent}/{child.name}")
                        if child.name not in removed:
                            removed.append(child.name)
        return removed
