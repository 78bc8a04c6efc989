"""A read-only txn whose every range asks for a serializable read is served from the member's
own store, without a read barrier, as etcd's (``isTxnSerializable``): it answers on a member
cut off from the rest of the cluster. Before, kvraft took a read barrier for every read-only
txn, so it waited for a leader and failed after the request timeout. A txn with one range
not serializable still takes the barrier."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from kvraft.server.local import b64, post
from tests.server.conftest import FAST_FLAGS, follower_with, start_cluster


def _txn(url: str, serializable: list[bool], timeout_s: float) -> tuple[int, dict]:  # type: ignore[type-arg]
    ranges = [{"request_range": {"key": b64("k"), "serializable": s}} for s in serializable]
    try:
        return post(url, "/v3/kv/txn", {"success": ranges}, timeout_s=timeout_s)
    except OSError as exc:  # (the client's timeout: the member did not answer in time)
        return 0, {"error": str(exc)}


def test_a_serializable_read_only_txn_answers_on_a_member_cut_off(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path, size=3, extra=FAST_FLAGS)
    stopped: list[int] = []
    try:
        _leader, follower, url = follower_with(cluster, "k", "v")
        assert _txn(url, [True, True], 10)[0] == 200  # (applied here too)
        for name in cluster.members:
            if name != follower:
                pid = cluster.members[name].pid
                assert pid is not None
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        code, body = _txn(url, [True, True], 4)
        assert code == 200, body  # was: no answer within 4 s (a read barrier with no leader)
        (first, second) = body["responses"]
        assert first["response_range"]["kvs"][0]["value"] == b64("v") == second["response_range"]["kvs"][0]["value"]
        code, body = _txn(url, [True, False], 2)
        assert code != 200, body  # one linearizable range: the barrier, which cannot pass
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        cluster.stop()
