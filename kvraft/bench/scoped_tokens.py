"""What kvraft's scoped tokens cost (docs/design/auth.md): the agent grants one per task
attempt, every grant rewrites the auth record, and each request with a token resolves it.

    python -m kvraft.bench scoped-tokens [--live 2000] [--step 500] [--puts 300]

Starts a local 3-member cluster (127.0.0.1, a temporary directory) with auth on and an
``agent`` user that holds READWRITE on ``/jobs/``. Then, in steps, it grants tokens (one per
job, all bound to one lease, as one agent's node lease) until ``--live`` are held, and
reports for each step:

- the grant latency (p50/p99);
- the size of all grants held (each is a key of its own; a grant writes only its own);
- the latency of ``--puts`` sequential puts made with a scoped token, against the same puts
  made with the user's own token.

Progress lines go to stderr; the last line on stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kvraft.client import Client
from kvraft.testing.auth import enable_auth

__all__ = ["main"]


def _ms(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0


async def _put_latencies(client: Client, key: str, count: int) -> list[float]:
    out = []
    for i in range(count):
        t0 = time.perf_counter()
        await client.put(key, str(i))
        out.append(time.perf_counter() - t0)
    return out


async def _run(urls: list[str], live: int, step: int, puts: int) -> list[dict[str, Any]]:
    async with Client(urls) as admin:
        await enable_auth(admin, "rootpw", {"agent": [("READWRITE", "/jobs/", "/jobs0")]},
                          {"agent": ("agentpw", "agent")})
    rows: list[dict[str, Any]] = []
    async with Client(urls[:1], user="agent", password="agentpw") as agent:
        lease = (await agent.lease_grant(3600)).id
        granted = 0
        token = ""
        while granted < live:
            grants = []
            for _ in range(min(step, live - granted)):
                t0 = time.perf_counter()
                token = await agent.scoped_token_grant(f"node-1/job-{granted}/worker-0#1", f"/jobs/job-{granted}/",
                                                       f"/jobs/job-{granted}0", lease=lease)
                grants.append(time.perf_counter() - t0)
                granted += 1
            async with Client(urls[:1], token=token) as rank:
                scoped = await _put_latencies(rank, f"/jobs/job-{granted - 1}/progress", puts)
            own = await _put_latencies(agent, f"/jobs/job-{granted - 1}/progress", puts)
            async with Client(urls[:1], user="root", password="rootpw") as root:
                record = len(json.dumps([[t.id, t.user, t.name, t.perm_type, t.key.hex(), t.range_end.hex(), t.lease]
                                         for t in await root.scoped_token_list()]))
            row = {"live_tokens": granted, "grant_p50_ms": round(_ms(grants, 0.5), 2),
                   "grant_p99_ms": round(_ms(grants, 0.99), 2), "all_grants_bytes_approx": record,
                   "put_scoped_p50_ms": round(_ms(scoped, 0.5), 2), "put_scoped_p99_ms": round(_ms(scoped, 0.99), 2),
                   "put_user_p50_ms": round(_ms(own, 0.5), 2), "put_user_p99_ms": round(_ms(own, 0.99), 2)}
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), file=sys.stderr, flush=True)
    return rows


def main(name: str, argv: list[str]) -> int:
    from kvraft.server.local import LocalCluster

    parser = argparse.ArgumentParser(prog=f"python -m kvraft.bench {name}")
    parser.add_argument("--live", type=int, default=2000, help="tokens held at the end (default 2000)")
    parser.add_argument("--step", type=int, default=500, help="grants between two measurements (default 500)")
    parser.add_argument("--puts", type=int, default=300, help="sequential puts per measurement (default 300)")
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kvraft-bench-scoped-") as tmp:
        cluster = LocalCluster(3, Path(tmp), extra_args=["--bcrypt-cost", "4"])
        try:
            cluster.start(timeout_s=120)
            urls = [m.client_url for m in cluster.members.values()]
            rows = asyncio.run(_run(urls, ns.live, ns.step, ns.puts))
        finally:
            cluster.stop()
    print(json.dumps({"workload": name, "steps": rows}))
    return 0
