"""The hub over a real LMDB MVCC store: live notifications through the commit listener,
catch-up from history with prev_kv, compaction."""

from __future__ import annotations

from kvraft.storage.mvcc import MVCCStore
from kvraft.watch import WatchCreate, WatchHub
from kvraft.watch.mvcc import attach_hub

from .checker import Spec, check_watch


def _drain(stream):
    out = []
    while (r := stream.recv_nowait()) is not None:
        out.append(r)
    return out


def test_live_and_historical_watch_over_lmdb(tmp_path) -> None:
    store = MVCCStore(tmp_path / "kv", sync=False)
    try:
        hub, history = attach_hub(store, lambda h, cur, comp: WatchHub(h, cur, comp))
        store.put(b"foo", b"1")
        store.put(b"foo", b"2")
        store.put(b"fob", b"x")
        live = hub.open()
        live.create(WatchCreate(b"fo", b"fp", prev_kv=True))
        with store.batch():
            store.put(b"foo", b"3")
            store.delete_range(b"fob")
        store.txn(success=[_put(b"foo", b"4"), _put(b"fox", b"5")])
        got = [r for r in _drain(live) if r.events]
        assert [len(r.events) for r in got] == [1, 1, 2]
        assert got[0].events[0].prev_kv.value == b"2"
        assert got[1].events[0].type == 1 and got[1].events[0].prev_kv.value == b"x"
        # catch up from revision 2 with prev_kv, compare to the store's own history
        late = hub.open()
        late.create(WatchCreate(b"fo", b"fp", start_revision=2, prev_kv=True))
        hub.sync_once()
        replay = [r for r in _drain(late) if r.events]
        full = history.history(2, store.rev)
        check_watch(full, Spec(b"fo", b"fp", 2, prev_kv=True), replay, reached=store.rev)
        assert [e.kv.value for e in replay[0].events][:2] == [b"1", b"2"]
        # compaction cancels a watch that wants older history
        store.compact(4)
        old = hub.open()
        old.create(WatchCreate(b"foo", start_revision=3))
        hub.sync_once()
        out = _drain(old)
        assert out[-1].canceled and out[-1].compact_revision == 4
    finally:
        store.close()


def _put(key, value):
    from kvraft.storage.mvcc import PutRequest

    return PutRequest(key, value)


def test_only_watched_events_are_converted_and_the_revision_still_moves(tmp_path, monkeypatch) -> None:
    """With many writes and few watched keys (5,000 agents, 20 binds a second among 1,000
    writes), the commit listener converts (and reads prev_kv for) only the events a synced
    watcher's key or range holds; the hub's revision follows every commit all the same."""
    from kvraft.watch.mvcc import MVCCHistory

    store = MVCCStore(tmp_path / "kv", sync=False)
    try:
        hub, _history = attach_hub(store, lambda h, cur, comp: WatchHub(h, cur, comp))
        ranged, single = hub.open(), hub.open()
        ranged.create(WatchCreate(b"/a/n1/", b"/a/n10", prev_kv=True))
        single.create(WatchCreate(b"/status/n2"))
        converted: list[bytes] = []
        event = MVCCHistory._event
        monkeypatch.setattr(MVCCHistory, "_event",
                            lambda self, rev, ev, view: (converted.append(ev.kv.key), event(self, rev, ev, view))[1])
        for i in range(50):
            store.put(b"/status/n%d" % i, b"up")
        store.put(b"/a/n1/job", b"bound")
        store.put(b"/a/n1/job", b"again")
        store.put(b"/a/n2/job", b"other node")
        assert sorted(converted) == [b"/a/n1/job", b"/a/n1/job", b"/status/n2"]
        assert hub.core.current_revision == store.rev
        got = [r for r in _drain(ranged) if r.events]
        assert [(e.kv.value, e.prev_kv.value if e.prev_kv else None) for r in got for e in r.events] == [
            (b"bound", None), (b"again", b"bound")]
        assert [e.kv.key for r in _drain(single) for e in r.events] == [b"/status/n2"]
    finally:
        store.close()
