"""A member that freezes under its clients: how long until a read, a watch and a CLI read
go on, with the client's keepalive and without; and what the heartbeats cost a member.

    python -m kvraft.bench frozen-member [--rounds 3] [--compare-etcd /usr/bin/etcd]
                                         [--idle-streams 2000] [--seconds 20]

Each round starts a 3-member cluster on 127.0.0.1 (default flags). Two clients have a follower
first in their endpoint lists: one with keepalive (``kvraft.client._liveness``, 1 s / 2 s), one
without (``keepalive_time_s=None``, the behaviour before it). Each watches a prefix on that
follower; a third client with keepalive only watches (``alone``: no request of its own finds
the member silent first, so its stream's heartbeats or probes must). The follower is frozen
(SIGSTOP), a fourth client writes one key through the other members, and the round records, per client, the seconds from the freeze to the watch event
(none within ``--give-up`` seconds: a miss) and to the answer of a linearizable get (5 s
request deadline: a failure). It also records ``kvctl get`` and, against etcd, ``etcdctl get``,
each with the frozen member first in ``--endpoints`` (their defaults, both with a 5 s command
timeout).

``--idle-streams N`` (kvraft only): one member (``--grpc-keepalive-min-time=1s``), N watch
streams that receive nothing: without heartbeats, then asking for one every 5 s (the interval
a member grants by default), then every second; reported is the member's CPU (user + system,
from /proc) over ``--seconds`` each. Progress on stderr, one JSON summary last on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from kvraft.bench import compared_etcd
from kvraft.client import Client, ClientError
from kvraft.server.local import LocalCluster

__all__ = ["main"]

async def _first_event(client: Client, prefix: str, start: int) -> float:
    """When (monotonic clock) the first event under ``prefix`` arrived."""
    async with client.watch(prefix, prefix=True, start_revision=start) as watcher:
        async for response in watcher:
            if response.events:
                return time.monotonic()
    raise ClientError("the watch ended")


async def _timed_get(client: Client, key: str) -> tuple[bool, float]:
    started = time.monotonic()
    try:
        await client.get(key)
    except ClientError:
        return False, time.monotonic() - started
    return True, time.monotonic() - started


def _cli_get(argv: list[str]) -> tuple[bool, float]:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, timeout=60, env={**os.environ, "ETCDCTL_API": "3"})
    return done.returncode == 0, time.monotonic() - started


async def one_round(binary: str, base: Path, give_up_s: float) -> dict[str, Any]:
    cluster = LocalCluster(3, base, binary=binary)
    try:
        cluster.start()
        leader = cluster.wait_leader()
        victim = next(name for name in cluster.members if name != leader)
        others = [cluster.url(n) for n in cluster.members if n != victim]
        endpoints = [cluster.url(victim), *others]
        async with Client(endpoints) as on, Client(endpoints, keepalive_time_s=None) as off, \
                Client(endpoints) as alone, Client(others) as writer:
            start = (await writer.put("fz/seed", b"0")).header.revision + 1
            for client in (on, off, alone):
                await client.get("fz/seed")  # (all pinned on the follower)
            watches = {name: asyncio.create_task(_first_event(c, "fz/k", start))
                       for name, c in (("on", on), ("off", off), ("alone", alone))}
            await asyncio.sleep(1.0)  # (the watches are open on the follower)
            pid = cluster.members[victim].pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            frozen = time.monotonic()
            try:
                await writer.put("fz/k", b"1")
                put_at = time.monotonic()
                gets = await asyncio.gather(_timed_get(on, "fz/k"), _timed_get(off, "fz/k"))
                cli = {"kvctl": await asyncio.to_thread(
                    _cli_get, [sys.executable, "-m", "kvraft.cli", "--endpoints=" + ",".join(endpoints), "get", "fz/k"])}
                if binary == "etcd" and shutil.which("etcdctl"):  # (etcdctl speaks gRPC: etcd only)
                    cli["etcdctl"] = await asyncio.to_thread(
                        _cli_get, ["etcdctl", "--endpoints=" + ",".join(endpoints), "get", "fz/k"])
                await asyncio.wait(watches.values(), timeout=max(0.0, put_at + give_up_s - time.monotonic()))
                arrived = {name: task.result() if task.done() and not task.exception() else None
                           for name, task in watches.items()}
                for task in watches.values():
                    task.cancel()
                await asyncio.gather(*watches.values(), return_exceptions=True)
            finally:
                os.kill(pid, signal.SIGCONT)
        return {
            "get": {name: {"ok": ok, "seconds": round(seconds, 3)} for name, (ok, seconds) in zip(("on", "off"), gets, strict=True)},
            "watch": {name: (round(at - frozen, 3) if at is not None else None) for name, at in arrived.items()},
            "cli": {name: {"ok": ok, "seconds": round(seconds, 3)} for name, (ok, seconds) in cli.items()},
        }
    finally:
        cluster.stop()


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def times(values: list[float | None]) -> dict[str, Any]:
        got = [v for v in values if v is not None]
        return {"ok": len(got), "rounds": len(values), "p50_s": round(statistics.median(got), 2) if got else None,
                "max_s": round(max(got), 2) if got else None}

    out: dict[str, Any] = {}
    for mode in ("on", "off"):
        out[f"get keepalive {mode}"] = times([r["get"][mode]["seconds"] if r["get"][mode]["ok"] else None for r in rounds])
        out[f"watch keepalive {mode}"] = times([r["watch"][mode] for r in rounds])
    out["watch alone"] = times([r["watch"]["alone"] for r in rounds])
    for name in rounds[0]["cli"]:
        out[f"{name} get"] = times([r["cli"][name]["seconds"] if r["cli"][name]["ok"] else None for r in rounds])
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _idle_cost(base: Path, streams: int, seconds: float) -> dict[str, Any]:
    cluster = LocalCluster(1, base, binary="kvraft", extra_args=["--grpc-keepalive-min-time=1s"])
    body = json.dumps({"create_request": {"key": "aWRsZS8=", "range_end": "aWRsZTA="}}).encode()  # idle/ .. idle0
    out: dict[str, Any] = {}
    try:
        cluster.start()
        cluster.wait_leader()
        url = cluster.url("m0") + "/v3/watch"
        pid = cluster.members["m0"].pid
        assert pid is not None
        for label, headers in (("none", {}), ("every 5 s", {"Kvraft-Keepalive": "5"}),
                               ("every 1 s", {"Kvraft-Keepalive": "1"})):
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                responses = []
                for n in range(streams):
                    responses.append(await session.post(url, data=body, headers=headers))
                    if (n + 1) % 500 == 0:
                        print(f"idle streams ({label}): {n + 1}/{streams} open", file=sys.stderr, flush=True)
                received = [0]
                readers = [asyncio.create_task(_drain(r, received)) for r in responses]
                await asyncio.sleep(2.0)
                before, started, got = _cpu_s(pid), time.monotonic(), received[0]
                await asyncio.sleep(seconds)
                used, wall, got = _cpu_s(pid) - before, time.monotonic() - started, received[0] - got
                for task in readers:
                    task.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
                for response in responses:
                    response.close()
            out[label] = {"member_cpu_pct": round(100 * used / wall, 1), "streams": streams,
                          "bytes_per_s": round(got / wall)}
            print(f"idle streams, heartbeats {label}: member CPU {100 * used / wall:.1f} % over {wall:.0f} s, "
                  f"{got / wall:.0f} bytes/s received", file=sys.stderr, flush=True)
            await asyncio.sleep(3.0)  # (the member notices the closed streams)
    finally:
        cluster.stop()
    return out


async def _drain(response: aiohttp.ClientResponse, received: list[int]) -> None:
    while chunk := await response.content.readany():
        received[0] += len(chunk)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    systems = (["kvraft"] + (["etcd"] if args.compare_etcd else [])) if args.rounds else []
    with tempfile.TemporaryDirectory(prefix="kvraft-frozen-") as tmp:
        for system in systems:
            rounds = []
            for n in range(args.rounds):
                binary = system  # (LocalCluster runs the etcd on PATH for "etcd")
                result = await one_round(binary, Path(tmp) / f"{system}-{n}", args.give_up)
                rounds.append(result)
                print(f"{system} round {n + 1}/{args.rounds}: {json.dumps(result)}", file=sys.stderr, flush=True)
            report[system] = line = _summary(rounds)
            for name, figures in line.items():
                print(f"{system:7} {name:20} {figures['ok']}/{figures['rounds']} ok, p50 {figures['p50_s']} s, "
                      f"max {figures['max_s']} s", flush=True)
        if args.idle_streams:
            report["idle streams"] = await _idle_cost(Path(tmp) / "idle", args.idle_streams, args.seconds)
    return report


def main(_name: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvraft.bench frozen-member", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--give-up", type=float, default=15.0, help="seconds a watch may take before it counts as a miss")
    parser.add_argument("--compare-etcd", metavar="ETCD", default="",
                        help="also run etcd (checked to exist; LocalCluster runs the etcd on PATH, as the failover bench)")
    parser.add_argument("--idle-streams", type=int, default=0, help="measure heartbeats' cost with this many idle watches")
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU measuring window per idle-stream setting")
    args = parser.parse_args(argv)
    if args.rounds < 0 or args.idle_streams < 0 or args.give_up <= 0 or args.seconds <= 0:
        parser.error("--rounds and --idle-streams at least 0; --give-up and --seconds positive")
    compared_etcd(parser, args.compare_etcd)
    print(json.dumps(asyncio.run(_main(args))))
    return 0
