"""Watch over HTTP against a real 3-member cluster: etcd's stream framing, compaction,
filters, fragments, WebSocket, and the guarantees while the leader is killed and the watch
resumes on another member."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from types import SimpleNamespace

import aiohttp
import msgpack
import pytest

from kvraft.watch import RevisionEvents

from .checker import Spec, check_watch
from .cluster_helpers import b64, call, call_any, start_cluster, unb64, watch


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("watch"), extra=[
        "--max-request-bytes", "32768", "--experimental-watch-progress-notify-interval", "500ms"])
    yield c
    c.stop()


async def _collect(url, requests, count, token=None, timeout_s=30.0):
    out = []
    async with aiohttp.ClientSession() as session:
        async def run():
            async for result in watch(session, url, requests, token):
                out.append(result)
                if len(out) >= count:
                    return
        await asyncio.wait_for(run(), timeout_s)
    return out


async def test_several_requests_in_one_stream(cluster) -> None:
    url = cluster.url(cluster.wait_leader())
    reqs = [
        {"create_request": {"key": b64("foo"), "watch_id": "7"}},
        {"create_request": {"key": b64("bar")}},
        {"progress_request": {}},
        {"cancel_request": {"watch_id": "7"}},
    ]
    got = await _collect(url, reqs, 4)
    shapes = [(r.get("watch_id"), r.get("created"), r.get("canceled")) for r in got]
    assert shapes == [("7", True, None), (None, True, None), ("-1", None, None), ("7", None, True)]
    assert all("revision" in r["header"] for r in got)


async def test_history_filters_prev_kv_and_compaction(cluster) -> None:
    url = cluster.url(cluster.wait_leader())
    status, first = call(url, "/v3/kv/put", {"key": b64("h/a"), "value": b64("1")})
    start = int(first["header"]["revision"])
    call(url, "/v3/kv/put", {"key": b64("h/a"), "value": b64("2")})
    call(url, "/v3/kv/deleterange", {"key": b64("h/a")})
    call(url, "/v3/kv/txn", {"success": [{"request_put": {"key": b64("h/b"), "value": b64("3")}},
                                         {"request_put": {"key": b64("h/c"), "value": b64("4")}}]})
    reqs = [{"create_request": {"key": b64("h/"), "range_end": b64("h0"), "start_revision": str(start),
                                "filters": ["NODELETE"], "prev_kv": True}}]
    got = await _collect(url, reqs, 2)
    events = got[1]["events"]
    assert [unb64(e["kv"]["value"]) for e in events] == [b"1", b"2", b"3", b"4"]
    assert "type" not in events[0] and unb64(events[1]["prev_kv"]["value"]) == b"1"
    # a txn's two puts share one revision
    assert events[2]["kv"]["mod_revision"] == events[3]["kv"]["mod_revision"]
    # compaction: a watch from before it is created, then cancelled with compact_revision
    status, doc = call(url, "/v3/kv/compaction", {"revision": str(start + 1), "physical": True})
    assert status == 200, doc
    got = await _collect(url, [{"create_request": {"key": b64("h/a"), "start_revision": str(start)}}], 2)
    assert got[0]["created"] is True
    assert got[1]["canceled"] is True and got[1]["compact_revision"] == str(start + 1)
    assert "revision" not in got[1]["header"]


async def test_fragment_splits_large_revisions(cluster) -> None:
    url = cluster.url(cluster.wait_leader())
    big = [b64(bytes([65 + i]) * 9000) for i in range(3)]
    call(url, "/v3/kv/txn", {"success": [{"request_put": {"key": b64(f"f/{i}"), "value": big[i]}} for i in range(3)]})
    status, doc = call(url, "/v3/kv/range", {"key": b64("f/0")})
    rev = int(doc["header"]["revision"])
    call(url, "/v3/kv/txn", {"success": [{"request_put": {"key": b64(f"f/{i}"), "value": big[2 - i]}} for i in range(3)]})
    reqs = [{"create_request": {"key": b64("f/"), "range_end": b64("f0"), "start_revision": str(rev + 1),
                                "prev_kv": True, "fragment": True}}]
    async with aiohttp.ClientSession() as session:
        got = []

        async def run():
            async for result in watch(session, url, reqs):
                got.append(result)
                if len(got) > 1 and not result.get("fragment"):
                    return
        await asyncio.wait_for(run(), 30)
    pieces = got[1:]
    assert len(pieces) > 1 and all(p.get("fragment") for p in pieces[:-1])
    events = [e for p in pieces for e in p["events"]]
    assert [unb64(e["kv"]["key"]) for e in events] == [b"f/0", b"f/1", b"f/2"]
    assert all(len(json.dumps(p)) < 32768 + 1024 for p in pieces)


async def test_progress_notify_on_an_idle_watch(cluster) -> None:
    url = cluster.url(cluster.wait_leader())
    reqs = [{"create_request": {"key": b64("idle/k"), "progress_notify": True, "watch_id": "3"}}]
    got = await _collect(url, reqs, 3, timeout_s=60)
    assert got[0]["created"] is True
    for progress in got[1:]:
        assert progress["watch_id"] == "3" and "events" not in progress and "revision" in progress["header"]


async def test_websocket_watch(cluster) -> None:
    url = cluster.url(cluster.wait_leader())
    async with aiohttp.ClientSession() as session, session.ws_connect(url.replace("http", "ws") + "/v3/watch") as ws:
        await ws.send_str(json.dumps({"create_request": {"key": b64("ws/k")}}))
        created = json.loads((await ws.receive(timeout=30)).data)["result"]
        assert created["created"] is True
        await asyncio.to_thread(call, url, "/v3/kv/put", {"key": b64("ws/k"), "value": b64("v")})
        event = json.loads((await ws.receive(timeout=30)).data)["result"]
        assert unb64(event["events"][0]["kv"]["value"]) == b"v"


def _ns(kv):
    if kv is None:
        return None
    return SimpleNamespace(key=unb64(kv["key"]), value=unb64(kv.get("value", "")),
                           mod_revision=int(kv.get("mod_revision", 0)))


def _as_responses(results):
    out = []
    for r in results:
        events = [SimpleNamespace(type=1 if e.get("type") == "DELETE" else 0, kv=_ns(e["kv"]), prev_kv=_ns(e.get("prev_kv")))
                  for e in r.get("events", [])]
        out.append(SimpleNamespace(events=events, fragment=r.get("fragment", False), revision=int(r["header"].get("revision", 0))))
    return out


def _writer(cluster, acked, count):
    for i in range(count):
        if i % 7 == 3:
            doc = {"success": [{"request_put": {"key": b64(f"g/t{i % 3}a"), "value": b64(f"t{i}")}},
                               {"request_put": {"key": b64(f"g/t{i % 3}b"), "value": b64(f"t{i}")}}]}
            status, body = call_any(cluster, "/v3/kv/txn", doc)
            keys = [f"g/t{i % 3}a", f"g/t{i % 3}b"]
        elif i % 11 == 5:
            status, body = call_any(cluster, "/v3/kv/deleterange", {"key": b64(f"g/k{i % 5}")})
            keys = []
        else:
            status, body = call_any(cluster, "/v3/kv/put", {"key": b64(f"g/k{i % 5}"), "value": b64(f"v{i}")})
            keys = [f"g/k{i % 5}"]
        if status == 200:
            acked.append((int(body["header"]["revision"]), keys, f"t{i}" if len(keys) == 2 else f"v{i}"))


async def _follow(cluster, first_url, start, results, state):
    """Watch g/ from ``start``; on a broken stream resume on another member from the
    revision after the last one seen."""
    spec = {"key": b64("g/"), "range_end": b64("g0"), "prev_kv": True}
    url = first_url
    async with aiohttp.ClientSession() as session:
        while True:
            req = {"create_request": {**spec, "start_revision": str(state["last"] + 1 if state["last"] else start)}}
            try:
                async for r in watch(session, url, [req]):
                    assert not r.get("canceled"), r
                    if r.get("events"):
                        results.append(r)
                        if not r.get("fragment"):
                            state["last"] = int(r["events"][-1]["kv"]["mod_revision"])
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
            state["resumes"] += 1
            running = [m.client_url for m in cluster.running() if m.client_url != url]
            url = running[0] if running else url
            await asyncio.sleep(0.2)


async def test_guarantees_while_the_leader_is_killed(cluster) -> None:
    leader = cluster.wait_leader()
    url = cluster.url(leader)
    status, doc = call(url, "/v3/kv/put", {"key": b64("g/start"), "value": b64("s")})
    start = int(doc["header"]["revision"])
    results, acked = [], []
    state = {"last": 0, "resumes": 0}
    follower = asyncio.get_running_loop().create_task(_follow(cluster, url, start, results, state))
    writer = threading.Thread(target=_writer, args=(cluster, acked, 160))
    writer.start()
    try:
        for _ in range(600):
            if len(acked) >= 40 and state["last"] >= acked[39][0]:
                break
            await asyncio.sleep(0.1)
        cluster.stop_member(leader, signal.SIGKILL)
        await asyncio.to_thread(writer.join, 180)
        assert not writer.is_alive()
        status, doc = call_any(cluster, "/v3/kv/range", {"key": b64("g/start")})
        final = int(doc["header"]["revision"])
        for _ in range(1200):
            if state["last"] >= final:
                break
            await asyncio.sleep(0.1)
        assert state["last"] >= final, (state, final)
    finally:
        follower.cancel()
        writer.join(60)
    assert state["resumes"] >= 1  # the stream broke with the leader and resumed elsewhere
    survivor = cluster.running()[0].client_url
    spec = {"key": b64("g/"), "range_end": b64("g0"), "prev_kv": True, "start_revision": str(start)}
    full_results, full_state = [], {"last": 0, "resumes": 0}
    task = asyncio.get_running_loop().create_task(_follow(cluster, survivor, start, full_results, full_state))
    for _ in range(600):
        if full_state["last"] >= final:
            break
        await asyncio.sleep(0.1)
    task.cancel()
    assert full_state["resumes"] == 0 and spec
    full = _as_responses(full_results)
    history = []
    for r in full:
        by_rev = {}
        for e in r.events:
            by_rev.setdefault(e.kv.mod_revision, []).append(e)
        for rev in sorted(by_rev):
            history.append(RevisionEvents(rev, tuple(by_rev[rev])))
    assert [h.revision for h in history] == sorted({h.revision for h in history})
    # every acknowledged write is in the history at the revision it was acknowledged with
    at = {(h.revision, e.kv.key.decode()): e.kv.value.decode() for h in history for e in h.events}
    for revision, keys, value in acked:
        for key in keys:
            assert at.get((revision, key)) == value, (revision, key)
    check_watch(history, Spec(b"g/", b"g0", start, prev_kv=True), _as_responses(results), reached=final)


@pytest.mark.parametrize(("body", "ctype", "status", "code"), [
    (b"\xc1", "application/x-msgpack", 400, 3),  # a byte msgpack reserves (kvraft's own: InvalidArgument)
    (b'{"create_request": {"key": "Zm9v", "start_revision": 1' + b"1" * 5000 + b"}}", "application/json", 500, 2),
    (b"[" * 100_000, "application/json", 500, 2),
])  # fmt: skip
async def test_a_malformed_first_request_is_a_bare_error(cluster, body: bytes, ctype: str, status: int,
                                                        code: int) -> None:
    """A first request that does not decode is answered before the stream opens, with the
    decoder's error as etcd's gateway answers it (gRPC Unknown, HTTP 500, for JSON); the
    decoder's own exceptions (a long integer, deep nesting) are its errors, not a crash."""
    url = cluster.url(cluster.wait_leader())
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/v3/watch", data=body, headers={"Content-Type": ctype},
            timeout=aiohttp.ClientTimeout(total=30)) as resp:
        raw = await resp.read()
    doc = msgpack.unpackb(raw) if ctype == "application/x-msgpack" else json.loads(raw)
    assert (resp.status, doc["code"]) == (status, code), doc
