"""The lease routes answer as etcd 3.4's gateway does: the same lease requests, in the
same order, to a real etcd and to kvraft, compared by HTTP status, content type, framing
(a keepalive's answer is chunked) and JSON body (without ids and terms). Run twice: plain
requests take kvraft's fast path (``fast_lease``), requests with a chunked body are
handed to aiohttp's routes; both must match etcd.

Skipped when the ``etcd`` binary is absent (``.ci/run`` installs Debian's etcd-server).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.server.conftest import etcd_and_kvraft, needs_etcd

IGNORED = {"cluster_id", "member_id", "raft_term"}


def b(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def call(url: str, path: str, body: str, chunked: bool) -> tuple[int, str, str | None, list[Any]]:
    """(status, content type, transfer encoding, the JSON documents of the body). The
    framing of an error answer is not compared (etcd's Go server chunks those; kvraft's
    error answers, on every route, carry a length)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        if chunked:
            conn.request("POST", path, body=iter([body.encode()]), encode_chunked=True,
                         headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        else:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read().decode()
        ctype = (response.getheader("Content-Type") or "").split(";")[0]
        framing = response.getheader("Transfer-Encoding") if response.status == 200 else None
    finally:
        conn.close()
    return response.status, ctype, framing, [json.loads(line) for line in raw.splitlines() if line.strip()]


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: scrub(v) for k, v in value.items() if not (k in IGNORED and isinstance(v, str))}
        if "grantedTTL" in out:  # TimeToLive's TTL counts down: equal within 2 s
            out["TTL"] = int(out["TTL"]) >= int(out["grantedTTL"]) - 2
        return out
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def script(lease: int) -> list[tuple[str, str]]:
    lid = str(lease)
    return [
        ("/v3/lease/grant", json.dumps({"TTL": "60", "ID": lid})),
        ("/v3/lease/grant", json.dumps({"TTL": "60", "ID": lid})),
        ("/v3/lease/grant", json.dumps({"TTL": "9000000001", "ID": "7"})),
        ("/v3/kv/put", json.dumps({"key": b(f"leased{lid}"), "value": b("x"), "lease": lid})),
        ("/v3/lease/keepalive", json.dumps({"ID": lid})),
        ("/v3/lease/keepalive", json.dumps({"ID": lid}) + " " + json.dumps({"ID": "999"})),
        ("/v3beta/lease/keepalive", json.dumps({"ID": lid})),
        ("/v3/lease/keepalive", ""),
        # found by the randomized comparison: decoding stops at the first bad object
        ("/v3/lease/keepalive", json.dumps({"ID": lid}) + "] " + json.dumps({"ID": lid})),
        ("/v3/lease/keepalive", json.dumps({"ID": "x"}) + json.dumps({"ID": lid})),
        ("/v3/lease/keepalive", json.dumps({"ID": lid}) + "null{}"),
        ("/v3/lease/timetolive", json.dumps({"ID": 0})),
        ("/v3/lease/timetolive", json.dumps({"ID": lid, "keys": True})),
        ("/v3/kv/lease/timetolive", json.dumps({"ID": lid})),
        ("/v3/lease/timetolive", json.dumps({"ID": "999"})),
        ("/v3/lease/revoke", json.dumps({"ID": lid})),
        ("/v3/lease/keepalive", json.dumps({"ID": lid})),
        ("/v3/lease/timetolive", json.dumps({"ID": lid})),
    ]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    with etcd_and_kvraft(tmp_path_factory) as urls:
        yield urls


@needs_etcd
@pytest.mark.parametrize("chunked", [False, True], ids=["fast-path", "aiohttp"])
def test_lease_answers_match_etcd(pair, chunked: bool) -> None:
    etcd_url, kvraft_url = pair
    mismatches = []
    for path, body in script(1000 + int(chunked)):
        want = call(etcd_url, path, body, chunked)
        got = call(kvraft_url, path, body, chunked)
        if scrub(list(want)) != scrub(list(got)):
            mismatches.append(f"{path} {body}\n  etcd:   {want}\n  kvraft: {got}")
    assert not mismatches, "\n".join(mismatches)


async def ws_keepalive(url: str, messages: list[str]) -> list[Any]:
    """What a WebSocket keepalive stream answers to ``messages``: each text message's JSON,
    then "closed" if the socket closes (else nothing, after 2 s of quiet)."""
    out: list[Any] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url.replace("http", "ws") + "/v3/lease/keepalive") as ws:
        for message in messages:
            await ws.send_str(message)
        while True:
            try:
                msg = await ws.receive(timeout=2)
            except TimeoutError:
                return out
            if msg.type != aiohttp.WSMsgType.TEXT:
                out.append("closed")  # (etcd drops the connection, kvraft sends a close frame)
                return out
            out.append(scrub(json.loads(msg.data)))


# grpc-websocket-proxy writes each message into the gateway's request body: the messages
# are one stream of requests (two in one message are two, one may end in a later message);
# a first one that does not decode is answered with the bare error (code 2) and the socket
# closes; a later one closes it after the answers before it. kvraft read one request per
# message, and a bad one broke the socket (aiohttp's HTTP error page written into it).
WS_CASES: dict[str, list[str]] = {
    "two requests in one message": ['{"ID":"LID"}{"ID":"LID"}'],
    "a request cut across messages": ['{"ID":', '"LID"}'],
    "a first message that does not decode": ['{bad'],
    "a first ID that does not decode": ['{"ID":"x"}'],
    "a later message that does not decode": ['{"ID":"LID"}', '{"ID":"+5"}', '{"ID":"LID"}'],
}


@needs_etcd
@pytest.mark.parametrize("name", list(WS_CASES))
def test_websocket_keepalive_messages_are_one_request_stream(pair, name: str) -> None:
    got = []
    lid = str(2024 + list(WS_CASES).index(name))
    for url in pair:
        assert call(url, "/v3/lease/grant", json.dumps({"TTL": "600", "ID": lid}), False)[0] == 200
        messages = [m.replace("LID", lid) for m in WS_CASES[name]]
        got.append(asyncio.run(asyncio.wait_for(ws_keepalive(url, messages), 30)))
    assert got[1] == got[0]
