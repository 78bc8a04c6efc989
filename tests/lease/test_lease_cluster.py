"""Leases over HTTP against a real 3-member cluster, in the shapes etcd 3.4 answers."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.watch.cluster_helpers import b64, call, unb64


def _results(raw: str) -> list[dict]:
    return [json.loads(line)["result"] for line in raw.splitlines() if line.strip()]


def test_grant_attach_timetolive_keepalive_revoke(cluster) -> None:
    url = cluster.url(cluster.wait_leader())
    status, doc = call(url, "/v3/lease/grant", {"TTL": "60", "ID": "1000"})
    assert status == 200 and (doc["ID"], doc["TTL"]) == ("1000", "60")
    status, doc = call(url, "/v3/lease/grant", {"TTL": "60", "ID": "1000"})
    assert doc["code"] == 9 and doc["message"] == "etcdserver: lease already exists"
    status, doc = call(url, "/v3/lease/grant", {"TTL": "0"})
    assert status == 200 and int(doc["ID"]) > 0 and int(doc["TTL"]) >= 1  # the minimum TTL applies
    status, doc = call(url, "/v3/lease/grant", {"TTL": "9000000001"})
    assert doc["code"] == 11 and doc["message"] == "etcdserver: too large lease TTL"
    for key in ("leased1", "leased2"):
        status, doc = call(url, "/v3/kv/put", {"key": b64(key), "value": b64("x"), "lease": "1000"})
        assert status == 200
    status, doc = call(url, "/v3/kv/put", {"key": b64("k"), "value": b64("x"), "lease": "12345"})
    assert (status, doc["code"], doc["message"]) == (404, 5, "etcdserver: requested lease not found")
    status, doc = call(url, "/v3/kv/lease/timetolive", {"ID": "1000", "keys": True})
    # <= 61, not 60: a leader that takes over the leases just after the grant (the cluster is
    # new) extends every lease by the election timeout, as etcd's Promote does (CI, 2026-12-02)
    assert doc["grantedTTL"] == "60" and 0 < int(doc["TTL"]) <= 61
    assert [unb64(k) for k in doc["keys"]] == [b"leased1", b"leased2"]
    status, doc = call(url, "/v3/lease/leases", {})
    assert {"ID": "1000"} in doc["leases"]
    status, raw = _post_raw(url, "/v3/lease/keepalive", '{"ID":"1000"} {"ID":"1000"}')
    results = _results(raw)
    assert [(r["ID"], r["TTL"]) for r in results] == [("1000", "60"), ("1000", "60")]
    status, before = call(url, "/v3/kv/range", {"key": b64("leased1")})
    status, doc = call(url, "/v3/lease/revoke", {"ID": "1000"})
    revoked_at = int(doc["header"]["revision"])
    assert revoked_at == int(before["header"]["revision"]) + 1  # both keys in ONE revision
    status, doc = call(url, "/v3/kv/range", {"key": b64("leased"), "range_end": b64("leasee")})
    assert "kvs" not in doc
    status, doc = call(url, "/v3/kv/lease/timetolive", {"ID": "1000"})
    assert doc["TTL"] == "-1" and "grantedTTL" not in doc
    status, raw = _post_raw(url, "/v3/lease/keepalive", '{"ID":"1000"}')
    assert _results(raw)[0] == {"header": _results(raw)[0]["header"], "ID": "1000"}  # TTL omitted: gone
    status, doc = call(url, "/v3/lease/revoke", {"ID": "1000"})
    assert doc["code"] == 5


def _post_raw(url: str, path: str, body: str) -> tuple[int, str]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


async def test_keepalive_stream_over_websocket_on_a_follower(cluster) -> None:
    leader = cluster.wait_leader()
    follower = next(m.client_url for m in cluster.running() if m.name != leader)
    status, doc = await asyncio.to_thread(call, follower, "/v3/lease/grant", {"TTL": "30"})
    lease = doc["ID"]
    async with aiohttp.ClientSession() as session, session.ws_connect(
        follower.replace("http", "ws") + "/v3/lease/keepalive"
    ) as ws:
        for _ in range(3):
            await ws.send_str(json.dumps({"ID": lease}))
            result = json.loads((await ws.receive(timeout=30)).data)["result"]
            assert (result["ID"], result["TTL"]) == (lease, "30")


def test_expired_lease_deletes_its_keys_seen_by_a_watch(cluster) -> None:
    url = cluster.url(cluster.wait_leader())
    status, doc = call(url, "/v3/lease/grant", {"TTL": "1"})
    lease = doc["ID"]
    call(url, "/v3/kv/put", {"key": b64("exp/a"), "value": b64("1"), "lease": lease})
    status, doc = call(url, "/v3/kv/put", {"key": b64("exp/b"), "value": b64("2"), "lease": lease})
    start = int(doc["header"]["revision"]) + 1
    body = json.dumps({"create_request": {"key": b64("exp/"), "range_end": b64("exp0"),
                                          "start_revision": str(start), "prev_kv": True}})

    async def first_events():
        async with aiohttp.ClientSession() as session:
            from tests.watch.cluster_helpers import watch

            async for r in watch(session, url, [json.loads(body)]):
                if r.get("events"):
                    return r

    result = asyncio.run(asyncio.wait_for(first_events(), 60))
    events = result["events"]
    assert [e.get("type") for e in events] == ["DELETE", "DELETE"]
    assert {e["kv"]["mod_revision"] for e in events} == {str(start)}
    assert all(e["prev_kv"]["lease"] == lease for e in events)
