"""The robustness checks on hand-made histories: each one must catch its violation."""

from __future__ import annotations

from pathlib import Path

from kvraft.robustness.checks import check_all, check_leases, check_linearizable, check_watches
from kvraft.robustness.workload import History


def op(client: int, kind: str, key: str, call: float, ret: float | None, *, value: str | None = None,
       output: object = None, revision: int = 0, **extra: object) -> dict[str, object]:
    doc: dict[str, object] = {"op": kind, "key": key, "client": client, "member": 0, "call": call, "ret": ret,
                              "output": output, "revision": revision, "value": value}
    doc.update(extra)
    return doc


def good_history() -> History:
    h = History()
    h.ops = [
        op(1, "put", "rb/k0", 0, 1, value="a", revision=2),
        op(2, "get", "rb/k0", 2, 3, output="a", revision=2),
        op(1, "cas", "rb/k0", 4, 5, value="b", expect="a", output=True, revision=3),
        op(2, "put", "rb/k0", 6, 7, value=None, delete=True, deleted=1, revision=4),
        op(3, "get", "rb/k0", 8, 9, output=None, revision=4),
        op(3, "put", "rb/k1", 8, None, value="lost?"),  # outcome unknown
    ]
    events = [
        {"type": "PUT", "key": "rb/k0", "value": "a", "revision": 2},
        {"type": "PUT", "key": "rb/k0", "value": "b", "revision": 3},
        {"type": "DELETE", "key": "rb/k0", "value": None, "revision": 4},
    ]
    h.watches = {"w0": list(events), "w1": list(events[:2])}
    return h


def test_a_good_history_passes(tmp_path: Path) -> None:
    h = good_history()
    assert check_all(h) == []
    h.dump(str(tmp_path / "history.jsonl"))
    assert check_all(History.load(str(tmp_path / "history.jsonl"))) == []


def test_a_lost_acknowledged_write_is_not_linearizable() -> None:
    h = good_history()
    h.ops.append(op(4, "put", "rb/k2", 10, 11, value="x", revision=5))
    h.ops.append(op(5, "get", "rb/k2", 12, 13, output=None, revision=5))
    problems = check_linearizable(h)
    assert problems and "illegal" in problems[0] and "rb/k2" in problems[0]


def test_a_stale_read_is_not_linearizable() -> None:
    h = good_history()
    h.ops.append(op(9, "get", "rb/k0", 10, 11, output="a"))  # after the delete completed
    assert check_linearizable(h)


def test_watch_gap_duplicate_and_phantom_are_caught() -> None:
    h = good_history()
    h.watches["w1"] = [h.watches["w0"][0], h.watches["w0"][2]]  # skipped revision 3
    assert any("missed acknowledged PUT rb/k0 at revision 3" in p for p in check_watches(h))
    h = good_history()
    h.watches["w1"] = [h.watches["w0"][0], h.watches["w0"][0]]
    assert any("out of order or duplicated" in p for p in check_watches(h))
    h = good_history()
    h.watches["w1"] = [{"type": "PUT", "key": "rb/k0", "value": "zzz", "revision": 2}]
    problems = check_watches(h)
    assert any("never written" in p for p in problems) and any("but watch w0 saw" in p for p in problems)


def test_a_write_applied_twice_is_caught() -> None:
    """Each client write has a value of its own: seen at two revisions (by one watcher or
    two), it was applied twice (a lost proposal proposed again while a copy could commit)."""
    h = good_history()
    h.watches["w1"] = h.watches["w1"] + [{"type": "PUT", "key": "rb/k0", "value": "a", "revision": 5}]
    problems = check_watches(h)
    assert any("applied 2 times" in p and "[2, 5]" in p for p in problems), problems
    assert check_watches(good_history()) == []


def test_lease_violations_fail_the_run() -> None:
    h = good_history()
    h.lease_violations.append("rb/lease/0-1: present after lease 5 was revoked")
    assert check_all(h) == ["lease: rb/lease/0-1: present after lease 5 was revoked"]


def compacted_history(**answer: object) -> History:
    """w1 saw revision 2, was away, resumed from 3 after revision 4 was compacted: etcd
    answers canceled with compact_revision 4, and the watch goes on from 4."""
    h = good_history()
    h.compactions = [{"revision": 4, "ok": True}]
    h.watches["w1"] = [h.watches["w0"][0], h.watches["w0"][2]]
    doc: dict[str, object] = {"start": 3, "compact_revision": 4, "canceled": True, "after": 1, "member": "m1"}
    doc.update(answer)
    h.watch_compacted = {"w1": [doc]}
    return h


def test_a_compacted_answer_explains_the_gap_it_announces(tmp_path: Path) -> None:
    h = compacted_history()
    assert check_all(h) == []
    h.dump(str(tmp_path / "history.jsonl"))
    again = History.load(str(tmp_path / "history.jsonl"))
    assert again.compactions == h.compactions and again.watch_compacted == h.watch_compacted
    assert check_all(again) == []


