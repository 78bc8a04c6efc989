"""The lease traffic of a robustness run, recorded for ``checks.check_leases``.

* **Kept-alive leases** (``kept_lease_client``): grant (TTL 10), attach a key, keep the
  lease alive five times, reading the key through every member after each acknowledged
  keepalive, then revoke it and read the key through every member again.
* **Expiring leases** (``expiring_lease_client``): a lease of TTL 3 with a key, granted
  about once a second and never kept alive; its key is read through the members in turn
  until a second past its TTL. ``final_lease_reads`` (after healing) reads every such
  key through every member until they are all gone, for at most TTL + ``GONE_GRACE_S``.

Everything is recorded as it happened (``History.leases``, ``lease_reads``,
``lease_final``; times are this process's monotonic clock, which the members share, and
which a wall-clock step does not move), so the checks can be run again on a kept history.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvraft.robustness.workload import Workload

__all__ = [
    "EXPIRING_PREFIX",
    "EXPIRING_TTL_S",
    "GONE_GRACE_S",
    "KEPT_PREFIX",
    "KEPT_TTL_S",
    "expiring_lease_client",
    "final_lease_reads",
    "kept_lease_client",
]

KEPT_TTL_S = 10
EXPIRING_TTL_S = 3
KEPT_PREFIX = "rb/lease/"
EXPIRING_PREFIX = "rb/exp/"  # under the watched prefix: expiries are watched too
GONE_GRACE_S = 20.0
"""An expired lease's key must be gone through every member within TTL + this, once
the cluster is healed (the new leader's extension, a lease-loop period and a revoke's
trip through Raft, on a loaded machine)."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _grant(w: Workload, url: str, key: str, ttl: int, role: str) -> dict[str, Any]:
    """Grant a lease and attach ``key``; the record is in ``history.leases`` from the
    grant's answer on (``attached`` only once the put was acknowledged)."""
    call = time.monotonic()
    granted = await w._post(url, "/v3/lease/grant", {"TTL": str(ttl)})
    record: dict[str, Any] = {
        "id": str(granted["ID"]), "key": key, "role": role, "ttl": int(granted.get("TTL", ttl)),
        "grant_call": call, "grant_ret": time.monotonic(), "attached": False, "keepalives": [],
        "revoke_call": None, "revoke_ret": None,
    }  # fmt: skip
    w.history.leases.append(record)
    await w._post(url, "/v3/kv/put", {"key": _b64(key), "value": _b64("held"), "lease": record["id"]})
    record["attached"] = True
    record["attached_ret"] = time.monotonic()
    return record


async def _read(w: Workload, record: dict[str, Any], url: str) -> None:
    """One linearizable read of the lease's key through ``url``, recorded (a read that
    failed is left out: it saw nothing)."""
    call = time.monotonic()
    try:
        doc = await w._post(url, "/v3/kv/range", {"key": _b64(record["key"])})
    except Exception:
        return
    w.history.lease_reads.append(
        {"lease": record["id"], "member": url, "call": call, "ret": time.monotonic(), "present": bool(doc.get("kvs"))}
    )


async def kept_lease_client(w: Workload, client: int) -> None:
    member = client % len(w.urls)
    cycle = 0
    while not w._stop.is_set():
        cycle += 1
        url = w.urls[member]
        try:
            record = await _grant(w, url, f"{KEPT_PREFIX}{client}-{cycle}", KEPT_TTL_S, "kept")
            for _ in range(5):
                if w._stop.is_set():
                    break
                await asyncio.sleep(0.5)
                call = time.monotonic()
                doc = await w._post(url, "/v3/lease/keepalive", {"ID": record["id"]})
                if int(doc.get("result", {}).get("TTL", 0)) > 0:
                    record["keepalives"].append([call, time.monotonic()])
                for other in list(w.urls):
                    await _read(w, record, other)
            record["revoke_call"] = time.monotonic()
            await w._post(url, "/v3/lease/revoke", {"ID": record["id"]})
            record["revoke_ret"] = time.monotonic()
            for other in list(w.urls):
                await _read(w, record, other)
            w.history.lease_cycles += 1
        except Exception:
            member = (member + 1) % len(w.urls)
            await asyncio.sleep(0.2)


async def expiring_lease_client(w: Workload) -> None:
    """A TTL-3 lease about every second, never kept alive; each key read through the
    members in turn every 0.25 s until a second after the lease may expire."""
    outstanding: list[dict[str, Any]] = []
    member, turn, count, last_grant = 0, 0, 0, 0.0
    while not w._stop.is_set():
        now = time.monotonic()
        if now - last_grant >= 1.0:
            last_grant = now
            count += 1
            try:
                outstanding.append(await _grant(w, w.urls[member], f"{EXPIRING_PREFIX}{count}", EXPIRING_TTL_S, "expiring"))
            except Exception:
                member = (member + 1) % len(w.urls)
        for record in list(outstanding):
            if time.monotonic() > record["grant_call"] + record["ttl"] + 1.0:
                outstanding.remove(record)
                continue
            turn += 1
            await _read(w, record, w.urls[turn % len(w.urls)])
        await asyncio.sleep(0.25)


async def final_lease_reads(w: Workload) -> None:
    """After healing: read the expiring leases' keys through every member until none is
    left, for at most the longest TTL + ``GONE_GRACE_S``; the last round through each
    member is recorded (``history.lease_final``: the keys still there, or None when the
    member could not be read)."""
    records = [r for r in w.history.leases if r["role"] == "expiring"]
    if not records:
        return
    keys = {r["key"] for r in records}
    deadline = time.monotonic() + max(r["ttl"] for r in records) + GONE_GRACE_S
    end = _b64(EXPIRING_PREFIX[:-1] + chr(ord(EXPIRING_PREFIX[-1]) + 1))
    rounds: dict[str, dict[str, Any]] = {}
    while True:
        for url in w.urls:
            try:
                doc = await w._post(url, "/v3/kv/range", {"key": _b64(EXPIRING_PREFIX), "range_end": end, "keys_only": True})
            except Exception:
                rounds[url] = {"member": url, "at": time.monotonic(), "present": None}
                continue
            found = sorted(k for k in (base64.b64decode(kv["key"]).decode() for kv in doc.get("kvs") or []) if k in keys)
            rounds[url] = {"member": url, "at": time.monotonic(), "present": found}
        if all(r["present"] == [] for r in rounds.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    w.history.lease_final = list(rounds.values())
