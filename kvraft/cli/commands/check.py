"""``check perf [--load s|m|l|xl] [--prefix P] [--auto-compact] [--auto-defrag]`` and
``check datascale`` (the same flags; see ``run_datascale``).

etcdctl's write benchmark: random 256-byte keys under ``--prefix`` with 1 KiB values, at
the load's rate limit from its number of concurrent clients for 60 s, then delete the
prefix and judge: throughput > 90 % of the limit, slowest request <= 500 ms, stddev <=
100 ms. ``--duration`` (kvctl only) shortens the run. Progress is drawn on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_FEATURE, EXIT_ERROR, EXIT_INVALID_INPUT, CommandError
from kvraft.cli.parsing import duration, subcommands
from kvraft.cli.progress import ProgressBar
from kvraft.client import ClientError
from kvraft.client._transport import normalize_endpoint

__all__ = ["LOADS", "register"]

LOADS = {"s": (150, 50), "m": (1000, 200), "l": (8000, 500), "xl": (15000, 1000)}  # (writes/s, clients)
_ALIASES = {"s": "s", "small": "s", "m": "m", "medium": "m", "l": "l", "large": "l", "xl": "xl", "xLarge": "xl"}


def _load_model(name: str) -> str:
    model = _ALIASES.get(name)
    if model is None:
        raise CommandError(EXIT_BAD_FEATURE, f"unknown load option {name}")
    return model


def _write_errors(ctx: Context, errors: dict[str, int]) -> None:
    ctx.stdout.write("FAIL: too many errors\n")
    for text, count in errors.items():
        ctx.stdout.write(f"FAIL: ERROR({text}) -> {count}\n")


async def _require_empty(client: Any, prefix: str) -> None:
    """Refuse to run a check over a prefix that already holds keys (as etcdctl)."""
    existing = await client.get(prefix, prefix=True, limit=1)
    if existing.kvs:
        raise CommandError(EXIT_INVALID_INPUT,
                           f'prefix "{prefix}" has keys. Delete with etcdctl del --prefix {prefix} first')


async def run_perf(ctx: Context, ns: argparse.Namespace) -> None:
    model = _load_model(ns.load)
    limit, clients = LOADS[model]
    duration_s = ns.duration
    client = await ctx.client()
    await _require_empty(client, ns.prefix)
    value = bytes(1024)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=clients)

    async def worker() -> None:
        while (key := await queue.get()) is not None:
            started = time.perf_counter()
            try:
                await client.put(key, value)
                latencies.append(time.perf_counter() - started)
            except ClientError as exc:
                errors[str(exc)] = errors.get(str(exc), 0) + 1

    workers = [asyncio.ensure_future(worker()) for _ in range(clients)]
    bar = ProgressBar(ctx.stderr, int(duration_s), unit="s")
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    while (elapsed := loop.time() - started) < duration_s:
        due = int(elapsed * limit) + 1
        while sent < due:
            await queue.put(ns.prefix.encode() + os.urandom(256))
            sent += 1
        bar.update(int(elapsed))
        await asyncio.sleep(min(1.0 / limit, duration_s - elapsed) if elapsed < duration_s else 0)
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    bar.update(int(duration_s))
    bar.finish()
    total_s = loop.time() - started

    deleted = await client.delete(ns.prefix, prefix=True)
    await _compact_and_defrag(ctx, ns, deleted.header.revision)

    ok = True
    if errors:
        _write_errors(ctx, errors)
        ok = False
    rps = len(latencies) / total_s if total_s > 0 else 0.0
    slowest = max(latencies, default=0.0)
    stddev = statistics.pstdev(latencies) if latencies else 0.0
    if rps / limit <= 0.9:
        ctx.stdout.write(f"FAIL: Throughput too low: {int(rps) + 1} writes/s\n")
        ok = False
    else:
        ctx.stdout.write(f"PASS: Throughput is {int(rps) + 1} writes/s\n")
    if slowest > 0.5:
        ctx.stdout.write(f"Slowest request took too long: {slowest:f}s\n")
        ok = False
    else:
        ctx.stdout.write(f"PASS: Slowest request took {slowest:f}s\n")
    if stddev > 0.1:
        ctx.stdout.write(f"Stddev too high: {stddev:f}s\n")
        ok = False
    else:
        ctx.stdout.write(f"PASS: Stddev is {stddev:f}s\n")
    ctx.stdout.write("PASS\n" if ok else "FAIL\n")
    if not ok:
        raise CommandError(EXIT_ERROR, None)


DATASCALE = {"s": (10000, 50), "m": (100000, 200), "l": (1000000, 500), "xl": (3000000, 1000)}  # (pairs, clients)
DATASCALE_KV_BYTES = 1024


async def _resident_bytes(ctx: Context, endpoint: str, token: str | None) -> float:
    """``process_resident_memory_bytes`` from the member's ``/metrics`` (0 if absent); the
    client's token goes along (a member with ``--metrics-auth`` asks for it)."""
    import aiohttp

    tls = ctx.options.tls()
    url = normalize_endpoint(endpoint, "https" if tls is not None else "http") + "/metrics"
    connector = aiohttp.TCPConnector(ssl=tls.context() if tls is not None else True)
    timeout = aiohttp.ClientTimeout(total=ctx.options.command_timeout_s, sock_connect=ctx.options.dial_timeout_s)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, session.get(url, headers={"Authorization": token} if token else {}) as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return 0.0
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1])
    return 0.0


