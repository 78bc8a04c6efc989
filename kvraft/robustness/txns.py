"""Multi-key transactions of a robustness run, recorded for an Elle-style check
(``kvraft.testing.elle``; ``checks.check_txns``).

Each key under ``TXN_PREFIX`` holds a list of integers (``"3,17,42"``; empty or absent: the
empty list). A **txn client** (pinned to a member, failing over to the next one when it
stops answering, as the KV clients do) runs transactions of one to three micro-ops over
distinct keys: a read of a key's list, or an append of a new element (unique across the run)
to it; the reads come first, then the appends. A transaction that appends is two requests:

1. a read-only ``/v3/kv/txn`` of the keys it appends to (serializable: a stale answer only
   makes step 2 fail), giving each key's list and ``mod_revision``;
2. ``/v3/kv/txn`` comparing each appended key's ``mod_revision`` with what step 1 saw (0 for
   a key not there), and on success ranging the read keys and putting each appended key's
   list with the new element at its end.

``succeeded`` true: the transaction committed (``ok``, with the lists its ranges returned);
false: it did nothing (``fail``); a timeout, reset or 5xx: outcome unknown (``info``). One
that could not connect is ``fail`` (it never reached a member). A transaction of reads only
is one request (no compare). So every committed transaction is a strictly serializable step
on lists, and the checker can infer the version order of each key and the dependencies
between transactions from what was read; any cycle among them, or a list that is not a
prefix of a later one, is a bug.

``final_txn_reads`` (after healing) reads every key through every member (linearizable); the
members must agree, and the lists are one more observation for the checker.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvraft.robustness.workload import Workload

__all__ = ["TXN_KEYS", "TXN_PREFIX", "final_txn_reads", "parse_list", "txn_client"]

TXN_PREFIX = "rbtxn/"
"""Outside the KV workload's watched prefix: the txn traffic does not swell the watch streams."""
TXN_KEYS = 6


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def parse_list(value_b64: str | None) -> list[int]:
    """A key's list from its base64 value (absent or empty: [])."""
    text = base64.b64decode(value_b64).decode() if value_b64 else ""
    return [int(part) for part in text.split(",")] if text else []


def _range(key: str, serializable: bool = False) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key), "serializable": serializable}}


def _observed(response: dict[str, Any]) -> tuple[list[int], int]:
    """(the list, its mod_revision; 0 when absent) from one range response of a txn."""
    kvs = response.get("response_range", {}).get("kvs") or []
    if not kvs:
        return [], 0
    return parse_list(kvs[0].get("value")), int(kvs[0].get("mod_revision", 0))


async def txn_client(w: Workload, client: int, rng: random.Random, reader: bool = False) -> None:
    """One client's transactions until the workload stops. A ``reader`` (only in the
    deliberately unsafe ``stale_reads`` workload) reads and never appends, and stays on its
    member whatever happens: one pinned to a member cut off from the rest serves stale lists."""
    member = client % len(w.urls)
    keys = [f"{TXN_PREFIX}k{i}" for i in range(TXN_KEYS)]
    while not w._stop.is_set():
        chosen = rng.sample(keys, rng.randint(1, 3))
        appends = [] if reader else [k for k in chosen if rng.random() < 0.5]
        reads = [k for k in chosen if k not in appends]
        w._element += 1
        first = w._element
        w._element += len(appends)
        record: dict[str, Any] = {
            "id": first, "client": client, "member": member, "call": time.monotonic(), "ret": None,
            "status": "info",
            "mops": [["r", k, None] for k in reads] + [["append", k, first + i] for i, k in enumerate(appends)],
        }  # fmt: skip
        url = w.urls[member]
        ok = await _run_txn(w, url, record, reads, appends)
        w.history.txns.append(record)
        if not ok:
            member = member if reader else (member + 1) % len(w.urls)
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(0, 0.01))


async def _run_txn(w: Workload, url: str, record: dict[str, Any], reads: list[str], appends: list[str]) -> bool:
    """Run one transaction and fill in ``record``; False when the member did not answer."""
    from kvraft.robustness.workload import Definite  # (a cycle at import time otherwise)

    sent = False  # (until the transaction itself is sent, a failure leaves it undone)
    try:
        compare: list[dict[str, Any]] = []
        puts: list[dict[str, Any]] = []
        if appends:
            seen = await w._post(url, "/v3/kv/txn", {"success": [_range(k, serializable=True) for k in appends]})
            for (_f, key, element), response in zip(record["mops"][len(reads):], seen.get("responses", []), strict=True):
                old, mod = _observed(response)
                compare.append({"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod)})
                value = ",".join(str(e) for e in [*old, element])
                puts.append({"request_put": {"key": _b64(key), "value": _b64(value)}})
            record["call"] = time.monotonic()  # (the transaction itself starts here)
        sent = True
        # (serializable reads only in the deliberately unsafe workload, ``stale_reads``: a
        # read-only txn of them is then served from the member's own store)
        ranges = [_range(k, serializable=w.stale_reads and not appends) for k in reads]
        doc = await w._post(url, "/v3/kv/txn", {"compare": compare, "success": ranges + puts})
        record["ret"] = time.monotonic()
        if compare and not doc.get("succeeded", False):
            record["status"] = "fail"
            return True
        record["status"] = "ok"
        responses = doc.get("responses", [])
        for mop, response in zip(record["mops"][: len(reads)], responses[: len(reads)], strict=True):
            mop[2] = _observed(response)[0]
        record["revision"] = int(doc.get("header", {}).get("revision", 0))
        return True
    except Definite:
        record["status"], record["ret"] = "fail", time.monotonic()
        return False
    except Exception as exc:  # timeout, reset, 5xx: outcome unknown (once sent)
        record["error"] = f"{type(exc).__name__}: {exc}"[:200]
        if not sent:
            record["status"], record["ret"] = "fail", time.monotonic()
        return False


async def final_txn_reads(w: Workload, rounds: int = 5) -> None:
    """After healing: every txn key through every member, linearizable (``history.txn_final``:
    member -> key -> list; a member that could not be read is left out). Read again, up to
    ``rounds`` times, while the members differ: a transaction whose client gave up may still
    commit between two members' reads (a member proposes it again until its deadline), which
    is no divergence; a real one stays."""
    keys = [f"{TXN_PREFIX}k{i}" for i in range(TXN_KEYS)]
    for _ in range(rounds):
        finals: dict[str, dict[str, list[int]]] = {}
        for url in w.urls:
            for _ in range(20):
                try:
                    doc = await w._post(url, "/v3/kv/txn", {"success": [_range(k) for k in keys]})
                except Exception:
                    await asyncio.sleep(0.5)
                    continue
                finals[url] = {k: _observed(r)[0] for k, r in zip(keys, doc.get("responses", []), strict=True)}
                break
        w.history.txn_final = finals
        if len({repr(lists) for lists in finals.values()}) <= 1:
            return
        await asyncio.sleep(1.0)
