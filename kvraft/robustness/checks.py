"""What a robustness run must satisfy, checked on its recorded ``History``.

* ``check_linearizable``: the KV history (with the final reads after healing) is
  linearizable, with the same checker as the simulator (``kvraft.testing.linearizability``);
  a delete is a put of "absent". An undecided search (budget exhausted) is a failure.
* ``check_watches``: each watcher's events are in strictly increasing (revision, key) order
  with no duplicates; watchers agree on every event they share; every acknowledged write
  appears, at the revision its response reported, in every watcher that got that far; and
  every watched event is explained by some write a client issued (no phantom events), and
  no client's write is applied twice (each write's value is its own: two PUT events of it at
  different revisions are one write applied twice, e.g. a lost proposal proposed again while
  a copy of it could still commit).
  The one allowed gap is a compacted answer: a watch asked to start at revision S and was
  canceled with ``compact_revision`` C > S, a revision some compaction request asked for
  (as etcd answers); the watcher then misses [S, C) and sees nothing below C afterwards.
  A watch served from a later revision than it asked for, without that answer, is a
  silently skipped event and fails.
* ``check_leases``: a lease's key is never gone (through any member's read, or in any
  watcher's DELETE event) before the lease could have expired: its grant, or the latest
  keepalive acknowledged before the observation began, plus the TTL (a lease's deadline on
  the primary is at least that, whatever any member's wall clock does), unless a revoke
  had been sent; it is never there after an acknowledged revoke; and an expiring lease's
  key (never kept alive) is gone through every member after healing.
  Older histories' ``lease_violations`` (noted by the clients then) are reported as they are.
* ``check_txns``: the multi-key transactions (``kvraft.robustness.txns``) pass the Elle-style
  list-append check (``kvraft.testing.elle``: every list read is a prefix of the key's final
  order, no element twice, none that no transaction appended or that an undone one did, and
  no cycle of write, read and anti-dependencies or real-time order among the committed
  transactions: strict serializability), with every member's lists after healing equal and
  taken as one more read.

Each check returns a list of problems (empty: passed), worded for a person.
"""

from __future__ import annotations

from typing import Any

from kvraft.robustness.once import check_once
from kvraft.robustness.workload import History
from kvraft.testing.elle import problems as elle_problems
from kvraft.testing.elle import txn_from_dict
from kvraft.testing.linearizability import UNKNOWN, KvInput, Operation, Verdict, check_operations

__all__ = ["check_all", "check_leases", "check_linearizable", "check_watches"]


def to_operations(ops: list[dict[str, Any]]) -> list[Operation]:
    out = []
    for op in ops:
        if op["op"] == "cas":
            inp = KvInput("cas", op["key"], op["value"], op["expect"])
        elif op["op"] == "put":
            inp = KvInput("put", op["key"], op.get("value"))
        else:
            inp = KvInput("get", op["key"])
        done = op.get("ret") is not None
        out.append(Operation(op["client"], inp, op["call"], op.get("output") if done else UNKNOWN, op.get("ret")))
    return out


def check_linearizable(history: History, *, max_steps: int = 20_000_000, timeout_s: float = 120.0) -> list[str]:
    result = check_operations(to_operations(history.ops), max_steps=max_steps, timeout_s=timeout_s)
    if result.verdict is Verdict.OK:
        return []
    return [f"linearizability {result.verdict.value}: {result.explain()}"]


def _writes(history: History) -> tuple[dict[tuple[int, str], dict[str, Any]], dict[str, set[str | None]]]:
    """(acknowledged writes by (revision, key), every value ever written per key)."""
    acked: dict[tuple[int, str], dict[str, Any]] = {}
    written: dict[str, set[str | None]] = {}
    for op in history.ops:
        if op["op"] == "get":
            continue
        written.setdefault(op["key"], set()).add(op.get("value"))
        if op.get("ret") is None:
            continue
        if op["op"] == "cas" and not op.get("output"):
            continue
        if op.get("delete") and not op.get("deleted"):
            continue  # deleted nothing: no revision, no event
        acked[(op["revision"], op["key"])] = op
    return acked, written


