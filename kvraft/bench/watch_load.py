"""Watch fan-out, lease keepalives and lock contention against any etcd v3 JSON gateway
(kvraft or etcd), in the spirit of etcd's ``tools/benchmark`` ``watch-latency``,
``lease-keepalive`` and ``stm --stm-locker lock-rpc``.

    python -m kvraft.bench watch-fanout --endpoints URL --streams 100 --watchers-per-stream 100 \\
        --puts 40 --put-rate 10 [--pid PID]
    python -m kvraft.bench lease-keepalive --endpoints URL --clients 16 --total 5000
    python -m kvraft.bench lock --endpoints URL --clients 8 --total 1000

watch-fanout: ``--streams`` HTTP watch streams, each carrying ``--watchers-per-stream``
watchers of one key; then ``--puts`` puts to that key at ``--put-rate``/s. Reports events
delivered per second (all watchers), latency from a put being sent to each watcher
receiving it (p50/p99), and, with ``--pid`` (the member the watchers are on), the
resident memory the watchers added, per watcher. The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import time
from typing import Any

from kvraft.bench.http_client import JSON, HttpConnection, post_json

__all__ = ["WORKLOADS", "main"]

WORKLOADS = ("watch-fanout", "lease-keepalive", "lock")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))] * 1000


async def _post(conn: HttpConnection, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    return await post_json(conn, path, doc)


# -- watch fan-out --------------------------------------------------------------------------
async def _open_stream(url: str, key: str, watchers: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    conn = HttpConnection(url)
    reader, writer = await asyncio.open_connection(conn.host, conn.port)
    body = "".join(json.dumps({"create_request": {"key": key}}) for _ in range(watchers)).encode()
    head = (f"POST /v3/watch HTTP/1.1\r\nHost: {conn.authority}\r\nContent-Type: {JSON}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    writer.write(head + body)
    await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def _read_lines(reader: asyncio.StreamReader):  # type: ignore[no-untyped-def]
    """Yield the chunk payloads of a chunked response."""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


async def watch_fanout(args: argparse.Namespace) -> dict[str, Any]:
    url = args.endpoints.split(",")[0]
    key = _b64(args.key.encode())
    watchers = args.streams * args.watchers_per_stream
    rss_before = _rss_bytes(args.pid) if args.pid else 0
    streams = [await _open_stream(url, key, args.watchers_per_stream) for _ in range(args.streams)]
    created = 0
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    delivered = 0
    done = asyncio.Event()
    all_created = asyncio.Event()
    expected = watchers * args.puts

    per_stream: dict[int, int] = {}

    async def receive(reader: asyncio.StreamReader) -> None:
        nonlocal created, delivered
        pending = b""
        async for payload in _read_lines(reader):
            # a message may span chunks (etcd's gateway flushes its buffer, not messages)
            lines = (pending + payload).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if not line:
                    continue
                if b'"created"' in line:
                    created += 1
                    per_stream[id(reader)] = per_stream.get(id(reader), 0) + 1
                    if created == watchers:
                        all_created.set()
                    continue
                start = line.find(b'"value":"')
                if start < 0:
                    continue
                value = line[start + 9 : line.index(b'"', start + 9)].decode()
                latencies.append(time.perf_counter() - sent_at[value])
                delivered += 1
                if delivered >= expected:
                    done.set()

    tasks = [asyncio.get_running_loop().create_task(receive(r)) for r, _ in streams]
    try:
        async with asyncio.timeout(args.timeout):
            await all_created.wait()
    except TimeoutError:
        raise RuntimeError(f"only {created} of {watchers} watches created in {args.timeout}s "
                           f"(per stream: {sorted(per_stream.values())[:10]}...)") from None
    await asyncio.sleep(1.0)
    rss_after = _rss_bytes(args.pid) if args.pid else 0
    put = HttpConnection(url)
    await put.connect()
    started = time.perf_counter()
    interval = 1.0 / args.put_rate if args.put_rate > 0 else 0.0
    put_latencies: list[float] = []
    for i in range(args.puts):
        value = _b64(f"v{i:08d}".encode())
        sent_at[value] = time.perf_counter()
        await _post(put, "/v3/kv/put", {"key": key, "value": value})
        put_latencies.append(time.perf_counter() - sent_at[value])
        if interval:
            await asyncio.sleep(max(0.0, sent_at[value] + interval - time.perf_counter()))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(args.timeout):
            await done.wait()
    elapsed = time.perf_counter() - started
    for t in tasks:
        t.cancel()
    for _, writer in streams:
        writer.close()
    await put.close()
    latencies.sort()
    return {
        "workload": "watch-fanout",
        "watchers": watchers,
        "streams": args.streams,
        "puts": args.puts,
        "put_rate": args.put_rate,
        "events_expected": expected,
        "events_delivered": delivered,
        "seconds": round(elapsed, 3),
        "events_per_s": round(delivered / elapsed, 1) if elapsed else 0.0,
        "latency_ms_p50": round(_pct(latencies, 0.50), 2),
        "latency_ms_p99": round(_pct(latencies, 0.99), 2),
        "put_latency_ms_p50": round(_pct(sorted(put_latencies), 0.50), 2),
        "rss_bytes_per_watcher": round((rss_after - rss_before) / watchers) if args.pid else None,
    }


# -- keepalives and locks ---------------------------------------------------------------------
async def _timed_workers(args: argparse.Namespace, setup: Any, step: Any) -> tuple[list[float], float, int]:
    urls = args.endpoints.split(",")
    conns = [HttpConnection(urls[i % len(urls)]) for i in range(args.clients)]
    for c in conns:
        await c.connect()
    states = [await setup(c, i) for i, c in enumerate(conns)]
    counter = iter(range(args.total))
    latencies: list[float] = []
    errors = 0

    async def worker(i: int) -> None:
        nonlocal errors
        for _ in counter:
            t = time.perf_counter()
            try:
                await step(conns[i], states[i])
            except (RuntimeError, OSError, asyncio.IncompleteReadError):
                errors += 1
                continue
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(args.clients)))
    elapsed = time.perf_counter() - started
    for c in conns:
        await c.close()
    latencies.sort()
    return latencies, elapsed, errors


async def lease_keepalive(args: argparse.Namespace) -> dict[str, Any]:
    async def setup(conn: HttpConnection, _i: int) -> str:
        lease: str = (await _post(conn, "/v3/lease/grant", {"TTL": "600"}))["ID"]  # int64 as a JSON string
        return lease

    async def step(conn: HttpConnection, lease: str) -> None:
        result = await _post(conn, "/v3/lease/keepalive", {"ID": lease})
        if result.get("TTL") != "600":
            raise RuntimeError(f"keepalive: {result}")

    latencies, elapsed, errors = await _timed_workers(args, setup, step)
    return _summary("lease-keepalive", args, latencies, elapsed, errors, "keepalives_per_s")


async def lock(args: argparse.Namespace) -> dict[str, Any]:
    name = _b64(args.key.encode())

    async def setup(conn: HttpConnection, _i: int) -> str:
        lease: str = (await _post(conn, "/v3/lease/grant", {"TTL": "600"}))["ID"]  # int64 as a JSON string
        return lease

    async def step(conn: HttpConnection, lease: str) -> None:
        held = await _post(conn, "/v3/lock/lock", {"name": name, "lease": lease})
        await _post(conn, "/v3/lock/unlock", {"key": held["key"]})

    latencies, elapsed, errors = await _timed_workers(args, setup, step)
    return _summary("lock", args, latencies, elapsed, errors, "acquire_release_per_s")


def _summary(name: str, args: argparse.Namespace, latencies: list[float], elapsed: float, errors: int,
             rate_name: str) -> dict[str, Any]:
    return {
        "workload": name,
        "clients": args.clients,
        "total": args.total,
        "ok": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        rate_name: round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "latency_ms_p50": round(_pct(latencies, 0.50), 2),
        "latency_ms_p99": round(_pct(latencies, 0.99), 2),
    }


def _parser(workload: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m kvraft.bench {workload}")
    parser.add_argument("--endpoints", default="http://127.0.0.1:2379")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--total", type=int, default=2000)
    parser.add_argument("--key", default="bench-watch" if workload == "watch-fanout" else "bench-lock")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--watchers-per-stream", type=int, default=100)
    parser.add_argument("--puts", type=int, default=40)
    parser.add_argument("--put-rate", type=float, default=10.0)
    parser.add_argument("--pid", type=int, default=0, help="member PID, for memory per watcher")
    parser.add_argument("--timeout", type=float, default=300.0)
    return parser


def main(workload: str, argv: list[str] | None = None) -> int:
    args = _parser(workload).parse_args(argv)
    run = {"watch-fanout": watch_fanout, "lease-keepalive": lease_keepalive, "lock": lock}[workload]
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    summary = asyncio.run(run(args))
    for name, value in summary.items():
        print(f"  {name}:\t{value}")
    print(json.dumps(summary, sort_keys=True))
    return 0
