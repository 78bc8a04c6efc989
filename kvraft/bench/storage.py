"""``python -m kvraft.bench storage``: the storage layer alone, no network, no Raft.

Measures, in this order (each step prints progress lines on stderr; the summary table
goes to stdout, and to ``--json`` if given):

1. Raft log: durable appends, one fsynced commit per entry vs one per batch.
2. MVCC: durable puts, one commit per put vs group commit (``--batch`` puts per commit);
   then the server's apply path (``StateMachine.apply_ops``, units of ``APPLY_UNIT`` puts,
   as the apply stage hands over one Ready's entries): one commit per unit vs the state
   machine's group commit (one commit per ``COMMIT_INTERVAL_S`` / ``COMMIT_OPS``).
3. Load ``--keys`` keys (group commit), then memory (anonymous RSS: mostly the key index)
   and disk (file size, pages in use); reopen time (index rebuild).
4. Reads: single-key gets, 100-key ranges, a count over every key, a full scan, a
   ``hash_kv`` of the whole history (what each corruption check costs a member).
5. Snapshot: stream the whole store to a file (MB/s), restore it into a new store
   (MB/s including the index rebuild).
6. Update 50% of the keys, compact, defragment while a writer thread keeps putting:
   size before/after, the writers' pause, writes completed during the defragmentation.

Run alone: ``flock -x /tmp/kvraft-cpu.lock python -m kvraft.bench storage``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kvraft.apply.ops import PutOp
from kvraft.apply.state_machine import StateMachine
from kvraft.raft.types import Entry, HardState
from kvraft.storage.mvcc import MVCCStore
from kvraft.storage.raft_log import LmdbLogStorage

__all__ = ["main"]


def _say(msg: str) -> None:
    print(f"[storage {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _rss() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "VmHWM:")):
                name, value = line.split(":")
                out[name] = int(value.split()[0]) * 1024
    return out


def _timed(seconds: float, fn: Any) -> tuple[int, float]:
    """Call ``fn()`` (returning how many operations it did) until ``seconds`` pass."""
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        n += fn()
    return n, elapsed


def _raft_batches(log: LmdbLogStorage, per: int, data: bytes) -> Any:
    """A callable appending ``per`` entries and a hard state, then syncing."""
    nxt = [1]

    def one_batch() -> int:
        i = nxt[0]
        log.append([Entry(term=1, index=j, data=data) for j in range(i, i + per)])
        log.set_hard_state(HardState(term=1, vote=1, commit=i + per - 1))
        log.sync()
        nxt[0] = i + per
        return per

    return one_batch


def bench_raft_log(root: Path, seconds: float, batch: int, value_size: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, per in (("per_entry", 1), ("group", batch)):
        log = LmdbLogStorage(root / f"raft-{label}.lmdb", map_size=8 << 30)
        n, elapsed = _timed(seconds, _raft_batches(log, per, os.urandom(value_size)))
        log.close()
        out[f"raft_append_{label}_per_s"] = round(n / elapsed)
        _say(f"raft log, {'1 entry' if per == 1 else f'{per} entries'} per fsynced commit: {n / elapsed:,.0f} entries/s")
    out["raft_group_commit_speedup"] = round(out["raft_append_group_per_s"] / out["raft_append_per_entry_per_s"], 1)
    return out


def bench_durable_puts(root: Path, seconds: float, batch: int, value_size: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    store = MVCCStore(root / "durable", map_size=8 << 30, sync=True)
    value = os.urandom(value_size)
    ctr = [0]

    def single() -> int:
        store.put(b"single/%09d" % ctr[0], value)
        ctr[0] += 1
        return 1

    def grouped() -> int:
        with store.batch():
            for _ in range(batch):
                store.put(b"group/%09d" % ctr[0], value)
                ctr[0] += 1
        return batch

    for label, fn in (("per_put", single), ("group", grouped)):
        n, elapsed = _timed(seconds, fn)
        out[f"mvcc_durable_put_{label}_per_s"] = round(n / elapsed)
        _say(f"mvcc durable puts, {'1 put' if fn is single else f'{batch} puts'} per commit: {n / elapsed:,.0f} puts/s")
    out["mvcc_group_commit_speedup"] = round(out["mvcc_durable_put_group_per_s"] / out["mvcc_durable_put_per_put_per_s"], 1)
    store.close()
    return out


def _key(i: int) -> bytes:
    return b"/registry/bench/%09d" % i


def load(store: MVCCStore, keys: int, value_size: int, batch: int) -> dict[str, Any]:
    value = os.urandom(value_size)
    t0 = time.perf_counter()
    step = max(keys // 10, batch)
    for start in range(0, keys, batch):
        with store.batch():
            for i in range(start, min(keys, start + batch)):
                store.put(_key(i), value)
        if (start + batch) % step < batch:
            _say(f"loaded {min(keys, start + batch):,} keys ({(start + batch) / (time.perf_counter() - t0):,.0f} puts/s)")
    elapsed = time.perf_counter() - t0
    return {"load_puts_per_s": round(keys / elapsed), "load_s": round(elapsed, 1)}


def bench_reads(store: MVCCStore, keys: int, seconds: float) -> dict[str, Any]:
    rng = random.Random(1)
    out: dict[str, Any] = {}
    n, el = _timed(seconds, lambda: len(store.range(_key(rng.randrange(keys))).kvs))
    out["get_per_s"] = round(n / el)
    _say(f"single-key get: {n / el:,.0f}/s")
    def range100() -> int:
        i = rng.randrange(max(1, keys - 100))
        return len(store.range(_key(i), _key(i + 100)).kvs)

    n, el = _timed(seconds, range100)
    out["range100_kvs_per_s"] = round(n / el)
    _say(f"100-key ranges: {n / el:,.0f} kvs/s")
    t0 = time.perf_counter()
    count = store.range(b"/registry/", b"/registry0", count_only=True).count
    out["count_all_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    got = len(store.range(b"/registry/", b"/registry0").kvs)
    el = time.perf_counter() - t0
    out["full_scan_kvs_per_s"] = round(got / el)
    _say(f"count over {count:,} keys: {out['count_all_s']} s; full scan: {got / el:,.0f} kvs/s")
    t0 = time.perf_counter()
    store.hash_kv()
    el = time.perf_counter() - t0
    records = keys  # one revision per key loaded
    out.update(hashkv_s=round(el, 2), hashkv_records_per_s=round(records / el))
    _say(f"hashkv over {records:,} records (a corruption check's hash): {el:.2f} s = {records / el:,.0f} records/s")
    return out


def bench_snapshot(store: MVCCStore, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    path = root / "snapshot.bin"
    t0 = time.perf_counter()
    stream = store.snapshot()
    with open(path, "wb") as f:
        for chunk in stream:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    el = time.perf_counter() - t0
    mb = stream.bytes / 1e6
    out.update(snapshot_mb=round(mb, 1), snapshot_mb_per_s=round(mb / el, 1), snapshot_records=stream.records)
    _say(f"snapshot: {mb:,.1f} MB, {stream.records:,} records in {el:.1f} s = {mb / el:,.1f} MB/s")

    def chunks() -> Any:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                yield block

    target = MVCCStore(root / "restored", map_size=64 << 30)
    t0 = time.perf_counter()
    target.restore(chunks())
    el = time.perf_counter() - t0
    out.update(restore_mb_per_s=round(mb / el, 1), restore_s=round(el, 1))
    assert target.hash_kv() == store.hash_kv(), "restored store differs"
    _say(f"restore (verify, write, fsync, rebuild index): {el:.1f} s = {mb / el:,.1f} MB/s; hash matches")
    target.close()
    path.unlink()
    return out


def bench_defrag(store: MVCCStore, keys: int, value_size: int, batch: int) -> dict[str, Any]:
    value = os.urandom(value_size)
    for start in range(0, keys // 2, batch):
        with store.batch():
            for i in range(start, min(keys // 2, start + batch)):
                store.put(_key(i * 2), value)
    _say(f"updated {keys // 2:,} keys; compacting at {store.rev:,}")
    t0 = time.perf_counter()
    job = store.compact(store.rev)
    logical = time.perf_counter() - t0
    job.wait()
    physical = time.perf_counter() - t0
    _say(f"compaction: logical {logical:.2f} s, physical {physical:.1f} s ({job.deleted:,} records deleted; "
         f"its hash for the compact hash check {job.hash_s:.2f} s)")
    size_before = store.backend.file_size()
    in_use_before = store.sizes()[1]
    stop, puts, pauses = threading.Event(), [0], [0.0]

    def writer() -> None:
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            store.put(b"/registry/during/%09d" % i, value)
            pauses[0] = max(pauses[0], time.perf_counter() - t)
            puts[0] += 1
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    report = store.defragment(progress=_say)
    stop.set()
    thread.join()
    _say(f"defrag: file {size_before / 1e6:,.0f} MB -> {report.size_after / 1e6:,.0f} MB "
         f"(in use {in_use_before / 1e6:,.0f} -> {report.in_use_after / 1e6:,.0f} MB) in {report.total_s:.1f} s; "
         f"writer lock held {report.writer_pause_s * 1e3:.1f} ms; {puts[0]:,} puts meanwhile, slowest {pauses[0] * 1e3:.0f} ms")
    return {
        "compact_logical_s": round(logical, 2), "compact_physical_s": round(physical, 1),
        "compact_hash_s": round(job.hash_s, 2),
        "defrag_size_before_mb": round(size_before / 1e6), "defrag_size_after_mb": round(report.size_after / 1e6),
        "defrag_total_s": round(report.total_s, 1), "defrag_writer_pause_ms": round(report.writer_pause_s * 1e3, 1),
        "defrag_puts_during": puts[0], "defrag_slowest_put_ms": round(pauses[0] * 1e3),
    }


APPLY_UNIT = 10
"""Puts per apply call in the apply-path step (one Ready's committed entries)."""


class _Members:
    """The member registry a ``StateMachine`` needs, empty (no member ops here)."""

    def apply(self, op: Any) -> None:
        raise AssertionError("no member ops in this benchmark")

    def to_wire(self) -> list[Any]:
        return []

    def restore(self, wire: Any) -> None:
        pass


def bench_apply_path(root: Path, seconds: float, value_size: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    value = os.urandom(value_size)
    for label, each in (("commit_per_unit", True), ("group", False)):
        machine = StateMachine(root / f"apply-{label}", quota_bytes=8 << 30, member_id=1, max_txn_ops=128,
                               membership=_Members())
        ctr = [0]

        def unit(machine: StateMachine = machine, each: bool = each, ctr: list[int] = ctr) -> int:
            items = [(0, PutOp(b"apply/%09d" % (ctr[0] + i), value)) for i in range(APPLY_UNIT)]
            ctr[0] += APPLY_UNIT
            machine.apply_ops(items, ctr[0], 1)
            if each:
                machine.commit()
            return APPLY_UNIT

        n, elapsed = _timed(seconds, unit)
        machine.commit()
        out[f"apply_{label}_per_s"] = round(n / elapsed)
        out[f"apply_{label}_commits"] = machine.commits
        _say(f"apply path, {APPLY_UNIT} puts per apply, {'a commit per apply' if each else 'group commit'}: "
             f"{n / elapsed:,.0f} puts/s, {machine.commits} commits")
        machine.close()
    out["apply_group_commit_speedup"] = round(out["apply_group_per_s"] / out["apply_commit_per_unit_per_s"], 1)
    return out


def main(name: str = "storage", argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m kvraft.bench {name}", description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000, help="keys loaded for steps 3-6")
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1000, help="puts/entries per group commit")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each timed step")
    ap.add_argument("--dir", default=None, help="working directory (default: a temp dir, removed)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="kvraft-bench-storage-"))
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"keys": args.keys, "value_size": args.value_size, "batch": args.batch,
                               "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        results.update(bench_raft_log(root, args.seconds, args.batch, args.value_size))
        results.update(bench_durable_puts(root, args.seconds, args.batch, args.value_size))
        results.update(bench_apply_path(root, args.seconds, args.value_size))
        rss0 = _rss()
        store = MVCCStore(root / "kv", map_size=64 << 30, sync=True)
        results.update(load(store, args.keys, args.value_size, args.batch))
        rss1 = _rss()
        size, in_use = store.sizes()
        results.update(rss_anon_mb=round((rss1["RssAnon"] - rss0["RssAnon"]) / 1e6),
                       db_file_mb=round(store.backend.file_size() / 1e6), db_in_use_mb=round(in_use / 1e6))
        _say(f"{args.keys:,} keys: +{results['rss_anon_mb']} MB anonymous RSS (index), "
             f"file {results['db_file_mb']} MB, in use {results['db_in_use_mb']} MB")
        store.close()
        t0 = time.perf_counter()
        store = MVCCStore(root / "kv", map_size=64 << 30, sync=True)
        results["reopen_s"] = round(time.perf_counter() - t0, 1)
        _say(f"reopen (rebuild the index from {args.keys:,} records): {results['reopen_s']} s")
        results.update(bench_reads(store, args.keys, args.seconds))
        results.update(bench_snapshot(store, root))
        results.update(bench_defrag(store, args.keys, args.value_size, args.batch))
        store.close()
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    width = max(map(len, results))
    for k, v in results.items():
        print(f"{k:<{width}}  {v:,}" if isinstance(v, int) else f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main("storage", sys.argv[1:]))