def check_watches(history: History) -> list[str]:
    problems: list[str] = []
    acked, written = _writes(history)
    seen: dict[tuple[int, str], tuple[str, str | None, str]] = {}
    applied_at: dict[tuple[str, str], set[int]] = {}  # (key, a client's value) -> revisions
    issued = {int(c["revision"]) for c in history.compactions}
    for name, events in sorted(history.watches.items()):
        gaps = []
        for answer in history.watch_compacted.get(name, []):
            start, compact = int(answer["start"]), int(answer["compact_revision"])
            gaps.append((start, compact))
            where = f"watch {name} from revision {start} at {answer.get('member', '?')}"
            if not answer.get("canceled"):
                problems.append(f"{where}: compact_revision {compact} without canceled")
            if compact <= start:
                problems.append(f"{where}: answered compacted at {compact}, but revision {start} was not compacted")
            if compact not in issued:
                problems.append(f"{where}: compact_revision {compact}, a revision no compaction asked for")
            below = [ev["revision"] for ev in events[int(answer["after"]):] if ev["revision"] < compact]
            if below:
                problems.append(f"{where}: events at {below[:5]} after being told revisions below {compact} were compacted")
        last: tuple[int, str] | None = None
        mine: set[tuple[int, str]] = set()
        top = 0
        for ev in events:
            at = (ev["revision"], ev["key"])
            if last is not None and at <= last:
                problems.append(f"watch {name}: event {at} after {last} (out of order or duplicated)")
            last = at
            mine.add(at)
            top = max(top, ev["revision"])
            what = (ev["type"], ev["value"], name)
            other = seen.setdefault(at, what)
            if other[:2] != what[:2]:
                problems.append(f"watch {name}: event {at} is {what[:2]} but watch {other[2]} saw {other[:2]}")
            key = ev["key"]
            if key in written and ev["type"] == "PUT" and ev["value"] not in written[key]:
                problems.append(f"watch {name}: PUT {key}={ev['value']!r} at {ev['revision']} was never written by a client")
            elif key in written and ev["type"] == "PUT":
                applied_at.setdefault((key, ev["value"]), set()).add(ev["revision"])
        for (rev, key), op in sorted(acked.items()):
            if rev <= top and (rev, key) not in mine and not any(start <= rev < compact for start, compact in gaps):
                kind = "DELETE" if op.get("delete") else "PUT"
                problems.append(f"watch {name}: missed acknowledged {kind} {key} at revision {rev} (watched up to {top})")
    for (key, value), revisions in sorted(applied_at.items()):
        if len(revisions) > 1:
            problems.append(f"PUT {key}={value!r} applied {len(revisions)} times, at revisions {sorted(revisions)[:5]}")
    for (rev, key), op in sorted(acked.items()):
        got = seen.get((rev, key))
        if got is None:
            continue
        want = ("DELETE", None) if op.get("delete") else ("PUT", op["value"])
        if got[:2] != want:
            problems.append(f"revision {rev} {key}: acknowledged {want} but watched {got[:2]}")
    return problems[:50]


def check_leases(history: History) -> list[str]:
    problems: list[str] = []
    by_key = {str(r["key"]): r for r in history.leases}
    by_id = {str(r["id"]): r for r in history.leases}

    def early(record: dict[str, Any], call: float, ret: float, where: str) -> None:
        if not record.get("attached") or call < record["attached_ret"]:
            return  # the key may not have been there yet
        if record.get("revoke_call") is not None and record["revoke_call"] <= ret:
            return  # a revoke was on its way
        renewed = [float(c) for c, r in record["keepalives"] if r <= call]
        bound = max([float(record["grant_call"]), *renewed]) + int(record["ttl"])
        if ret < bound:
            problems.append(
                f"lease {record['id']} ({record['key']}, TTL {record['ttl']}): key gone {where} "
                f"{ret - record['grant_call']:.1f} s after the grant, {bound - ret:.1f} s before the lease could expire"
            )

    for read in history.lease_reads:
        record = by_id.get(str(read["lease"]))
        if record is None:
            continue
        if not read["present"]:
            early(record, read["call"], read["ret"], f"through {read['member']}")
        elif record.get("revoke_ret") is not None and read["call"] > record["revoke_ret"]:
            problems.append(f"lease {record['id']} ({record['key']}): key present through {read['member']} after the revoke was acknowledged")
    for name, events in sorted(history.watches.items()):
        for ev in events:
            record = by_key.get(str(ev["key"]))
            if record is not None and ev["type"] == "DELETE" and "at" in ev:
                early(record, ev["at"], ev["at"], f"in watch {name}")
    for final in history.lease_final:
        if final["present"] is None:
            problems.append(f"lease: no final read through {final['member']} succeeded")
            continue
        for key in final["present"]:
            record = by_key.get(key)
            if record is not None and record["role"] == "expiring":
                late = final["at"] - (record["grant_ret"] + record["ttl"])
                problems.append(
                    f"lease {record['id']} ({key}, TTL {record['ttl']}, never kept alive): key still present through "
                    f"{final['member']} {late:.0f} s after the lease expired"
                )
    return problems[:50]


def check_txns(history: History) -> list[str]:
    if not history.txns and not history.txn_final:
        return []
    problems: list[str] = []
    finals = list(history.txn_final.items())
    final = finals[0][1] if finals else None
    for member, lists in finals[1:]:
        first, ours = finals[0]
        for key in sorted(set(lists) | set(ours)):
            if lists.get(key) != ours.get(key):
                problems.append(f"txn: after healing, {key} is {_short(lists.get(key))} at {member} "
                                f"but {_short(ours.get(key))} at {first}")
    txns = [txn_from_dict(doc) for doc in history.txns]
    problems += [f"txn: {text}" for text in elle_problems(txns, final)]
    return problems[:50]


def _short(items: list[int] | None) -> str:
    if items is None:
        return "absent"
    return f"[{len(items)} elements ... {items[-3:]}]" if len(items) > 6 else str(items)


def check_all(history: History) -> list[str]:
    problems = check_linearizable(history)
    problems += check_watches(history)
    problems += check_leases(history)
    problems += check_txns(history)
    problems += check_once(history.once, history.once_final)
    problems += [f"lease: {text}" for text in history.lease_violations]
    return problems
