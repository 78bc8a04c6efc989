"""What a large store's maintenance costs the cluster's writes, end to end.

    python -m kvraft.bench defrag-online [--mb 150] [--value-kb 100] [--rounds 3] [--compare-etcd /usr/bin/etcd]
    python -m kvraft.bench snapshot-stall [--mb 150] [--value-kb 100] [--snapshot-count 2000] [--seconds 20]
                                          [--catchup-entries 5000] [--catchup-rounds 1] [--compare-etcd /usr/bin/etcd]

Both start a three-member cluster on 127.0.0.1 with default flags (``snapshot-stall`` adds
``--snapshot-count``) and write values of ``--value-kb`` twice over the same keys:
``defrag-online`` ``--mb`` of them (then a compaction leaves ``--mb`` in use), ``snapshot-stall``
half as many (nothing compacted: both versions stay, ``--mb`` in the store). Progress on
stderr, one JSON summary last on stdout.

``defrag-online``: a compaction at the last revision (half the file is then free pages),
then, per round, one client puts a 100-byte key without pause (each put waits for its
answer) while ``maintenance/defragment`` runs on the leader. Recorded per round: the
defragmentation's wall time, the puts answered during it, the slowest put that overlapped
it, the put latency's median outside it, the file size before and after, and whether the
leader changed (its term moved: the defragmentation stopped its heartbeats).

``snapshot-stall``: one client puts a 100-byte key without pause for ``--seconds`` through the
leader; every ``--snapshot-count`` entries each member takes a Raft snapshot of the whole
store. Recorded: puts, their median, p99 and slowest latency, how many took over 100 ms,
whether the term moved, each member's RSS after it. Then a follower is stopped while the
leader writes past what its log keeps, and started again: it catches up by a snapshot of the
whole store (``catch_up``: how long, the puts through the leader meanwhile and the slowest,
each member's peak RSS; for kvraft, ``phases_s``: when the follower's log says it received,
recorded and installed the snapshot, in seconds after it started serving). A catch-up's time
moves by a few tenths of a second from run to run: ``--catchup-rounds N`` repeats it on the
same cluster (``catch_up_rounds``: each; ``catch_up`` stays the first).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kvraft.bench import compared_etcd
from kvraft.server.local import LocalCluster, b64, post

__all__ = ["main"]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _status(url: str) -> dict[str, Any]:
    code, doc = post(url, "/v3/maintenance/status", {}, timeout_s=30.0)
    if code != 200:
        raise RuntimeError(f"status: HTTP {code} {doc}")
    return dict(doc)


def _fill(url: str, megabytes: int, value_kb: int) -> int:
    """Write ``megabytes`` of values twice over the same keys; return the last revision."""
    count = max(1, megabytes * 1024 // value_kb)
    value = b64(b"v" * (value_kb * 1024))
    revision = 0
    for rewrite in range(2):
        for i in range(count):
            code, doc = post(url, "/v3/kv/put", {"key": b64(f"fill/{i:06d}"), "value": value}, timeout_s=30.0)
            if code != 200:
                raise RuntimeError(f"put: HTTP {code} {doc}")
            revision = int(doc["header"]["revision"])
            if i % 200 == 0:
                _say(f"fill: pass {rewrite + 1}/2, {i}/{count} values")
    return revision


class _Writer:
    """One client putting without pause; each put's start and end (monotonic)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.spans: list[tuple[float, float, bool]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            began = time.monotonic()
            try:
                code, _ = post(self.url, "/v3/kv/put", {"key": b64(f"w/{n % 100}"), "value": b64("x" * 100)},
                               timeout_s=30.0)
                ok = code == 200
            except OSError:
                ok = False
            self.spans.append((began, time.monotonic(), ok))


def _round(cluster: LocalCluster, leader: str) -> dict[str, Any]:
    url = cluster.url(leader)
    before = _status(url)
    writer = _Writer(url)
    writer.thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    code, doc = post(url, "/v3/maintenance/defragment", {}, timeout_s=300.0)
    ended = time.monotonic()
    time.sleep(1.0)
    writer.stop.set()
    writer.thread.join(60)
    if code != 200:
        raise RuntimeError(f"defragment: HTTP {code} {doc}")
    after = _status(url)
    during = [(b, e, ok) for b, e, ok in writer.spans if e >= started and b <= ended]
    outside = [e - b for b, e, ok in writer.spans if ok and (e < started or b > ended)]
    return {
        "defrag_s": round(ended - started, 3),
        "puts_during": sum(1 for _, e, ok in during if ok and e <= ended),
        "slowest_overlapping_put_s": round(max((e - b for b, e, _ in during), default=0.0), 3),
        "failed_puts": sum(1 for _, _, ok in writer.spans if not ok),
        "put_median_outside_ms": round(statistics.median(outside) * 1000, 2) if outside else None,
        "db_before": int(before.get("dbSize", 0)),
        "db_after": int(after.get("dbSize", 0)),
        "term_moved": int(after["raftTerm"]) != int(before["raftTerm"]),
        "server_version": before.get("version"),  # (which server answered: etcd's release, kvraft's API)
    }


