"""Emit-defaults JSON (``--gateway-emit-defaults``, header ``Kvraft-Emit-Defaults``): answers
with every field of their message, zero values included, where etcd's gateway leaves them out
(etcd-io/etcd#10743: "Unable to find watch Id in the watch response")."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import msgpack
import pytest

from kvraft.server.api import defaults
from kvraft.server.api.grpc_stats import _METHODS
from tests.server.conftest import FAST_FLAGS, start_cluster
from tests.watch.cluster_helpers import watch

ON = {defaults.HEADER: "true"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def post(url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cluster = start_cluster(tmp_path_factory.mktemp("defaults"), size=1, extra=FAST_FLAGS)
    try:
        yield cluster.url("m0")
    finally:
        cluster.stop()


# -- the filling, alone ------------------------------------------------------------------

def test_fill_a_failed_txn_with_a_nested_txn_and_an_unknown_field() -> None:
    doc = {"header": {"revision": "7"}, "responses": [{"response_txn": {"header": {}}},
                                                      {"response_put": {"header": {}, "prev_kv": {"key": "YQ=="}}}],
           "kvraft_extra": 1}
    assert defaults.fill("TxnResponse", doc) == {
        "header": {"cluster_id": "0", "member_id": "0", "revision": "7", "raft_term": "0"},
        "succeeded": False,
        "responses": [
            {"response_txn": {"header": {"cluster_id": "0", "member_id": "0", "revision": "0", "raft_term": "0"},
                              "succeeded": False, "responses": []}},  # a oneof's other members stay out
            {"response_put": {"header": {"cluster_id": "0", "member_id": "0", "revision": "0", "raft_term": "0"},
                              "prev_kv": {"key": "YQ==", "create_revision": "0", "mod_revision": "0", "version": "0",
                                          "value": "", "lease": "0"}}},
        ],
        "kvraft_extra": 1,  # a field the message does not declare is kept, last
    }


def test_fill_enums_unset_messages_and_uint32() -> None:
    event = defaults.fill("Event", {"kv": {"key": "YQ=="}})
    assert event["type"] == "PUT" and event["prev_kv"] is None  # an enum's zero name; an unset message: null
    assert defaults.fill("HashResponse", {})["hash"] == 0  # uint32: a JSON number
    assert defaults.fill("AuthRoleGetResponse", {"perm": [{"key": "YQ=="}]})["perm"][0]["permType"] == "READ"
    assert list(defaults.fill("WatchResponse", {})) == [  # declaration order
        "header", "watch_id", "created", "canceled", "compact_revision", "cancel_reason", "fragment", "events",
    ]


def test_every_gateway_method_has_its_message() -> None:
    for path, (_, _, method) in _METHODS.items():
        message = defaults.message_for("/v3" + path)
        assert message in defaults.MESSAGES, (path, method)
    for fields in defaults.MESSAGES.values():
        for _, kind in fields:
            for inner in (kind, getattr(kind, "item", None), getattr(getattr(kind, "item", None), "item", None)):
                if hasattr(inner, "name"):
                    assert inner.name in defaults.MESSAGES
    assert defaults.message_for("/v3beta/kv/range") == "RangeResponse"
    assert defaults.message_for("/v3/kvraft/kv/rangestream") == "RangeResponse"
    assert defaults.message_for("/v3/kvraft/auth/token/grant") is None and defaults.message_for("/version") is None


@pytest.mark.parametrize(("value", "want"), [("true", True), ("1", True), ("T", True), ("false", False),
                                             ("0", False), (None, None)])
def test_the_header_spelled_as_go_parses_a_bool(value: str | None, want: bool | None) -> None:
    headers = {} if value is None else {defaults.HEADER: value}
    assert defaults.wants_defaults(headers, False) is (want or False)
    assert defaults.wants_defaults(headers, True) is (True if want is None else want)


# -- a member ----------------------------------------------------------------------------

def test_unary_answers_with_the_header(url: str) -> None:
    status, doc = post(url, "/v3/kv/range", {"key": b64("missing")}, ON)
    assert status == 200
    assert doc["kvs"] == [] and doc["more"] is False and doc["count"] == "0"
    assert set(doc["header"]) == {"cluster_id", "member_id", "revision", "raft_term"}
    _, plain = post(url, "/v3/kv/range", {"key": b64("missing")})
    assert "kvs" not in plain and "more" not in plain and "count" not in plain  # etcd's shape without it

    _, txn = post(url, "/v3/kv/txn", {"compare": [{"key": b64("missing"), "target": "VERSION", "version": 1}]}, ON)
    assert txn["succeeded"] is False and txn["responses"] == []
    _, put = post(url, "/v3/kv/put", {"key": b64("k"), "value": b64("v")}, ON)
    assert put["prev_kv"] is None
    _, members = post(url, "/v3/cluster/member/list", {}, ON)
    assert members["members"][0]["isLearner"] is False
    _, status_doc = post(url, "/v3/maintenance/status", {}, ON)
    assert status_doc["errors"] == [] and status_doc["isLearner"] is False
    _, auth = post(url, "/v3/auth/status", {}, ON)
    assert auth["enabled"] is False
    _, ttl = post(url, "/v3/lease/timetolive", {"ID": 12345}, ON)  # a lease that does not exist
    assert ttl["TTL"] == "-1" and ttl["grantedTTL"] == "0" and ttl["keys"] == []


def test_a_bad_header_value_is_refused_with_etcds_error(url: str) -> None:
    status, doc = post(url, "/v3/kv/range", {"key": b64("k")}, {defaults.HEADER: "yes"})
    assert status == 400 and doc["code"] == 3 and "Kvraft-Emit-Defaults" in doc["message"]


def test_errors_and_msgpack_answers_are_unchanged(url: str) -> None:
    status, doc = post(url, "/v3/kv/range", {"key": b64("k"), "revision": 10**6}, ON)
    assert status == 400 and set(doc) == {"error", "message", "code"}
    request = urllib.request.Request(url + "/v3/kv/range", data=msgpack.packb({"key": b"missing"}), method="POST",
                                     headers={"Content-Type": "application/x-msgpack", **ON})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert "kvs" not in msgpack.unpackb(response.read())


def test_watch_stream_carries_watch_id_zero_and_the_event_type(url: str) -> None:
    async def run() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with aiohttp.ClientSession(headers=ON) as session:
            stream = watch(session, url, [{"create_request": {"key": b64("w")}}])
            got.append(await anext(stream))
            await asyncio.to_thread(post, url, "/v3/kv/put", {"key": b64("w"), "value": b64("1")})
            got.append(await anext(stream))
            await stream.aclose()
        return got

    created, events = asyncio.run(run())
    assert created["watch_id"] == "0" and created["created"] is True and created["events"] == []
    assert events["watch_id"] == "0" and events["created"] is False
    [event] = events["events"]
    assert event["type"] == "PUT" and event["prev_kv"] is None and event["kv"]["lease"] == "0"


def test_watch_over_websocket_and_lease_keepalive(url: str) -> None:
    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        async with aiohttp.ClientSession(headers=ON) as session:
            async with session.ws_connect(url.replace("http", "ws") + "/v3/watch") as ws:
                await ws.send_str(json.dumps({"create_request": {"key": b64("ws")}}))
                created = json.loads((await ws.receive(timeout=10)).data)["result"]
            async with session.post(url + "/v3/lease/keepalive", data=json.dumps({"ID": 777})) as response:
                keepalive = json.loads((await response.read()).splitlines()[0])["result"]
        return created, keepalive

    created, keepalive = asyncio.run(run())
    assert created["watch_id"] == "0" and created["canceled"] is False
    assert keepalive["ID"] == "777" and keepalive["TTL"] == "0"  # a dead lease: TTL 0, which etcd leaves out


def test_the_flag_fills_the_fast_paths_answers_and_the_header_turns_it_off(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cluster = start_cluster(tmp_path, size=1, extra=[*FAST_FLAGS, "--gateway-emit-defaults"])
    try:
        url = cluster.url("m0")
        _, doc = post(url, "/v3/kv/range", {"key": b64("missing")})  # the fast path's route
        assert doc["more"] is False and doc["kvs"] == []
        _, put = post(url, "/v3/kv/put", {"key": b64("k"), "value": b64("v")})
        assert put["prev_kv"] is None
        _, off = post(url, "/v3/kv/range", {"key": b64("missing")}, {defaults.HEADER: "false"})
        assert "more" not in off
        asyncio.run(_kvraft_client_reads_the_filled_answers(url))
    finally:
        cluster.stop()


async def _kvraft_client_reads_the_filled_answers(url: str) -> None:
    """kvraft's own client (and kvctl on it) in JSON takes the zero values and nulls."""
    from kvraft.client import Client, Compare, Op

    async with Client([url], encoding="json") as client:
        assert (await client.put("c", "1", prev_kv=True)).prev_kv is None
        assert (await client.put("c", "2", prev_kv=True)).prev_kv.value == b"1"  # type: ignore[union-attr]
        missing = await client.get("nothing")
        assert missing.kvs == () and missing.count == 0 and not missing.more
        txn = await client.txn().if_(Compare.version("nothing", ">", 0)).then(Op.put("x", "y")).else_(
            Op.get("c"), Op.txn([], [Op.put("n", "1")], [])).commit()
        assert not txn.succeeded and len(txn.responses) == 2
        lease = await client.lease_grant(10)
        assert (await client.lease_time_to_live(lease.id, keys=True)).keys == ()
        assert not (await client.auth_status()).enabled
        put = await client.put("w", "v")
        await client.delete("w")
        events = []
        async with asyncio.timeout(30):
            async for response in client.watch("w", start_revision=put.header.revision):
                events.extend(response.events)
                if len(events) >= 2:
                    break
        assert [e.type for e in events] == ["PUT", "DELETE"] and events[0].prev_kv is None
