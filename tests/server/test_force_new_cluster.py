"""``--force-new-cluster`` on real processes: a cluster loses two of its three members for
good; the survivor, restarted with the flag, serves alone with every acknowledged write, keeps
doing so after a restart without the flag, and grows again with ``member add``. The same
script runs against etcd 3.4, so the two behave alike where it matters."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from kvraft.server.local import LocalCluster, post
from tests.server.conftest import FAST_FLAGS, etcd_available, start_cluster
from tests.server.helpers import get, put, reconfigure, wait_until

BINARIES = [
    pytest.param("etcd", marks=pytest.mark.skipif(not etcd_available(), reason="etcd binary not installed")),
    "kvraft",
]


def _writes(url: str) -> bool:
    try:
        return put(url, "probe", "x", timeout_s=3.0)[0] == 200
    except OSError:
        return False


def _members(url: str) -> list[dict]:
    code, body = post(url, "/v3/cluster/member/list", {})
    assert code == 200, body
    return body["members"]


@pytest.mark.parametrize("binary", BINARIES)
def test_a_survivor_serves_alone_with_its_data_and_grows_again(tmp_path, binary: str) -> None:
    cluster: LocalCluster = start_cluster(tmp_path, binary=binary, extra=FAST_FLAGS if binary == "kvraft" else [])
    try:
        leader = cluster.wait_leader()
        acked = {f"k{i:03d}": f"v{i}" for i in range(60)}
        for key, value in acked.items():
            code, body = put(cluster.url(leader), key, value)
            assert code == 200, body
        survivor = next(name for name in sorted(cluster.members) if name != leader)
        url = cluster.url(survivor)
        wait_until(lambda: get(url, "k", "l", serializable=True) == acked, 30, what="the survivor to hold every write")
        # two of three gone for good: no quorum
        for name in cluster.members:
            if name != survivor:
                cluster.stop_member(name, signal.SIGKILL)
        assert not _writes(url)

        cluster.stop_member(survivor)
        cluster.members[survivor].extra = ["--force-new-cluster"]
        cluster.start_member(survivor)
        wait_until(lambda: _writes(url), 60, what="the forced member to accept writes")
        assert get(url, "k", "l") == acked
        members = _members(url)
        assert [m.get("name") for m in members] == [survivor]

        # the flag removed, a restart keeps the one-member cluster and its data
        cluster.stop_member(survivor)
        cluster.members[survivor].extra = []
        cluster.start_member(survivor)
        wait_until(lambda: _writes(url), 60, what="the member to serve after a plain restart")
        assert get(url, "k", "l") == acked

        # grow again: a new machine (new peer URL, empty data dir) joins
        newcomer = cluster.add_process("m3")
        code, body = reconfigure(url, "/v3/cluster/member/add", {"peerURLs": [newcomer.peer_url]})
        assert code == 200, body
        cluster.start_member("m3", cluster.initial_cluster([survivor, "m3"]), "existing")
        wait_until(lambda: get(cluster.url("m3"), "k", "l", serializable=True) == acked, 60,
                   what="the new member to catch up")
        assert put(url, "after", "grown")[0] == 200  # a quorum of 2 of 2 commits
    finally:
        cluster.stop()


def test_a_wrong_data_dir_is_refused_without_creating_it(tmp_path) -> None:
    missing = tmp_path / "typo.kvraft"
    result = subprocess.run(
        [sys.executable, "-m", "kvraft.server.main", "--force-new-cluster", "--data-dir", str(missing),
         "--listen-client-urls", "http://127.0.0.1:0", "--listen-peer-urls", "http://127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "has no Raft log, so there is no data to keep" in result.stderr
    assert not missing.exists()
