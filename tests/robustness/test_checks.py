"""The robustness checks on hand-made histories: each one must catch its violation."""

from __future__ import annotations

from pathlib import Path

from kvraft.robustness.checks import check_all, check_linearizable, check_watches
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


def test_lease_violations_fail_the_run() -> None:
    h = good_history()
    h.lease_violations.append("rb/lease/0-1: present after lease 5 was revoked")
    assert check_all(h) == ["lease: rb/lease/0-1: present after lease 5 was revoked"]
