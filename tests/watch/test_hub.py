"""The hub against an in-memory history: guarantees under random writes, slow streams,
late watchers and compaction (Hypothesis drives the interleaving)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvraft.watch import NO_DELETE, NO_PUT, PROGRESS_WATCH_ID, WatchCreate, WatchHub
from kvraft.watch.hub import DUPLICATE_ID_REASON, EMPTY_RANGE_REASON

from .checker import Spec, check_watch
from .model import FakeHistory

KEYS = [b"a", b"a1", b"ab", b"b", b"c"]
RANGES = [(b"a", b""), (b"a", b"b"), (b"a", b"\0"), (b"b", b"c"), (b"\0", b"\0"), (b"c", b"")]


def _drain(stream, into):
    while (r := stream.recv_nowait()) is not None:
        into.append(r)


step = st.one_of(
    st.tuples(st.just("write"), st.lists(st.tuples(st.sampled_from(["put", "put", "del"]), st.sampled_from(KEYS), st.binary(max_size=2)), min_size=1, max_size=3)),
    st.tuples(st.just("watch"), st.integers(0, 2), st.sampled_from(RANGES), st.integers(-1, 30), st.booleans(), st.sampled_from([(), (NO_PUT,), (NO_DELETE,)])),
    st.tuples(st.just("drain"), st.integers(0, 2)),
    st.tuples(st.just("sync")),
    st.tuples(st.just("compact"), st.integers(0, 30)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, max_size=60), st.integers(1, 4))
def test_guarantees_hold_for_every_watcher(steps, queue_len) -> None:
    hist = FakeHistory()
    hub = WatchHub(hist, hist.revision, queue_len_max=queue_len, max_watchers_per_sync=2)
    streams = [hub.open() for _ in range(3)]
    got = {i: [] for i in range(3)}
    specs = {}
    for s in steps:
        if s[0] == "write":
            batch = hist.write(s[1])
            if batch.events:
                hub.notify(batch)
        elif s[0] == "watch":
            _, si, (key, end), start, prev, filters = s
            start = start if start <= hist.revision else 0
            start = max(start, 0)
            wid = streams[si].create(WatchCreate(key, end, start, prev_kv=prev, filters=filters))
            spec = Spec(key, end, start or hist.revision + 1, prev, NO_PUT in filters, NO_DELETE in filters)
            specs[(si, wid)] = spec
        elif s[0] == "drain":
            _drain(streams[s[1]], got[s[1]])
        elif s[0] == "sync":
            hub.sync_once()
        else:
            rev = min(s[1], hist.revision)
            hist.compact(rev)
            hub.compact(rev)
    for _ in range(200):
        for i in range(3):
            _drain(streams[i], got[i])
        hub.sync_once()
        if not hub.core.unsynced and not hub.core.victims:
            break
    for i in range(3):
        _drain(streams[i], got[i])
    assert not hub.core.unsynced and not hub.core.victims
    for (si, wid), spec in specs.items():
        mine = [r for r in got[si] if r.watch_id == wid]
        assert mine[0].created
        cancels = [r for r in mine if r.canceled]
        if cancels:
            # fell behind compaction: what it got is a gap-free prefix, cancel comes last
            assert mine[-1] is cancels[0]
            events = [r for r in mine if r.events]
            last = check_watch(hist.batches, spec, events)
            assert cancels[0].compact_revision > max(last, spec.start_revision - 1)
            continue
        check_watch(hist.batches, spec, [r for r in mine if r.events], reached=hist.revision)


def test_slow_stream_does_not_block_others_and_catches_up() -> None:
    hist = FakeHistory()
    hub = WatchHub(hist, hist.revision, queue_len_max=2)
    slow, fast = hub.open(), hub.open()
    slow.create(WatchCreate(b"k"))
    fast.create(WatchCreate(b"k"))
    fast_got: list = []
    for i in range(50):
        hub.notify(hist.write([("put", b"k", str(i).encode())]))
        _drain(fast, fast_got)
    assert len([r for r in fast_got if r.events]) == 50
    assert len(hub.core.victims) == 1
    slow_got: list = []
    for _ in range(10):
        _drain(slow, slow_got)
        hub.sync_once()
    _drain(slow, slow_got)
    assert hub.core.is_synced(slow.watchers[0])
    check_watch(hist.batches, Spec(b"k", start_revision=2), [r for r in slow_got if r.events], reached=hist.revision)
    # after catching up it is fed directly again
    hub.notify(hist.write([("put", b"k", b"x")]))
    _drain(slow, slow_got)
    assert slow_got[-1].events[0].kv.value == b"x"


def test_compacted_start_is_cancelled_with_compact_revision() -> None:
    hist = FakeHistory()
    for i in range(5):
        hist.write([("put", b"k", bytes([i]))])
    hist.compact(4)
    hub = WatchHub(hist, hist.revision, compact_revision=4)
    s = hub.open()
    s.create(WatchCreate(b"k", start_revision=2))
    hub.sync_once()
    created, cancel = s.recv_nowait(), s.recv_nowait()
    assert created.created and not created.canceled
    assert cancel.canceled and cancel.compact_revision == 4 and cancel.revision == 0
    assert not s.watchers


def test_a_negative_start_is_from_now_until_a_compaction_then_compacted() -> None:
    """etcd reads start_revision < 0 as below every revision: with nothing compacted its
    watcher is synced from now on; after a compaction it is cancelled as compacted (kvraft
    took it as "from now" in both cases; tests/watch/test_watch_compat_etcd.py)."""
    hist = FakeHistory()
    for i in range(3):
        hist.write([("put", b"k", bytes([i]))])
    for compacted in (0, 2):
        if compacted:
            hist.compact(compacted)
        hub = WatchHub(hist, hist.revision, compact_revision=compacted)
        s = hub.open()
        s.create(WatchCreate(b"k", start_revision=-1))
        hub.sync_once()
        got: list = []
        _drain(s, got)
        assert got[0].created and not got[0].canceled
        if compacted:
            assert len(got) == 2 and got[1].canceled and got[1].compact_revision == 2
        else:
            assert len(got) == 1 and hub.core.is_synced(next(iter(s.watchers.values())))


def test_ids_duplicates_cancel_and_progress() -> None:
    hist = FakeHistory()
    hub = WatchHub(hist, hist.revision)
    s = hub.open()
    assert s.create(WatchCreate(b"foo", watch_id=7)) == 7
    assert s.create(WatchCreate(b"bar")) == 0
    s.request_progress()
    assert s.cancel(7)
    s.create(WatchCreate(b"x", watch_id=0))
    dup = s.create(WatchCreate(b"y", watch_id=1))
    out: list = []
    _drain(s, out)
    assert [(r.watch_id, r.created, r.canceled) for r in out] == [
        (7, True, False), (0, True, False), (PROGRESS_WATCH_ID, False, False), (7, False, True),
        (1, True, False), (dup, True, True),
    ]


def test_refused_creates_answer_watch_id_minus_one_as_etcd() -> None:
    """etcd's watchStream.Watch: an empty range (key >= range_end) and a duplicate id are
    refused with watch id -1; any id other than 0, negative too, is the client's own."""
    hist = FakeHistory()
    hub = WatchHub(hist, hist.revision)
    s = hub.open()
    assert s.create(WatchCreate(b"a", watch_id=-5)) == -5
    assert s.create(WatchCreate(b"b", b"a")) == PROGRESS_WATCH_ID
    assert s.create(WatchCreate(b"a", b"a", watch_id=3)) == PROGRESS_WATCH_ID
    assert s.create(WatchCreate(b"c", watch_id=-5)) == PROGRESS_WATCH_ID
    assert s.create(WatchCreate(b"", b"a")) == 0  # the empty key is the smallest key
    assert s.create(WatchCreate(b"z", b"\0")) == 1  # every key >= z
    out: list = []
    _drain(s, out)
    assert [(r.watch_id, r.created, r.canceled, r.cancel_reason) for r in out] == [
        (-5, True, False, ""),
        (-1, True, True, EMPTY_RANGE_REASON),
        (-1, True, True, EMPTY_RANGE_REASON),
        (-1, True, True, DUPLICATE_ID_REASON),
        (0, True, False, ""),
        (1, True, False, ""),
    ]
    assert sorted(s.watchers) == [-5, 0, 1]


