"""The public surface (pinned), typed results from both wire shapes, builders, SyncClient."""

from __future__ import annotations

import base64

import pytest
from kvclusters import Runtime

import kvraft.client
from kvraft.client import (
    Compare,
    GetResponse,
    Op,
    SyncClient,
    TxnResponse,
    WatchResponse,
    prefix_range_end,
)
from kvraft.client.errors import (
    CompactedError,
    LeaseNotFoundError,
    PermissionDeniedError,
    error_from_status,
)

PUBLIC = [
    "Alarm", "AlarmResponse", "AlreadyExistsError", "AuthStatusResponse", "Client", "ClientError", "ClientStatistics",
    "CompactedError", "Compare", "DeleteResponse", "Election", "EndpointError", "Event",
    "FailedPreconditionError", "FutureRevisionError", "GetResponse", "HashKVResponse", "HeaderResponse",
    "InvalidArgumentError", "KeyValue", "Lease", "LeaseGrantResponse", "LeaseKeepAliveResponse",
    "LeaseLeasesResponse", "LeaseLostError", "LeaseNotFoundError", "LeaseTimeToLiveResponse", "Member",
    "MemberAddResponse", "MemberListResponse", "Mutex", "NotFoundError", "Op", "OutOfRangeError",
    "Permission", "PermissionDeniedError", "ProtocolError", "PutResponse", "ResourceExhaustedError",
    "ResponseHeader", "RetryPolicy", "RoleGetResponse", "RoleListResponse", "ScopedToken", "ServerError",
    "SnapshotChunk", "StatusResponse", "SyncClient", "TLSConfig", "Txn", "TxnResponse", "UnauthenticatedError",
    "UnavailableError", "UserGetResponse", "UserListResponse", "WatchCompactedError", "WatchResponse",
    "WatchSession", "Watcher", "prefix_range_end",
]


def test_public_surface_is_pinned() -> None:
    assert sorted(kvraft.client.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(kvraft.client, name) is not None


def test_client_imports_nothing_from_the_server_side() -> None:
    import ast
    from pathlib import Path

    for path in Path(kvraft.client.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                assert not name.startswith(("kvraft.server", "kvraft.apply", "kvraft.storage", "kvraft.raft")), (path, name)


def test_same_result_from_json_and_msgpack_shapes() -> None:
    as_json = {"header": {"cluster_id": "18446744073709551615", "revision": "7"},
               "kvs": [{"key": base64.b64encode(b"k\x00").decode(), "value": "", "version": "2", "lease": "3"}],
               "more": True, "count": "9"}
    as_msgpack = {"header": {"cluster_id": 2**64 - 1, "revision": 7},
                  "kvs": [{"key": b"k\x00", "version": 2, "lease": 3}], "more": True, "count": 9}
    assert GetResponse.from_wire(as_json) == GetResponse.from_wire(as_msgpack)
    parsed = GetResponse.from_wire(as_json)
    assert parsed.header.cluster_id == 2**64 - 1 and parsed.kvs[0].key == b"k\x00" and parsed.kvs[0].value == b""


def test_defaults_omitted_by_the_gateway_read_as_zero() -> None:
    failed = TxnResponse.from_wire({"header": {}, "responses": [{"response_range": {"header": {}}}]})
    assert failed.succeeded is False and isinstance(failed.responses[0], GetResponse)
    watch = WatchResponse.from_wire({"header": {"revision": "12"}, "events": [{"kv": {"key": "YQ=="}},
                                     {"type": "DELETE", "kv": {"key": "YQ==", "mod_revision": "12"}}]})
    assert [e.type for e in watch.events] == ["PUT", "DELETE"] and watch.watch_id == 0
    assert WatchResponse.from_wire({"header": {"revision": "3"}}).is_progress_notify


def test_prefix_range_end() -> None:
    assert prefix_range_end(b"foo") == b"fop"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"


def test_ops_and_compares_build_the_gateway_shapes() -> None:
    assert Op.get("p/", prefix=True, limit=2).body == {"key": b"p/", "range_end": b"p0", "limit": 2}
    assert Op.get("", from_key=True).body == {"key": b"\0", "range_end": b"\0"}
    assert Op.put("k", "v", lease=5, prev_kv=True).body == {"key": b"k", "value": b"v", "lease": 5, "prev_kv": True}
    assert Compare.mod("k", ">", 3).to_wire() == {"key": b"k", "target": "MOD", "result": "GREATER", "mod_revision": 3}
    assert Compare.value("k", "!=", b"x").to_wire()["result"] == "NOT_EQUAL"
    nested = Op.txn([Compare.version("k", "=", 0)], [Op.put("k", "1")], [])
    assert nested.writes and not Op.get("k").writes
    with pytest.raises(ValueError):
        Compare.value("k", "~", b"x")
    with pytest.raises(ValueError):
        Op.get("k", prefix=True, from_key=True)


def test_errors_are_typed_by_code_and_message() -> None:
    assert isinstance(error_from_status(11, "etcdserver: mvcc: required revision has been compacted"), CompactedError)
    assert isinstance(error_from_status(5, "etcdserver: requested lease not found"), LeaseNotFoundError)
    denied = error_from_status(7, "etcdserver: permission denied")
    assert isinstance(denied, PermissionDeniedError) and str(denied) == "etcdserver: permission denied"


def test_ctrl_c_in_a_sync_watch_closes_it_and_the_client_goes_on(runtime: Runtime) -> None:
    """``jobctl get jobs -w`` ended by Ctrl-C: the KeyboardInterrupt reaches the thread that
    waits in the watch while the loop thread still waits for the next response. Closing the
    stream under that wait failed ("aclose(): asynchronous generator is already running")."""
    import signal
    import threading

    main = threading.main_thread()
    if threading.current_thread() is not main:
        pytest.skip("needs the main thread (SIGINT is delivered there)")
    with SyncClient(runtime.endpoints) as client:
        timer = threading.Timer(0.5, lambda: signal.pthread_kill(main.ident or 0, signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                for _ in client.watch("sync/never-written"):
                    pass
        finally:
            timer.cancel()
        client.put("sync/after", b"1")
        assert client.get("sync/after").kvs[0].value == b"1"


def test_sync_client_for_scripts(runtime: Runtime) -> None:
    with SyncClient(runtime.endpoints) as client:
        client.put("sync/a", b"1")
        result = client.txn().if_(Compare.value("sync/a", "=", b"1")).then(Op.put("sync/a", b"2")).commit()
        assert result.succeeded
        assert client.get("sync/a").kvs[0].value == b"2"
        start = client.get("sync/a").header.revision
        for response in client.watch("sync/a", start_revision=start):
            assert response.events[0].kv.value == b"2"
            break
        assert client.member_list().members
