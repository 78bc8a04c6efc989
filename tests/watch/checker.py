"""etcd's watch guarantees, checked against the full history one watcher should have seen.

``check_watch(history, spec, responses)``: ``history`` is every revision (ascending) with
all its events; ``spec`` is what was asked; ``responses`` what arrived, in order. Checks
(etcd robustness ``validate/watch.go`` names): ordered, unique, atomic (a revision's events
arrive in one response, or in consecutive fragments of one), reliable (no gaps: every
wanted event from the start revision through the last revision the watcher is known to
have reached), prev_kv and filters honoured. Returns the last revision reached.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvraft.watch import EventType, RevisionEvents


@dataclass(frozen=True)
class Spec:
    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False

    def holds(self, key: bytes) -> bool:
        if self.range_end == b"":
            return key == self.key
        if self.range_end == b"\0":
            return key >= self.key
        return self.key <= key < self.range_end


def _wanted(spec: Spec, history: list[RevisionEvents], lo: int, hi: int) -> list[tuple]:
    out = []
    for batch in history:
        if not lo <= batch.revision <= hi:
            continue
        for ev in batch.events:
            if not spec.holds(ev.kv.key):
                continue
            if (ev.type == EventType.PUT and spec.no_put) or (ev.type == EventType.DELETE and spec.no_delete):
                continue
            out.append((batch.revision, int(ev.type), ev.kv.key, ev.kv.value if ev.type == EventType.PUT else b""))
    return out


def check_watch(history: list[RevisionEvents], spec: Spec, responses: list, reached: int | None = None) -> int:
    """``responses``: objects with ``events`` (each with type, kv, prev_kv), ``revision``
    (header) and ``fragment``. ``reached``: a revision the watcher is known to be synced
    to (e.g. from a progress response); defaults to the last event's revision."""
    got: list[tuple] = []
    seen_in: dict[int, int] = {}
    prev_rev = 0
    group = 0
    by_key_rev = {}
    for batch in history:
        for ev in batch.events:
            by_key_rev[(batch.revision, ev.kv.key)] = ev
    for r in responses:
        for ev in r.events:
            rev = ev.kv.mod_revision
            assert rev >= prev_rev, f"ordered: revision {rev} after {prev_rev}"
            if rev in seen_in:
                assert seen_in[rev] == group, f"atomic: revision {rev} split across responses"
            seen_in[rev] = group
            prev_rev = rev
            got.append((rev, int(ev.type), ev.kv.key, ev.kv.value if ev.type == EventType.PUT else b""))
            truth = by_key_rev[(rev, ev.kv.key)]
            if spec.prev_kv:
                want_prev = truth.prev_kv
                if want_prev is None:
                    assert ev.prev_kv is None or not ev.prev_kv.key, f"prev_kv: unexpected at {rev}"
                else:
                    assert ev.prev_kv is not None and ev.prev_kv.value == want_prev.value and (
                        ev.prev_kv.mod_revision == want_prev.mod_revision
                    ), f"prev_kv wrong at {rev} {ev.kv.key!r}"
            else:
                assert ev.prev_kv is None, "prev_kv sent though not asked for"
        if not getattr(r, "fragment", False):
            group += 1
    assert len(got) == len(set(got)), "unique: duplicate events"
    last = reached if reached is not None else (got[-1][0] if got else 0)
    lo = spec.start_revision if spec.start_revision else (got[0][0] if got else last + 1)
    want = _wanted(spec, history, lo, last)
    assert got == want, f"reliable: got {got[:5]}... ({len(got)}) want {want[:5]}... ({len(want)})"
    return last