def test_progress_waits_until_synced_and_fragments() -> None:
    hist = FakeHistory()
    for i in range(3):
        hist.write([("put", b"k", bytes([i]) * 100)])
    hub = WatchHub(hist, hist.revision, fragment_bytes=200)
    s = hub.open()
    s.create(WatchCreate(b"k", start_revision=2, progress_notify=True))
    s.request_progress()
    out: list = []
    _drain(s, out)
    assert [r.watch_id for r in out] == [0]  # progress held back: watcher unsynced
    hub.sync_once()
    _drain(s, out)
    assert out[-1].watch_id == PROGRESS_WATCH_ID and out[-1].revision == hist.revision
    assert len(out[1].events) == 3
    s.create(WatchCreate(b"big", b"bih", fragment=True, watch_id=5))
    hub.notify(hist.write([("put", b"big", b"x" * 150), ("put", b"big2", b"y")]))
    hub.notify(hist.write([("put", b"big", b"1" * 90), ("del", b"k", b""), ("put", b"big2", b"2" * 90)]))
    out.clear()
    _drain(s, out)
    frags = [(r.fragment, len(r.events)) for r in out if r.watch_id == 5 and r.events]
    assert frags == [(True, 1), (False, 1), (True, 1), (False, 1)]
    hub.send_progress()
    out.clear()
    _drain(s, out)
    assert [(r.watch_id, r.events) for r in out] == [(0, ())]


async def test_stop_as_the_sync_loop_is_woken_ends_it() -> None:
    """On 3.11 ``asyncio.wait_for`` lost a cancel that landed as the wake event was set: the
    sync loop went on and ``stop`` waited for it for ever (a member that would not shut down)."""
    import asyncio

    from kvraft.testing.stopping import stops_in_time

    hist = FakeHistory()
    hub = WatchHub(hist, hist.revision, sync_interval_s=30.0)
    hub.start()
    await asyncio.sleep(0.05)  # the sync loop is waiting to be woken
    hub.wake()  # in the same tick as stop() cancels it
    assert await stops_in_time(hub.stop(), hub._tasks), "stop() hung: the sync loop lost its cancel"
