"""Snapshot save / status / restore throughput through the CLIs (not a test: a benchmark).

    flock -x /tmp/kvraft-cpu.lock .venv/bin/python tests/cli/bench_snapshot.py [--mb 100]

One kvraft member and one etcd 3.4 member (127.0.0.1, free ports, under a temp dir),
each loaded with the same keys (1 KiB values, 100 puts per txn, 8 writers); then, timed:
``kvctl snapshot save`` from kvraft, ``etcdctl snapshot save`` from etcd (gRPC) and
``kvctl snapshot save`` from etcd (its JSON gateway); ``snapshot status`` of each file
with its own tool; ``kvctl snapshot restore`` of the kvraft file and ``etcdctl snapshot
restore`` of the etcd file. Prints one line per step with seconds and MB/s (of the
file's size). ``kvctl version`` is timed first: the Python start-up that every kvctl line
includes.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "client"))

from kvraft.client import Client, Op  # noqa: E402
from kvraft.server.local import LocalCluster  # noqa: E402

KVCTL = [sys.executable, "-m", "kvraft.cli"]


async def _load(endpoint: str, mb: int) -> None:
    value = b"v" * 1024
    txns = mb * 1024 // 100
    async with Client([endpoint], request_timeout_s=60) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for t in range(txns):
            queue.put_nowait(t)

        async def writer() -> None:
            while not queue.empty():
                t = queue.get_nowait()
                await client.txn().then(*(Op.put(f"bench/{t:06d}/{i:03d}", value) for i in range(100))).commit()

        await asyncio.gather(*(writer() for _ in range(8)))


def _timed(label: str, argv: list[str], size_of: Path | None = None) -> None:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{label}: exit {proc.returncode}: {proc.stderr[-500:]}")
    size = size_of.stat().st_size if size_of is not None and size_of.is_file() else 0
    rate = f"{size / seconds / 1e6:8.1f} MB/s" if size else ""
    print(f"{label:<44} {seconds:7.2f} s  {size / 1e6:8.1f} MB {rate}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="values to load, in MiB (default 100)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
    flags = ["--quota-backend-bytes", str(8 << 30)]
    kv = LocalCluster(1, base / "kvraft", binary="kvraft", extra_args=flags)
    etcd = LocalCluster(1, base / "etcd", binary="etcd", extra_args=flags)
    try:
        kv.start(90)
        etcd.start(90)
        for name, cluster in (("kvraft", kv), ("etcd", etcd)):
            started = time.monotonic()
            asyncio.run(_load(cluster.members["m0"].client_url, args.mb))
            print(f"load {args.mb} MiB into {name:<30} {time.monotonic() - started:7.2f} s", flush=True)
        kv_ep, etcd_ep = kv.members["m0"].client_url, etcd.members["m0"].client_url
        kv_file, etcd_file, gw_file = base / "kv.snap", base / "etcd.db", base / "etcd-gw.db"
        _timed("kvctl version (interpreter start-up only)", [*KVCTL, "version"])
        _timed("kvctl snapshot save (kvraft)", [*KVCTL, f"--endpoints={kv_ep}", "snapshot", "save", str(kv_file)], kv_file)
        _timed("etcdctl snapshot save (etcd, gRPC)", ["etcdctl", f"--endpoints={etcd_ep}", "snapshot", "save", str(etcd_file)], etcd_file)
        _timed("kvctl snapshot save (etcd, gateway)", [*KVCTL, f"--endpoints={etcd_ep}", "snapshot", "save", str(gw_file)], gw_file)
        _timed("kvctl snapshot status (kvraft file)", [*KVCTL, "snapshot", "status", str(kv_file)], kv_file)
        _timed("etcdctl snapshot status (etcd file)", ["etcdctl", "snapshot", "status", str(etcd_file)], etcd_file)
        _timed("kvctl snapshot restore (kvraft file)", [*KVCTL, "snapshot", "restore", str(kv_file), "--data-dir", str(base / "r-kv")], kv_file)
        _timed("etcdctl snapshot restore (etcd file)", ["etcdctl", "snapshot", "restore", str(etcd_file), "--data-dir", str(base / "r-etcd")], etcd_file)
        _timed("kvctl snapshot restore (etcd file -> kvraft)", [*KVCTL, "snapshot", "restore", str(etcd_file), "--data-dir", str(base / "r-conv")], etcd_file)
    finally:
        kv.stop()
        etcd.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