def test_a_silently_skipped_revision_is_caught_even_after_a_compaction() -> None:
    h = compacted_history()
    h.watch_compacted = {}  # the watch went on from 4 without saying 3 was compacted
    assert any("missed acknowledged PUT rb/k0 at revision 3" in p for p in check_watches(h))


def test_bad_compacted_answers_are_caught() -> None:
    problems = check_watches(compacted_history(canceled=False))
    assert any("without canceled" in p for p in problems)
    problems = check_watches(compacted_history(start=4, compact_revision=4))  # 4 was still there
    assert any("was not compacted" in p for p in problems)
    problems = check_watches(compacted_history(compact_revision=5))
    assert any("no compaction asked for" in p for p in problems)
    problems = check_watches(compacted_history(after=0))  # revision 2 arrived after the answer
    assert any("events at [2] after being told revisions below 4 were compacted" in p for p in problems)


def lease_history() -> History:
    """An expiring lease (TTL 3, granted at 10) read at 11 and 14 (gone), expired in a
    watch at 13.5; a kept lease (TTL 10, granted at 20) kept alive at 25, read through two
    members at 26 and 33, revoked at 34 and read again (gone)."""
    h = History()
    expiring = {"id": "1", "key": "rb/exp/1", "role": "expiring", "ttl": 3, "grant_call": 10.0, "grant_ret": 10.1,
                "attached": True, "attached_ret": 10.2, "keepalives": [], "revoke_call": None, "revoke_ret": None}
    kept = {"id": "2", "key": "rb/lease/0-1", "role": "kept", "ttl": 10, "grant_call": 20.0, "grant_ret": 20.1,
            "attached": True, "attached_ret": 20.2, "keepalives": [[25.0, 25.1]], "revoke_call": 34.0, "revoke_ret": 34.1}
    h.leases = [expiring, kept]
    h.lease_reads = [
        {"lease": "1", "member": "m0", "call": 11.0, "ret": 11.1, "present": True},
        {"lease": "1", "member": "m1", "call": 14.0, "ret": 14.1, "present": False},
        {"lease": "2", "member": "m0", "call": 26.0, "ret": 26.1, "present": True},
        {"lease": "2", "member": "m1", "call": 33.0, "ret": 33.1, "present": True},
        {"lease": "2", "member": "m1", "call": 34.2, "ret": 34.3, "present": False},
    ]
    h.watches = {"w0": [{"type": "DELETE", "key": "rb/exp/1", "value": None, "revision": 9, "at": 13.5}]}
    h.lease_final = [{"member": "m0", "at": 40.0, "present": []}, {"member": "m1", "at": 40.0, "present": []}]
    return h


def test_a_good_lease_history_passes(tmp_path: Path) -> None:
    h = lease_history()
    assert check_leases(h) == []
    h.dump(str(tmp_path / "history.jsonl"))
    again = History.load(str(tmp_path / "history.jsonl"))
    assert (again.leases, again.lease_reads, again.lease_final) == (h.leases, h.lease_reads, h.lease_final)
    assert check_all(again) == []


def test_a_lease_that_ends_early_is_caught() -> None:
    h = lease_history()
    h.lease_reads.append({"lease": "1", "member": "m2", "call": 12.0, "ret": 12.1, "present": False})
    assert any("key gone through m2 2.1 s after the grant, 0.9 s before" in p for p in check_leases(h))
    h = lease_history()  # gone 7 s after an acknowledged keepalive of a TTL-10 lease
    h.lease_reads.append({"lease": "2", "member": "m2", "call": 32.0, "ret": 32.1, "present": False})
    assert any("lease 2 (rb/lease/0-1, TTL 10): key gone through m2" in p for p in check_leases(h))
    h = lease_history()  # an expiry event that came too soon, in any member's watch
    h.watches["w1"] = [{"type": "DELETE", "key": "rb/exp/1", "value": None, "revision": 9, "at": 11.5}]
    assert any("key gone in watch w1" in p for p in check_leases(h))


def test_a_revoked_lease_that_stays_and_an_expired_one_that_stays_are_caught() -> None:
    h = lease_history()
    h.lease_reads.append({"lease": "2", "member": "m2", "call": 34.5, "ret": 34.6, "present": True})
    assert any("key present through m2 after the revoke was acknowledged" in p for p in check_leases(h))
    h = lease_history()
    h.lease_final[1] = {"member": "m1", "at": 40.0, "present": ["rb/exp/1"]}
    assert any("never kept alive): key still present through m1 27 s after the lease expired" in p for p in check_leases(h))
    h = lease_history()
    h.lease_final[1] = {"member": "m1", "at": 40.0, "present": None}
    assert check_leases(h) == ["lease: no final read through m1 succeeded"]


