"""Numbered writes retried through the faults: the Raft reference's scenario 13
(``exactly-once-retries``), in every robustness run.

A **once client** numbers its writes (``Kvraft-Request-Id``, ``kvraft.apply.sessions``) and
sends each until it gets an answer: many attempts get a short deadline (2-50 ms, forced RPC
timeouts: the write often commits after the client stopped waiting), and an attempt that
times out, is reset, or answers 5xx is sent again, same number, to the next member, for up
to ``RETRY_BUDGET_S``. Its writes alternate between

- a **put** of its own key ``rbonce/p<client>``: every applied put adds one to the key's
  version, so the final version counts how often the client's puts were applied;
- a **counter increment**: a linearizable read of ``rbonce/c<n>`` (shared by two clients),
  then a txn comparing its ``mod_revision`` and putting the value + 1. Without numbers, a
  retry of an increment that did commit fails its compare and the client believes it lost.

``check_once`` (after healing, ``final_once_reads`` read every key through every member):
the members agree, and for each key, with ``ok`` the writes answered (increments answered
``succeeded``) and ``unknown`` those the client gave up on, ``ok <= final <= ok + unknown``
(final: the put key's version, the counter's value). Above: a write applied twice (or a
failed compare reported for one that committed); below: an answered write lost.
``numbered=False`` (a workload flag) sends the same traffic without numbers: the check then
catches the double applies (the test that shows the check's teeth).
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvraft.robustness.workload import Workload

__all__ = ["ONCE_PREFIX", "RETRY_BUDGET_S", "check_once", "final_once_reads", "once_client"]

ONCE_PREFIX = "rbonce/"
RETRY_BUDGET_S = 20.0
"""How long a once client keeps sending one write (the member's own deadline is 7 s)."""
SHORT_DEADLINES_S = (0.002, 0.005, 0.01, 0.02, 0.05)
HEADER = "Kvraft-Request-Id"
OFF = "request ids are not available"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _value(kv: dict[str, Any] | None) -> tuple[str, int]:
    """(the value, the version) of a range's first kv; ("", 0) when absent."""
    if not kv:
        return "", 0
    return base64.b64decode(kv.get("value") or "").decode(), int(kv.get("version", 0))


async def once_client(w: Workload, client: int, rng: random.Random) -> None:
    """One client's numbered writes, one at a time, until the workload stops."""
    from kvraft.robustness.workload import Definite  # (a cycle at import time otherwise)

    member = client % len(w.urls)
    client_id = (rng.getrandbits(56) << 8) | (client + 1)  # unique in the run, nonzero
    seq = 0
    while not w._stop.is_set():
        seq += 1
        increment = seq % 2 == 0
        key = f"{ONCE_PREFIX}c{client // 2}" if increment else f"{ONCE_PREFIX}p{client}"
        record: dict[str, Any] = {"client": client, "seq": seq, "kind": "increment" if increment else "put",
                                  "key": key, "status": "info", "attempts": 0, "call": time.monotonic(), "ret": None}
        if increment:
            try:
                doc = await w._post(w.urls[member], "/v3/kv/range", {"key": _b64(key)})
            except Exception:  # (nothing written: try the next member)
                member = (member + 1) % len(w.urls)
                await asyncio.sleep(0.05)
                continue
            kvs = doc.get("kvs") or [None]
            value, _version = _value(kvs[0])
            mod = int(kvs[0].get("mod_revision", 0)) if kvs[0] else 0
            path = "/v3/kv/txn"
            body: dict[str, Any] = {
                "compare": [{"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod)}],
                "success": [{"request_put": {"key": _b64(key), "value": _b64(str(int(value or 0) + 1))}}],
            }
        else:
            path, body = "/v3/kv/put", {"key": _b64(key), "value": _b64(str(seq))}
        headers = {HEADER: f"{client_id:x}:{seq}:{seq}"} if w.once_numbered else {}
        sent = False  # a copy may have been proposed
        deadline = time.monotonic() + RETRY_BUDGET_S
        while time.monotonic() < deadline:
            record["attempts"] += 1
            timeout = rng.choice(SHORT_DEADLINES_S) if rng.random() < 0.3 else 3.0
            try:
                doc = await w._post(w.urls[member], path, body, timeout_s=timeout, headers=headers)
            except Definite:  # never reached the member
                pass
            except Exception as exc:  # timeout, reset, 5xx, or a refusal before proposing
                text = f"{type(exc).__name__}: {exc}"
                if OFF not in text:
                    sent = True
                record["error"] = text[:200]
            else:
                record["status"], record["ret"] = "ok", time.monotonic()
                record["revision"] = int(doc.get("header", {}).get("revision", 0))
                if increment:
                    record["succeeded"] = bool(doc.get("succeeded", False))
                break
            member = (member + 1) % len(w.urls)
            await asyncio.sleep(0.02)
        else:
            if not sent:
                record["status"] = "fail"
        w.history.once.append(record)
        await asyncio.sleep(rng.uniform(0, 0.01))


async def final_once_reads(w: Workload) -> None:
    """After healing: every once key through every member, linearizable
    (``history.once_final``: member -> key -> [value, version])."""
    end = ONCE_PREFIX[:-1] + chr(ord(ONCE_PREFIX[-1]) + 1)
    finals: dict[str, dict[str, list[Any]]] = {}
    for url in w.urls:
        for _ in range(20):
            try:
                doc = await w._post(url, "/v3/kv/range", {"key": _b64(ONCE_PREFIX), "range_end": _b64(end)})
            except Exception:
                await asyncio.sleep(0.5)
                continue
            finals[url] = {base64.b64decode(kv["key"]).decode(): list(_value(kv)) for kv in doc.get("kvs") or []}
            break
    w.history.once_final = finals


def check_once(once: list[dict[str, Any]], finals: dict[str, dict[str, list[Any]]]) -> list[str]:
    """``ok <= final <= ok + unknown`` per key (module docstring); the members agree."""
    if not once:
        return []
    problems: list[str] = []
    members = list(finals.items())
    if not members:
        return ["once: no member could be read after healing"]
    first, final = members[0]
    for member, keys in members[1:]:
        if keys != final:
            problems.append(f"once: after healing the members differ: {member} {keys} but {first} {final}")
    bounds: dict[str, list[int]] = {}
    for record in once:
        low_high = bounds.setdefault(record["key"], [0, 0])
        if record["status"] == "ok" and (record["kind"] == "put" or record.get("succeeded")):
            low_high[0] += 1
            low_high[1] += 1
        elif record["status"] == "info":
            low_high[1] += 1
    for key, (low, high) in sorted(bounds.items()):
        value, version = final.get(key, ["", 0])
        got = version if key.startswith(ONCE_PREFIX + "p") else int(value or 0)
        what = "version" if key.startswith(ONCE_PREFIX + "p") else "value"
        if got > high:
            problems.append(f"once: {key} {what} {got} but only {low} writes answered and {high - low} unknown: "
                            "a write applied twice (or a committed increment answered as failed)")
        elif got < low:
            problems.append(f"once: {key} {what} {got} but {low} writes were answered: an answered write was lost")
    return problems
