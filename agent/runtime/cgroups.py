"""cgroup v1 and v2 through plain file writes (no systemd: the development machine has none).

``CgroupLayout.detect()`` finds which hierarchy is usable and writable. ``plan(path, limits)``
returns the directories to create and the files to write, in order, for one task; the
supervisor carries them out (so the task joins its cgroups between fork and exec).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from agent.spec import Resources

__all__ = ["CGROUP_ROOT", "CgroupLayout", "cfs_quota_us", "read_cgroup_stats"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "cpuset")


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    version: int  # 1, 2, or 0 when nothing is writable
    root: Path = CGROUP_ROOT

    @classmethod
    def detect(cls, root: Path = CGROUP_ROOT) -> CgroupLayout:
        if (root / "cgroup.controllers").exists():
            return cls(2 if os.access(root, os.W_OK) else 0, root)
        if (root / "memory" / "cgroup.procs").exists() and os.access(root / "memory", os.W_OK):
            return cls(1, root)
        return cls(0, root)

    @property
    def usable(self) -> bool:
        return self.version in (1, 2)

    def dirs(self, rel: str) -> list[Path]:
        rel = rel.strip("/")
        if self.version == 1:
            return [self.root / c / rel for c in V1_CONTROLLERS if (self.root / c).is_dir()]
        if self.version == 2:
            return [self.root / rel]
        return []

    def plan(self, rel: str, res: Resources) -> tuple[list[str], list[tuple[str, str]]]:
        """Directories (parents first) and (file, value) writes for a task cgroup at ``rel``."""
        rel = rel.strip("/")
        parts = rel.split("/")
        dirs: list[str] = []
        files: list[tuple[str, str]] = []
        if self.version == 1:
            for c in V1_CONTROLLERS:
                base = self.root / c
                if not base.is_dir():
                    continue
                for n in range(1, len(parts) + 1):
                    d = base.joinpath(*parts[:n])
                    dirs.append(str(d))
                    if c == "cpuset":  # v1 cpuset dirs start empty: copy the root's sets down
                        files.append((str(d / "cpuset.cpus"), _read(base / "cpuset.cpus")))
                        files.append((str(d / "cpuset.mems"), _read(base / "cpuset.mems")))
            leaf = {c: self.root / c / rel for c in V1_CONTROLLERS}
            if res.memory_mib:
                limit = str(res.memory_mib * 1024 * 1024)
                files.append((str(leaf["memory"] / "memory.limit_in_bytes"), limit))
                if (self.root / "memory" / "memory.memsw.limit_in_bytes").exists():
                    files.append((str(leaf["memory"] / "memory.memsw.limit_in_bytes"), limit))
            if res.cpu_milli:
                files.append((str(leaf["cpu"] / "cpu.cfs_period_us"), "100000"))
                files.append((str(leaf["cpu"] / "cpu.cfs_quota_us"), str(cfs_quota_us(res.cpu_milli))))
            if res.pids:
                files.append((str(leaf["pids"] / "pids.max"), str(res.pids)))
            if res.cpuset:
                files.append((str(leaf["cpuset"] / "cpuset.cpus"), res.cpuset))
        elif self.version == 2:
            for n in range(1, len(parts) + 1):
                d = self.root.joinpath(*parts[:n])
                dirs.append(str(d))
                if n < len(parts):
                    files.append((str(d / "cgroup.subtree_control"), "+memory +cpu +pids +cpuset"))
            leaf_dir = self.root / rel
            if res.memory_mib:
                files.append((str(leaf_dir / "memory.max"), str(res.memory_mib * 1024 * 1024)))
                files.append((str(leaf_dir / "memory.swap.max"), "0"))
            if res.cpu_milli:
                files.append((str(leaf_dir / "cpu.max"), f"{cfs_quota_us(res.cpu_milli)} 100000"))
            if res.pids:
                files.append((str(leaf_dir / "pids.max"), str(res.pids)))
            if res.cpuset:
                files.append((str(leaf_dir / "cpuset.cpus"), res.cpuset))
        return dirs, files

    def oom_file(self, rel: str) -> str:
        rel = rel.strip("/")
        if self.version == 1:
            return str(self.root / "memory" / rel / "memory.oom_control")
        if self.version == 2:
            return str(self.root / rel / "memory.events")
        return ""

    def every_hierarchy(self, rel: str) -> list[Path]:
        """``rel`` in every mounted hierarchy, not only the controllers the agent writes (v1):
        runc also makes its cgroups in blkio, devices, freezer, the named systemd one and the
        hybrid unified one, and their parents are left there otherwise."""
        if self.version != 1:
            return self.dirs(rel)
        seen: set[Path] = set()
        out: list[Path] = []
        with contextlib.suppress(OSError):
            for h in sorted(self.root.iterdir()):
                real = h.resolve()
                if h.is_dir() and real not in seen:  # cpu and cpuacct link to cpu,cpuacct
                    seen.add(real)
                    out.append(h / rel.strip("/"))
        return out

    def kill_and_remove(self, rel: str) -> bool:
        """SIGKILL every process in the cgroup at ``rel`` and remove it (leaf first), in every
        hierarchy."""
        removed = False
        for d in self.every_hierarchy(rel):
            subs: list[Path] = []
            for _ in range(3):  # a part may go as it is listed: a supervisor removes its ended task's cgroups
                try:
                    subs = sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
                    break
                except FileNotFoundError:
                    subs = []
            if not d.is_dir():
                continue
            for sub in [*subs, d]:
                with contextlib.suppress(OSError):
                    for pid in (sub / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                for _ in range(50):
                    try:
                        sub.rmdir()
                        removed = True
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.02)  # the killed processes are still exiting
        return removed

    def remove_empty_parents(self, rel: str, stop_at: str) -> None:
        """rmdir the parents of ``rel`` up to (and including) ``stop_at`` when empty."""
        rel_parts = rel.strip("/").split("/")
        stop_parts = stop_at.strip("/").split("/")
        for n in range(len(rel_parts) - 1, len(stop_parts) - 1, -1):
            for base in self.every_hierarchy("/".join(rel_parts[:n])):
                with contextlib.suppress(OSError):
                    base.rmdir()


MIN_QUOTA_US = 1000  # the least CFS quota the kernel takes (kubelet's MinQuotaPeriod)


def cfs_quota_us(cpu_milli: int) -> int:
    """The CFS quota per 100 ms period for ``cpu_milli``; a limit below 10m gets the kernel's
    least, 1 ms (kubelet does the same), instead of a write the kernel refuses."""
    return max(cpu_milli * 100, MIN_QUOTA_US)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def read_cgroup_stats(pid: int) -> dict[str, int]:
    """Memory, CPU and pids counters of ``pid``'s cgroups (v1 or v2), when readable. The root
    cgroup is never a task's: the kernel shows an exited task (a zombie) there, and its
    counters are the whole machine's."""
    out: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if rel == "/":
            continue
        names = controllers.split(",")
        base = CGROUP_ROOT
        if "memory" in names:
            out |= _ints(base / "memory" / rel.lstrip("/"), memory_bytes="memory.usage_in_bytes",
                         memory_max_bytes="memory.max_usage_in_bytes", memory_limit_bytes="memory.limit_in_bytes")
        if "cpuacct" in names:
            out |= _ints(base / "cpuacct" / rel.lstrip("/"), cpu_ns="cpuacct.usage")
        if "pids" in names:
            out |= _ints(base / "pids" / rel.lstrip("/"), pids="pids.current")
        if controllers == "" and line.startswith("0::") and (base / "cgroup.controllers").exists():
            d = base / rel.lstrip("/")
            out |= _ints(d, memory_bytes="memory.current", pids="pids.current")
            with contextlib.suppress(OSError):
                for stat in (d / "cpu.stat").read_text().splitlines():
                    k, v = stat.split()
                    if k == "usage_usec":
                        out["cpu_ns"] = int(v) * 1000
    return out


def _ints(d: Path, **names: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, name in names.items():
        with contextlib.suppress(OSError, ValueError):
            out[key] = int((d / name).read_text().split()[0])
    return out