def _fill_and_compact(cluster: LocalCluster, megabytes: int, value_kb: int) -> None:
    """``_fill`` through the leader, then a physical compaction at its last revision: half
    the file is free pages."""
    url = cluster.url(cluster.wait_leader())
    revision = _fill(url, megabytes, value_kb)
    code, doc = post(url, "/v3/kv/compaction", {"revision": str(revision), "physical": True}, timeout_s=300.0)
    if code != 200:
        raise RuntimeError(f"compaction: HTTP {code} {doc}")


def run(binary: str, megabytes: int, value_kb: int, rounds: int, base: Path) -> list[dict[str, Any]]:
    cluster = LocalCluster(3, base, binary=binary)
    try:
        cluster.start(timeout_s=90)
        _fill_and_compact(cluster, megabytes, value_kb)
        out = []
        for r in range(rounds):
            leader = cluster.wait_leader()
            result = {"round": r + 1, "leader": leader, **_round(cluster, leader)}
            _say(f"{binary}: {json.dumps(result)}")
            out.append(result)
            if r + 1 < rounds:  # the file is compact now: rewrite half and compact again
                _fill_and_compact(cluster, megabytes // 2, value_kb)
        return out
    finally:
        cluster.stop()


def stall(binary: str, megabytes: int, value_kb: int, snapshot_count: int, seconds: float,
          base: Path, catchup_entries: int = 5000, catchup_rounds: int = 1) -> dict[str, Any]:
    extra = ["--snapshot-count", str(snapshot_count)]
    if catchup_entries != 5000:  # (etcd 3.4 keeps 5,000, and has no flag for it)
        extra += ["--snapshot-catchup-entries", str(catchup_entries)]
    cluster = LocalCluster(3, base, binary=binary, extra_args=extra)
    try:
        cluster.start(timeout_s=90)
        leader = cluster.wait_leader()
        url = cluster.url(leader)
        _fill(url, megabytes, value_kb)
        before = _status(url)
        writer = _Writer(url)
        writer.thread.start()
        time.sleep(seconds)
        writer.stop.set()
        writer.thread.join(60)
        after = _status(url)
        took = sorted(e - b for b, e, ok in writer.spans if ok)
        if not took:
            raise RuntimeError("no put was answered")
        result = {
            "puts": len(took), "failed_puts": sum(1 for _, _, ok in writer.spans if not ok),
            "p50_ms": round(took[len(took) // 2] * 1000, 2), "p99_ms": round(took[int(len(took) * 0.99)] * 1000, 1),
            "slowest_s": round(took[-1], 3), "over_100ms": sum(1 for t in took if t > 0.1),
            "db": int(after.get("dbSize", 0)), "term_moved": int(after["raftTerm"]) != int(before["raftTerm"]),
            "server_version": before.get("version"),
            "rss_mb": {name: _rss_mb(m.pid) for name, m in sorted(cluster.members.items())},
        }
        _say(f"{binary}: {json.dumps(result)}")
        rounds = []
        for n in range(catchup_rounds):
            rounds.append(_catch_up(cluster, leader, snapshot_count + catchup_entries))
            if catchup_rounds > 1:
                _say(f"{binary}: catch-up round {n + 1}/{catchup_rounds}: {json.dumps(rounds[-1])}")
        result["catch_up"] = rounds[0]
        if catchup_rounds > 1:
            result["catch_up_rounds"] = rounds
        return result
    finally:
        cluster.stop()


def _rss_mb(pid: int | None) -> float | None:
    """A process's resident memory (``VmRSS``), in MB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


def _catch_up(cluster: LocalCluster, leader: str, kept: int) -> dict[str, Any]:
    """A follower stopped while the leader writes past what its log keeps (``kept``: the
    snapshot interval plus the entries kept for catch-up, 5,000 by default), then
    started: it needs a snapshot of the whole store. Recorded: the time from its start to its
    revision reaching the leader's, the puts a client made through the leader meanwhile and
    the slowest, each member's peak RSS sampled meanwhile, and the slowest answer of the
    follower to ``maintenance/status`` (asked every 0.2 s while it catches up: whether its
    event loop stopped for the restore)."""
    follower = next(name for name in sorted(cluster.members) if name != leader)
    cluster.stop_member(follower)
    log_path = cluster.members[follower].log_path
    logged = log_path.stat().st_size if log_path.exists() else 0
    url = cluster.url(leader)
    for i in range(kept + 500):
        code, doc = post(url, "/v3/kv/put", {"key": b64(f"lag/{i % 1000}"), "value": b64("y" * 100)}, timeout_s=30.0)
        if code != 200:
            raise RuntimeError(f"put: HTTP {code} {doc}")
        if i % 2000 == 0:
            _say(f"catch-up: {i}/{kept + 500} puts with {follower} stopped")
    target = int(_status(url)["header"]["revision"])
    writer = _Writer(url)
    writer.thread.start()
    peaks: dict[str, float] = {}
    started = time.monotonic()
    launched = time.time()
    cluster.start_member(follower)
    caught = None
    slowest_status = 0.0
    while caught is None and time.monotonic() - started < 300:
        for name, member in cluster.members.items():
            rss = _rss_mb(member.pid)
            if rss is not None:
                peaks[name] = max(peaks.get(name, 0.0), rss)
        asked = time.monotonic()
        try:
            revision = int(_status(cluster.url(follower))["header"]["revision"])
            slowest_status = max(slowest_status, time.monotonic() - asked)  # (once it answers at all)
            if revision >= target:
                caught = time.monotonic() - started
        except (OSError, RuntimeError, KeyError, ValueError):
            pass
        time.sleep(0.2)
    ended = time.monotonic()
    writer.stop.set()
    writer.thread.join(60)
    during = [(b, e, ok) for b, e, ok in writer.spans if e >= started and b <= ended]
    return {
        "follower": follower, "caught_up_s": None if caught is None else round(caught, 2),
        "puts_during": sum(1 for _, _, ok in during if ok),
        "slowest_put_s": round(max((e - b for b, e, _ in during), default=0.0), 3),
        "failed_puts": sum(1 for _, _, ok in during if not ok),
        "peak_rss_mb": dict(sorted(peaks.items())),
        "follower_slowest_status_s": round(slowest_status, 3),
        "phases_s": _phases(log_path, logged, launched),
    }


_PHASES = {"serving clients": "serving", "received a snapshot": "received",
           "recorded the received snapshot": "recorded", "installed the snapshot": "installed"}


def _phases(log_path: Path, offset: int, launched: float) -> dict[str, float]:
    """When a kvraft follower's log (from ``offset``) says it received, recorded and installed
    a snapshot, in seconds after it said it was serving clients, and when it said that
    (``serving``: seconds after it was launched at ``launched``); {} for etcd's log."""
    seen: dict[str, float] = {}
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        for text, name in _PHASES.items():
            if text in line and name not in seen:
                try:
                    stamp = json.loads(line)["ts"]
                except (ValueError, KeyError):
                    continue
                seen[name] = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    if "serving" not in seen:
        return {}
    return {"serving": round(seen["serving"] - launched, 3)} | {
        name: round(at - seen["serving"], 3) for name, at in seen.items() if name != "serving"}


def main(name: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m kvraft.bench {name}", description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=150, help="megabytes of values, written twice (default 150)")
    parser.add_argument("--value-kb", type=int, default=100, help="size of one value (default 100 KiB)")
    if name == "defrag-online":
        parser.add_argument("--rounds", type=int, default=3)
    else:
        parser.add_argument("--snapshot-count", type=int, default=2000)
        parser.add_argument("--seconds", type=float, default=20.0)
        parser.add_argument("--catchup-entries", type=int, default=5000,
                            help="kvraft's --snapshot-catchup-entries (default 5000, etcd 3.4's fixed figure)")
        parser.add_argument("--catchup-rounds", type=int, default=1,
                            help="catch-ups in a row on the same cluster (default 1)")
    parser.add_argument("--compare-etcd", metavar="PATH", help="also run etcd (its binary)")
    args = parser.parse_args(argv)
    counts = [args.mb, args.value_kb, getattr(args, "rounds", 1), getattr(args, "snapshot_count", 1)]
    counts += [getattr(args, "catchup_entries", 1), getattr(args, "catchup_rounds", 1)]
    if min(counts) < 1 or getattr(args, "seconds", 1.0) <= 0:
        parser.error("--mb, --value-kb, --rounds, --snapshot-count, --seconds, --catchup-entries and --catchup-rounds "
                     "must be positive")
    if args.compare_etcd and getattr(args, "catchup_entries", 5000) != 5000:
        parser.error("--catchup-entries: etcd 3.4 keeps 5000 entries (no flag): compare with the default")
    compared_etcd(parser, args.compare_etcd)  # (before kvraft's run: until session 56 it came after, minutes later)
    systems = [("kvraft", "kvraft")] + ([("etcd", args.compare_etcd)] if args.compare_etcd else [])
    summary: dict[str, Any] = {"mb": args.mb, "value_kb": args.value_kb}
    for system, binary in systems:
        with tempfile.TemporaryDirectory(prefix="kvraft-bench-large-") as tmp:
            if name == "defrag-online":
                summary[system] = run(binary, args.mb, args.value_kb, args.rounds, Path(tmp))
            else:
                summary[system] = stall(binary, args.mb // 2, args.value_kb, args.snapshot_count, args.seconds, Path(tmp),
                                        args.catchup_entries, args.catchup_rounds)
                _say(f"{system}: {json.dumps(summary[system])}")
    print(json.dumps(summary))
    return 0
