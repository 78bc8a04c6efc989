"""Node inventory: CPUs, memory, GPUs with their link matrix, RDMA devices, conditions.

GPUs come from ``nvidia-smi`` when it is present (``--query-gpu`` CSV + ``topo -m``), else from
a fake inventory file (YAML or JSON) for machines without NVIDIA GPUs::

    gpus:                       # or the shortcut: count: 8, model: H100-SXM, memory_mib: 81559,
      - index: 0                #                  islands: [4, 4], numa: [0, 0, 0, 0, 1, 1, 1, 1]
        uuid: GPU-7f3c...
        model: H100-SXM
        memory_mib: 81559
        numa: 0
        pci: "0000:18:00.0"
        device: {path: /dev/null, major: 1, minor: 3}   # what to inject as /dev/nvidia0
    control_devices: [{path: /dev/null, major: 1, minor: 3, name: /dev/nvidiactl}]
    links: {"0-1": NV18}        # pairs, or
    topology: |                 # the text of `nvidia-smi topo -m` (or topology_file: <path>)
      ...
    healthy: true

RDMA devices come from ``/sys/class/infiniband`` when present, else from a file::

    rdma: [{name: mlx5_0, fabric: ib-fabric-1, link_layer: InfiniBand, numa: 0,
            devices: [{path: /dev/infiniband/uverbs0, major: 231, minor: 192}]}]

The link matrix uses nvidia-smi's codes (``X``, ``NV#``, ``PIX``, ``PXB``, ``PHB``, ``NODE``,
``SYS``, ``PSB``); ``islands`` groups GPUs joined by NVLink, which is what the scheduler's
``Node.islands`` needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.eviction import Threshold, parse_eviction_hard, pressures
from agent.runtime.base import DeviceGrant, GpuDevice

__all__ = [
    "Gpu",
    "GpuInventory",
    "RdmaDevice",
    "islands",
    "load_gpu_inventory",
    "load_rdma_inventory",
    "machine_facts",
    "parse_query_csv",
    "parse_topo_matrix",
]

LINK_RANK = {"X": 0, "NV": 1, "PIX": 2, "PSB": 2, "PXB": 3, "PHB": 4, "NODE": 5, "SYS": 6}
AFFINITY_COLUMNS = ("CPU Affinity", "NUMA Affinity", "GPU NUMA ID")


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    uuid: str
    model: str = ""
    memory_mib: int = 0
    numa: int | None = None
    pci: str = ""
    cpu_affinity: str = ""
    device: tuple[str, int, int] = ("", 195, 0)  # host node to inject, major, minor

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "uuid": self.uuid, "model": self.model, "memory_mib": self.memory_mib,
                "numa": self.numa, "pci": self.pci, "cpu_affinity": self.cpu_affinity}


@dataclass(frozen=True, slots=True)
class RdmaDevice:
    name: str
    fabric: str = ""
    link_layer: str = ""
    numa: int | None = None
    devices: tuple[tuple[str, int, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "fabric": self.fabric, "link_layer": self.link_layer, "numa": self.numa,
                "devices": [p for p, _, _ in self.devices]}


@dataclass(frozen=True)
class GpuInventory:
    gpus: tuple[Gpu, ...] = ()
    links: dict[tuple[int, int], str] = field(default_factory=dict)
    control: tuple[tuple[str, int, int], ...] = ()  # (container path, major, minor)
    source: str = "none"
    healthy: bool = True
    health_message: str = ""

    def by_index(self) -> dict[int, Gpu]:
        return {g.index: g for g in self.gpus}

    def grant(self, indices: tuple[int, ...], rdma: tuple[RdmaDevice, ...] = (), want_rdma: bool = False) -> DeviceGrant:
        """Device nodes for a task given GPU ``indices``; KeyError names a GPU not on this node."""
        table = self.by_index()
        missing = [i for i in indices if i not in table]
        if missing:
            raise KeyError(f"GPU index {missing} not on this node (has {sorted(table)})")
        gpus = tuple(GpuDevice(i, table[i].uuid, table[i].device[0], table[i].device[1], table[i].device[2])
                     for i in indices)
        return DeviceGrant(gpus=gpus, control=self.control if gpus else (),
                           rdma=tuple(d for r in rdma for d in r.devices) if want_rdma else ())

    def links_json(self) -> dict[str, str]:
        return {f"{a}-{b}": v for (a, b), v in sorted(self.links.items()) if a < b}


def islands(gpus: tuple[Gpu, ...] | list[Gpu], links: dict[tuple[int, int], str]) -> tuple[int, ...]:
    """Sizes of the NVLink islands, in GPU index order.

    An island is a run of consecutive GPU indices in which every pair is joined directly by
    NVLink (``NV#``), because the scheduler's ``Node.islands`` assigns indices to islands in
    order and assumes all-to-all NVLink inside one. An NVSwitch box gives one island of all
    GPUs; the V100 hybrid cube mesh of the reference gives ``(4, 4)``; PCIe-only GPUs give one
    island per GPU.
    """
    out: list[list[int]] = []
    for i in sorted(g.index for g in gpus):
        group = out[-1] if out else None
        if group and all(links.get((i, j), links.get((j, i), "")).startswith("NV") for j in group):
            group.append(i)
        else:
            out.append([i])
    return tuple(len(g) for g in out)


# --- nvidia-smi parsing ------------------------------------------------------------------------
def parse_query_csv(text: str) -> list[Gpu]:
    """``nvidia-smi --query-gpu=index,uuid,name,memory.total,pci.bus_id --format=csv,noheader,nounits``."""
    out: list[Gpu] = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        index = int(parts[0])
        mem = int(float(parts[3])) if re.fullmatch(r"[\d.]+", parts[3]) else 0
        out.append(Gpu(index, parts[1], parts[2], mem, None, parts[4].lower(), "", (f"/dev/nvidia{index}", 195, index)))
    return out


def parse_topo_matrix(text: str) -> tuple[dict[tuple[int, int], str], dict[int, dict[str, str]], dict[str, dict[str, str]]]:
    """Parse ``nvidia-smi topo -m``: GPU-GPU links, per-GPU affinity columns, NIC links.

    Returns ``(links, affinity, nic_links)``: ``links[(i, j)]`` the code between GPU i and j;
    ``affinity[i]`` maps "CPU Affinity" / "NUMA Affinity" / "GPU NUMA ID" to their text;
    ``nic_links[nic][GPUi]`` the code between a NIC (by its legend name) and a GPU.
    """
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln) for ln in text.splitlines()]
    header_at = next((n for n, ln in enumerate(lines) if ln.split()[:1] == ["GPU0"] and ln.split()[1:2] != ["X"]), None)
    if header_at is None:
        raise ValueError("no topo header (a line naming GPU0 ...)")
    header = lines[header_at]
    for phrase in AFFINITY_COLUMNS:
        header = header.replace(phrase, phrase.replace(" ", "_"))
    names = header.split()
    devices = [n for n in names if n.replace("_", " ") not in AFFINITY_COLUMNS]
    extra = [n.replace("_", " ") for n in names if n.replace("_", " ") in AFFINITY_COLUMNS]
    nic_legend: dict[str, str] = {}
    for ln in lines:
        m = re.match(r"\s*(NIC\d+)\s*:\s*(\S+)", ln)
        if m:
            nic_legend[m.group(1)] = m.group(2)
    links: dict[tuple[int, int], str] = {}
    affinity: dict[int, dict[str, str]] = {}
    nic_links: dict[str, dict[str, str]] = {}
    for ln in lines[header_at + 1 :]:
        if not ln.strip() or ln.strip().startswith("Legend"):
            break
        cells = ln.split()
        row, values = cells[0], cells[1:]
        if len(values) < len(devices):
            continue
        codes, rest = values[: len(devices)], values[len(devices) :]
        if row.startswith("GPU") and row[3:].isdigit():
            i = int(row[3:])
            for col, code in zip(devices, codes, strict=True):
                if col.startswith("GPU") and col[3:].isdigit() and int(col[3:]) != i:
                    links[(i, int(col[3:]))] = code
            affinity[i] = dict(zip(extra, rest, strict=False))
        else:
            nic_links[nic_legend.get(row, row)] = {c: v for c, v in zip(devices, codes, strict=True) if c.startswith("GPU")}
    return links, affinity, nic_links


def _numa_of(affinity: dict[str, str], pci: str) -> int | None:
    for key in ("GPU NUMA ID", "NUMA Affinity"):
        v = affinity.get(key, "")
        if v.isdigit():
            return int(v)
    if pci:
        with contextlib.suppress(OSError, ValueError):
            n = int(Path(f"/sys/bus/pci/devices/{pci.lower()[-12:]}/numa_node").read_text())
            return n if n >= 0 else None
    return None


def _nvidia_smi(binary: str) -> GpuInventory:
    def run(*args: str) -> str:
        return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30, check=True).stdout

    try:
        gpus = parse_query_csv(run("--query-gpu=index,uuid,name,memory.total,pci.bus_id", "--format=csv,noheader,nounits"))
    except (OSError, subprocess.SubprocessError) as exc:
        return GpuInventory(source="nvidia-smi", healthy=False, health_message=f"nvidia-smi failed: {exc}")
    links: dict[tuple[int, int], str] = {}
    affinity: dict[int, dict[str, str]] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        links, affinity, _ = parse_topo_matrix(run("topo", "-m"))
    full = []
    for g in gpus:
        aff = affinity.get(g.index, {})
        dev = Path(f"/dev/nvidia{g.index}")
        major, minor = (os.major(dev.stat().st_rdev), os.minor(dev.stat().st_rdev)) if dev.exists() else (195, g.index)
        full.append(Gpu(g.index, g.uuid, g.model, g.memory_mib, _numa_of(aff, g.pci), g.pci,
                        aff.get("CPU Affinity", ""), (str(dev), major, minor)))
    control = []
    for name in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"):
        p = Path(name)
        if p.exists():
            st = p.stat()
            control.append((name, os.major(st.st_rdev), os.minor(st.st_rdev)))
    return GpuInventory(tuple(full), links, tuple(control), "nvidia-smi")


def _load_doc(path: Path) -> dict[str, Any]:
    text = path.read_text()
    doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: must be a mapping")
    return doc


def _fake_gpus(doc: dict[str, Any]) -> GpuInventory:
    raw = doc.get("gpus")
    if raw is None and "count" in doc:
        count = int(doc["count"])
        if count < 0:
            raise ValueError(f"count: must be >= 0, not {count}")
        numa = doc.get("numa") or [0] * count
        raw = [{"index": i, "uuid": f"GPU-fake-{doc.get('uuid_prefix', 'node')}-{i:02d}", "model": doc.get("model", "FAKE"),
                "memory_mib": doc.get("memory_mib", 0), "numa": numa[i] if i < len(numa) else 0} for i in range(count)]
    gpus = []
    for g in raw or []:
        dev = g.get("device") or {"path": "/dev/null", "major": 1, "minor": 3}
        gpus.append(Gpu(int(g["index"]), str(g["uuid"]), str(g.get("model", "")), int(g.get("memory_mib", 0)),
                        g.get("numa"), str(g.get("pci", "")), str(g.get("cpu_affinity", "")),
                        (str(dev.get("path", "/dev/null")), int(dev.get("major", 1)), int(dev.get("minor", 3)))))
    _check_addressable(gpus)
    links: dict[tuple[int, int], str] = {}
    if doc.get("topology"):
        links, affinity, _ = parse_topo_matrix(str(doc["topology"]))
        filled = []
        for g in gpus:
            aff = affinity.get(g.index, {})
            numa = g.numa if g.numa is not None else _numa_of(aff, "")
            cpus = g.cpu_affinity or aff.get("CPU Affinity", "")
            filled.append(Gpu(g.index, g.uuid, g.model, g.memory_mib, numa, g.pci, cpus, g.device))
        gpus = filled
    for pair, code in (doc.get("links") or {}).items():
        a, b = (int(x) for x in str(pair).split("-"))
        links[(a, b)] = links[(b, a)] = str(code)
    if doc.get("islands") and not doc.get("links") and not doc.get("topology"):
        first = 0
        for size in doc["islands"]:
            members = range(first, first + int(size))
            for a in members:
                for b in members:
                    if a != b:
                        links[(a, b)] = "NV18"
            first += int(size)
        for a in range(len(gpus)):
            for b in range(len(gpus)):
                if a != b:
                    links.setdefault((a, b), "SYS")
    control = tuple((str(c.get("name", c.get("path"))), int(c.get("major", 1)), int(c.get("minor", 3)))
                    for c in doc.get("control_devices") or [])
    healthy = doc.get("healthy", True)
    if not isinstance(healthy, bool):  # bool('no') is True: a GPU marked down would pass as healthy
        raise ValueError(f"healthy: must be true or false, not {healthy!r}")
    return GpuInventory(tuple(gpus), links, control, "fake", healthy, str(doc.get("health_message", "")))


def _check_addressable(gpus: list[Gpu]) -> None:
    """The scheduler hands out indices 0..N-1 of the N GPUs the node record counts: each must
    be there once, and each GPU must be told apart by its UUID (the task's devices by UUID)."""
    for what, values in (("index", [repr(g.index) for g in gpus]), ("uuid", [repr(g.uuid) for g in gpus])):
        twice = [v for v, n in Counter(values).items() if n > 1]
        if twice:
            raise ValueError(f"GPU {what} {twice[0]} is listed twice")
    indices = sorted(g.index for g in gpus)
    if indices != list(range(len(gpus))):
        raise ValueError(f"GPU indices must be 0..{len(gpus) - 1} (the node has {len(gpus)}), not {indices}")


def load_gpu_inventory(path: str | Path | None = None, nvidia_smi: str = "nvidia-smi") -> GpuInventory:
    """The fake inventory at ``path`` if given, else nvidia-smi if installed, else no GPUs."""
    if path:
        doc = _load_doc(Path(path))
        if doc.get("topology_file"):  # the text of `nvidia-smi topo -m`, relative to the inventory
            doc["topology"] = (Path(path).parent / str(doc["topology_file"])).read_text()
        return _fake_gpus(doc)
    binary = shutil.which(nvidia_smi)
    if binary:
        return _nvidia_smi(binary)
    return GpuInventory()


def load_rdma_inventory(path: str | Path | None = None, sys_root: Path = Path("/sys/class/infiniband")) -> tuple[RdmaDevice, ...]:
    if path:
        doc = _load_doc(Path(path))
        return tuple(RdmaDevice(str(r["name"]), str(r.get("fabric", "")), str(r.get("link_layer", "")), r.get("numa"),
                                tuple((str(d["path"]), int(d.get("major", 231)), int(d.get("minor", 192)))
                                      for d in r.get("devices") or []))
                     for r in doc.get("rdma") or [])
    if not sys_root.is_dir():
        return ()
    verbs = {}
    for uv in Path("/sys/class/infiniband_verbs").glob("uverbs*"):
        with contextlib.suppress(OSError):
            verbs[(uv / "ibdev").read_text().strip()] = uv.name
    out = []
    for dev in sorted(sys_root.iterdir()):
        layer = ""
        with contextlib.suppress(OSError):
            layer = next(iter(sorted((dev / "ports").iterdir()))).joinpath("link_layer").read_text().strip()
        numa = None
        with contextlib.suppress(OSError, ValueError):
            numa = int((dev / "device" / "numa_node").read_text())
        nodes = []
        for name in (f"/dev/infiniband/{verbs.get(dev.name, '')}", "/dev/infiniband/rdma_cm"):
            p = Path(name)
            if verbs.get(dev.name) or name.endswith("rdma_cm"):
                with contextlib.suppress(OSError):
                    st = p.stat()
                    nodes.append((name, os.major(st.st_rdev), os.minor(st.st_rdev)))
        fabric = ""
        with contextlib.suppress(OSError):
            fabric = next(iter(sorted((dev / "ports").iterdir()))).joinpath("gids", "0").read_text().strip()[:19]
        out.append(RdmaDevice(dev.name, fabric, layer, numa if numa is None or numa >= 0 else None, tuple(nodes)))
    return tuple(out)


def machine_facts(data_dir: Path, thresholds: dict[str, Threshold] | None = None) -> dict[str, Any]:
    """CPUs, memory, and the pressure conditions kubelet reports, judged by ``thresholds``
    (``--eviction-hard``; kubelet's hard-eviction defaults when None). ``pressure`` maps each
    condition under pressure to why."""
    cpus = len(os.sched_getaffinity(0))
    mem: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            k, v = line.split(":", 1)
            mem[k] = int(v.split()[0])
    try:
        st = os.statvfs(data_dir)
        disk = (float(st.f_bavail * st.f_frsize), float(st.f_blocks * st.f_frsize))
        inodes = (float(st.f_favail), float(st.f_files))
    except OSError:  # the data dir is gone (removed, its disk unmounted): no room for tasks
        disk = inodes = (0.0, 1.0)
    pid_max = 32768
    with contextlib.suppress(OSError, ValueError):
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nprocs = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())
    numa = []
    for node in sorted(Path("/sys/devices/system/node").glob("node[0-9]*")):
        with contextlib.suppress(OSError):
            numa.append({"id": int(node.name[4:]), "cpus": (node / "cpulist").read_text().strip()})
    measures = {
        "memory.available": (mem.get("MemAvailable", 1 << 30) * 1024.0, mem.get("MemTotal", 1 << 30) * 1024.0),
        "nodefs.available": disk,
        "nodefs.inodesFree": inodes,
        "pid.available": (float(pid_max - nprocs), float(pid_max)),
    }
    thresholds = thresholds if thresholds is not None else parse_eviction_hard("")
    pressure = pressures(measures, thresholds)
    return {
        "cpus": cpus,
        "memory_mib": mem.get("MemTotal", 0) // 1024,
        "memory_available_mib": mem.get("MemAvailable", 0) // 1024,
        "numa": numa,
        "pressure": pressure,
        "eviction_hard": {signal: t.text() for signal, t in thresholds.items()},
        "disk_free_fraction": round(disk[0] / disk[1], 4) if disk[1] else 1.0,
    }
