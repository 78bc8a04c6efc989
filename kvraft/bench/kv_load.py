"""Client load against any etcd v3 JSON gateway (kvraft or etcd): put, range, txn-put, mixed.

In the spirit of etcd's ``tools/benchmark``: ``--endpoints``, ``--conns``, ``--clients``,
``--total``, ``--key-size``, ``--val-size``, ``--key-space-size``, ``--sequential-keys``,
``--consistency l|s``, plus ``--encoding json|msgpack`` (msgpack only for kvraft) and
``--batch N`` (msgpack put only: N puts per request through kvraft's ``/v3/kv/batch``;
``--total`` still counts puts, latency is per request, ``ops_per_s`` counts puts).
``--clients`` workers issue requests back to back over ``--conns`` keep-alive HTTP/1.1
connections per endpoint (one request in flight per connection, so use ``--conns`` >=
``--clients`` to let every worker run). Prints throughput and latency percentiles, and a
one-line JSON summary last.

    python -m kvraft.bench put --endpoints http://127.0.0.1:2379 --clients 16 --conns 16 \\
        --total 20000 --val-size 100
    python -m kvraft.bench range foo --consistency l --clients 16 --conns 16
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgpack

from kvraft.bench.http_client import HttpConnection, render_post

__all__ = ["main", "run"]

MSGPACK = "application/x-msgpack"


def _parser(workload: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m kvraft.bench {workload}")
    parser.add_argument("--endpoints", default="http://127.0.0.1:2379")
    parser.add_argument("--conns", type=int, default=1, help="connections per endpoint")
    parser.add_argument("--clients", type=int, default=1, help="concurrent workers")
    parser.add_argument("--total", type=int, default=10000)
    parser.add_argument("--key-size", type=int, default=8)
    parser.add_argument("--val-size", type=int, default=8)
    parser.add_argument("--key-space-size", type=int, default=100000)
    parser.add_argument("--sequential-keys", action="store_true")
    parser.add_argument("--consistency", choices=["l", "s"], default="l")
    parser.add_argument("--encoding", choices=["json", "msgpack"], default="json")
    parser.add_argument("--txn-ops", type=int, default=1, help="txn-put: puts per txn")
    parser.add_argument("--rw-ratio", type=float, default=1.0, help="mixed: reads per write")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1, help="put, msgpack: puts per /v3/kv/batch request")
    if workload == "range":
        parser.add_argument("key")
        parser.add_argument("end", nargs="?", default="")
    return parser


class _Body:
    """Renders request bodies for one encoding."""

    def __init__(self, encoding: str) -> None:
        self.packed = encoding == "msgpack"
        self.content_type = MSGPACK if self.packed else "application/json"

    def b(self, value: bytes) -> Any:
        return value if self.packed else base64.b64encode(value).decode()

    def dumps(self, doc: dict[str, Any]) -> bytes:
        return msgpack.packb(doc, use_bin_type=True) if self.packed else json.dumps(doc).encode()


def _key_maker(args: argparse.Namespace) -> Callable[[int], bytes]:
    rng = random.Random(args.seed)

    def make(seq: int) -> bytes:
        n = seq % args.key_space_size if args.sequential_keys else rng.randrange(args.key_space_size)
        return str(n).encode().rjust(args.key_size, b"k")[: max(args.key_size, len(str(n)))]

    return make


def _request_maker(workload: str, args: argparse.Namespace, body: _Body) -> Callable[[int], tuple[str, bytes]]:
    key = _key_maker(args)
    value = b"v" * args.val_size
    serializable = args.consistency == "s"
    read_every = max(1, round(args.rw_ratio + 1)) if workload == "mixed" else 0

    def put(seq: int) -> tuple[str, bytes]:
        return "/v3/kv/put", body.dumps({"key": body.b(key(seq)), "value": body.b(value)})

    def range_(seq: int) -> tuple[str, bytes]:
        doc: dict[str, Any] = {"key": body.b(getattr(args, "key", "").encode() or key(seq))}
        if getattr(args, "end", ""):
            doc["range_end"] = body.b(args.end.encode())
        if serializable:
            doc["serializable"] = True
        return "/v3/kv/range", body.dumps(doc)

    def txn_put(seq: int) -> tuple[str, bytes]:
        ops = [{"request_put": {"key": body.b(key(seq * args.txn_ops + i)), "value": body.b(value)}} for i in range(args.txn_ops)]
        return "/v3/kv/txn", body.dumps({"success": ops})

    def put_batch(seq: int) -> tuple[str, bytes]:
        first = seq * args.batch
        ops = [["put", {"key": key(first + i), "value": value}] for i in range(min(args.batch, args.total - first))]
        return "/v3/kv/batch", msgpack.packb(ops, use_bin_type=True)

    if workload == "put" and args.batch > 1:
        if not body.packed:
            raise SystemExit("--batch needs --encoding msgpack (kvraft's /v3/kv/batch)")
        return put_batch

    def mixed(seq: int) -> tuple[str, bytes]:
        if seq % read_every:
            doc: dict[str, Any] = {"key": body.b(key(seq))}
            if serializable:
                doc["serializable"] = True
            return "/v3/kv/range", body.dumps(doc)
        return put(seq)

    return {"put": put, "range": range_, "txn-put": txn_put, "mixed": mixed}[workload]


async def run(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    body = _Body(args.encoding)
    make = _request_maker(workload, args, body)
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    pools: list[asyncio.Queue[HttpConnection]] = []
    for url in endpoints:
        pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
        for _ in range(args.conns):
            conn = HttpConnection(url)
            await conn.connect()
            pool.put_nowait(conn)
        pools.append(pool)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    batched = make.__name__ == "put_batch"
    requests = -(-args.total // args.batch) if batched else args.total
    counter = iter(range(requests))
    done_ops = [0]

    async def worker(index: int) -> None:
        pool = pools[index % len(pools)]
        for seq in counter:
            path, payload = make(seq)
            conn = await pool.get()
            raw = render_post(conn.authority, path, payload, body.content_type)
            started = time.perf_counter()
            try:
                status, answer = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError) as exc:
                status = 0
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            finally:
                pool.put_nowait(conn)
            if status == 200:
                latencies.append(time.perf_counter() - started)
                if batched:
                    codes = [code for code, _ in msgpack.unpackb(answer, raw=False)]
                    done_ops[0] += codes.count(0)
                    if len(codes) != codes.count(0):
                        errors["op refused"] = errors.get("op refused", 0) + len(codes) - codes.count(0)
                else:
                    done_ops[0] += 1
            elif status:
                errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(args.clients)))
    elapsed = time.perf_counter() - started
    for pool in pools:
        while not pool.empty():
            await pool.get_nowait().close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {
        "workload": workload,
        "encoding": args.encoding,
        "clients": args.clients,
        "conns": args.conns,
        "total": args.total,
        "batch": args.batch if batched else 1,
        "ok": len(latencies),
        "ok_ops": done_ops[0],
        "errors": errors,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "ops_per_s": round(done_ops[0] / elapsed, 1) if elapsed else 0.0,
        "latency_ms_avg": round(statistics.fmean(latencies) * 1000, 3) if latencies else 0.0,
        "latency_ms_p50": round(pct(0.50), 3),
        "latency_ms_p90": round(pct(0.90), 3),
        "latency_ms_p99": round(pct(0.99), 3),
    }


def _report(summary: dict[str, Any]) -> None:
    print("Summary:")
    print(f"  Workload:\t{summary['workload']} ({summary['encoding']}, {summary['clients']} clients, {summary['conns']} conns)")
    print(f"  Total:\t{summary['seconds']:.4f} secs.")
    print(f"  Requests/sec:\t{summary['requests_per_s']:.1f}")
    if summary["batch"] > 1:
        print(f"  Puts/sec:\t{summary['ops_per_s']:.1f} ({summary['batch']} per request)")
    print(f"  Average:\t{summary['latency_ms_avg']:.3f} ms")
    print("Latency:")
    for p in ("p50", "p90", "p99"):
        print(f"  {p}:\t{summary['latency_ms_' + p]:.3f} ms")
    if summary["errors"]:
        print(f"Errors: {summary['errors']}")
    print(json.dumps(summary, sort_keys=True))


def main(workload: str, argv: list[str] | None = None) -> int:
    args = _parser(workload).parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    summary = asyncio.run(run(workload, args))
    _report(summary)
    return 0 if summary["ok"] else 1