async def run_datascale(ctx: Context, ns: argparse.Namespace) -> None:
    """etcdctl's ``check datascale``: put the load's number of 1 KiB pairs (512-byte random
    keys under ``--prefix``, 512-byte values) from its number of concurrent clients, read
    the first endpoint's resident memory before and after, delete the prefix, report the
    difference. ``--limit`` (kvctl only) writes fewer pairs."""
    model = _load_model(ns.load)
    pairs, clients = DATASCALE[model]
    if ns.limit:
        pairs = ns.limit
    client = await ctx.client()
    await _require_empty(client, ns.prefix)
    endpoint = ctx.options.endpoints[0]
    before = await _resident_bytes(ctx, endpoint, client.token)
    if before == 0:
        ctx.stdout.write("FAIL: Could not read process_resident_memory_bytes before the put operations.\n")
        raise CommandError(EXIT_ERROR, None)
    ctx.stdout.write(f"Start data scale check for work load [{pairs} key-value pairs, {DATASCALE_KV_BYTES} bytes "
                     f"per key-value, {clients} concurrent clients].\n")
    ctx.stdout.flush()
    value = bytes(DATASCALE_KV_BYTES // 2)
    errors: dict[str, int] = {}
    bar = ProgressBar(ctx.stderr, pairs, unit="puts")
    remaining = iter(range(pairs))
    done = 0

    async def worker() -> None:
        nonlocal done
        for _ in remaining:
            key = ns.prefix.encode() + os.urandom(8) + bytes(DATASCALE_KV_BYTES // 2 - 8)
            try:
                await client.put(key, value)
            except ClientError as exc:
                errors[str(exc)] = errors.get(str(exc), 0) + 1
            done += 1
            bar.update(done)

    await asyncio.gather(*(worker() for _ in range(clients)))
    bar.finish()
    after = await _resident_bytes(ctx, endpoint, client.token)
    deleted = await client.delete(ns.prefix, prefix=True)
    await _compact_and_defrag(ctx, ns, deleted.header.revision)
    if after == 0:
        ctx.stdout.write("FAIL: Could not read process_resident_memory_bytes after the put operations.\n")
        raise CommandError(EXIT_ERROR, None)
    if errors:
        _write_errors(ctx, errors)
        raise CommandError(EXIT_ERROR, None)
    ctx.stdout.write(f"PASS: Approximate system memory used : {(after - before) / (1024 * 1024):.2f} MB.\n")


async def _compact_and_defrag(ctx: Context, ns: argparse.Namespace, revision: int) -> None:
    client = await ctx.client()
    if ns.auto_compact:
        ctx.stdout.write(f"Compacting with revision {revision}\n")
        await client.compact(revision, physical=True)
        ctx.stdout.write(f"Compacted with revision {revision}\n")
    if ns.auto_defrag:
        for ep in ctx.options.endpoints:
            ctx.stdout.write(f'Defragmenting "{ep}"\n')
            await client.defragment(endpoint=ep)
            ctx.stdout.write(f'Defragmented "{ep}"\n')


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    check = sub.add_parser("check", help="commands for checking properties of the etcd cluster")
    check.set_defaults(help_parser=check)
    verbs = subcommands(check, "verb")
    p = verbs.add_parser("perf", parents=[parent], help="Check the performance of the etcd cluster")
    p.add_argument("--load", default="s", help="The performance check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)")
    p.add_argument("--prefix", default="/etcdctl-check-perf/", help="The prefix for writing the performance check's keys.")
    p.add_argument("--auto-compact", action="store_true", help="Compact storage with last revision after test is finished.")
    p.add_argument("--auto-defrag", action="store_true", help="Defragment storage after test is finished.")
    p.add_argument("--duration", type=duration, default=60.0, help="How long to write (kvctl only; etcdctl: always 60s)")
    p.set_defaults(handler=run_perf)
    p = verbs.add_parser("datascale", parents=[parent],
                         help="Check the memory usage of holding data for different workloads on a given server endpoint.")
    p.add_argument("--load", default="s", help="The datascale check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)")
    p.add_argument("--prefix", default="/etcdctl-check-datascale/", help="The prefix for writing the datascale check's keys.")
    p.add_argument("--auto-compact", action="store_true", help="Compact storage with last revision after test is finished.")
    p.add_argument("--auto-defrag", action="store_true", help="Defragment storage after test is finished.")
    p.add_argument("--limit", type=int, default=0, help="How many pairs to write (kvctl only; etcdctl: the load's count)")
    p.set_defaults(handler=run_datascale)