def test_txn_lists_that_differ_between_members_after_healing_are_caught() -> None:
    from kvraft.robustness.checks import check_txns

    h = good_history()
    h.txns = [{"id": 1, "client": 0, "call": 0.0, "ret": 1.0, "status": "ok", "mops": [["append", "rbtxn/k0", 1]]}]
    h.txn_final = {"m0": {"rbtxn/k0": [1]}, "m1": {"rbtxn/k0": [1]}}
    assert check_txns(h) == []
    h.txn_final["m1"] = {"rbtxn/k0": []}
    assert any("after healing, rbtxn/k0 is [] at m1 but [1] at m0" in p for p in check_txns(h)), check_txns(h)


def _once(client: int, seq: int, kind: str, key: str, status: str, succeeded: bool | None = None) -> dict[str, object]:
    doc: dict[str, object] = {"client": client, "seq": seq, "kind": kind, "key": key, "status": status, "attempts": 2}
    if succeeded is not None:
        doc["succeeded"] = succeeded
    return doc


def test_numbered_writes_applied_twice_or_lost_are_caught() -> None:
    from kvraft.robustness.once import check_once

    once = [
        _once(0, 1, "put", "rbonce/p0", "ok"),
        _once(0, 2, "increment", "rbonce/c0", "ok", succeeded=True),
        _once(0, 3, "put", "rbonce/p0", "info"),  # gave up: may or may not have applied
        _once(1, 2, "increment", "rbonce/c0", "ok", succeeded=False),  # lost its race: no increment
        _once(0, 4, "increment", "rbonce/c0", "fail"),  # never sent
    ]
    good = {"m0": {"rbonce/p0": ["3", 2], "rbonce/c0": ["1", 1]}}
    assert check_once(once, good) == []
    assert check_once(once, {"m0": {"rbonce/p0": ["1", 1], "rbonce/c0": ["1", 1]}}) == []  # the unknown did not apply
    twice = check_once(once, {"m0": {"rbonce/p0": ["3", 3], "rbonce/c0": ["1", 1]}})
    assert twice and "rbonce/p0 version 3 but only 1 writes answered and 1 unknown" in twice[0], twice
    counted = check_once(once, {"m0": {"rbonce/p0": ["3", 2], "rbonce/c0": ["2", 2]}})
    assert counted and "rbonce/c0 value 2" in counted[0] and "applied twice" in counted[0], counted
    lost = check_once(once, {"m0": {"rbonce/p0": ["3", 2]}})  # the counter absent: an answered increment lost
    assert lost and "rbonce/c0 value 0 but 1 writes were answered" in lost[0], lost
    differ = check_once(once, {**good, "m1": {"rbonce/p0": ["3", 2], "rbonce/c0": ["0", 2]}})
    assert differ and "members differ" in differ[0], differ
    assert check_once([], {}) == []
    assert check_once(once, {}) == ["once: no member could be read after healing"]


def test_writes_acknowledged_under_the_nospace_alarm_are_found() -> None:
    """nospace-alarm's check: puts, compare-and-swaps, numbered writes and appending txns
    acknowledged inside the alarm's window; deletes (allowed under the alarm), reads, writes
    of unknown outcome and those outside the window are not."""
    from kvraft.robustness.scenarios import _acked_writes

    h = History()
    h.ops = [
        op(1, "put", "rb/k0", 9, 10.5, value="a"),  # inside
        op(1, "cas", "rb/k1", 11, 11.5, value="b", expect=None, output=False),  # inside, even if it did not succeed
        op(2, "put", "rb/k2", 10, 11, value=None, delete=True, deleted=1),  # a delete: allowed
        op(2, "get", "rb/k0", 10, 11, output="a"),
        op(3, "put", "rb/k3", 10, None, value="c"),  # unknown
        op(3, "put", "rb/k4", 1, 2, value="d"),  # before
        op(3, "put", "rb/k5", 20, 21, value="e"),  # after
    ]
    h.once = [{"key": "rbonce/p1", "status": "ok", "ret": 12.0}, {"key": "rbonce/p2", "status": "info", "ret": None},
              {"key": "rbonce/p3", "status": "ok", "ret": 30.0}]
    h.txns = [{"status": "ok", "ret": 13.0, "mops": [["r", "rbtxn/a", [1]]]},  # read-only: allowed
              {"status": "ok", "ret": 14.0, "mops": [["append", "rbtxn/b", 7]]},
              {"status": "fail", "ret": 14.0, "mops": [["append", "rbtxn/c", 8]]}]
    got = _acked_writes(h, 10.0, 15.0)
    assert got == ["put rb/k0", "cas rb/k1", "once rbonce/p1", "txn [['append', 'rbtxn/b', 7]]"]
    assert _acked_writes(h, 100.0, 200.0) == []


def test_a_definite_refusal_is_a_4xx_but_a_cut_short_request() -> None:
    from kvraft.robustness.workload import refused

    assert refused(429) and refused(400) and refused(403) and refused(404)
    assert not refused(200) and not refused(408) and not refused(499) and not refused(500) and not refused(503)
