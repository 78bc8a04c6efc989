"""The watch route's fan-out fast path gives the same bytes as the generic encoder."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from kvraft.server.api import watch as route
from kvraft.server.api.codec import JSON_OUT
from kvraft.storage.mvcc.types import KeyValue
from kvraft.watch import WatchEvent, WatchResponse


@pytest.fixture
def request_stub(monkeypatch):
    monkeypatch.setattr(route, "header", lambda _req, out, rev: {"cluster_id": "1", "member_id": "2",
                                                                  **({"revision": str(rev)} if rev else {}),
                                                                  "raft_term": "3"})
    route._HEADER_JSON[:] = [None, ""]
    return SimpleNamespace(app={route.FEATURES: SimpleNamespace(node=SimpleNamespace(raft_term=3))})


def test_fast_path_matches_generic_encoding(request_stub) -> None:
    put = WatchEvent(0, KeyValue(b"k\xff", 2, 5, 3, b"v" * 40, 7), KeyValue(b"k\xff", 2, 4, 2, b"u"))
    delete = WatchEvent(1, KeyValue(b"j", mod_revision=5), None)
    for response in (
        WatchResponse(0, 5, (put, delete)),
        WatchResponse(9, 5, (delete,), fragment=True),
        WatchResponse(3, 6, (put,)),
    ):
        fast = route._events_json(request_stub, response)
        generic = json.dumps({"result": route.encode_watch_response(request_stub, JSON_OUT, response)},
                             separators=(",", ":")).encode() + b"\n"
        assert fast == generic
