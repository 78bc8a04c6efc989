"""``--strict-reconfig-check`` on real clusters: the same membership changes sent to a
3-member etcd 3.4 cluster and a 3-member kvraft cluster get the same answers; with the
check off, kvraft lets the unsafe change through; kvctl reports the refusal."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from kvraft.server.local import LocalCluster, post
from tests.server.conftest import FAST_FLAGS, needs_etcd, start_cluster
from tests.server.helpers import reconfigure, wait_until

UNHEALTHY = (503, 14, "etcdserver: unhealthy cluster")
NOT_STARTED = (500, 2, "etcdserver: re-configuration failed due to not enough started members")


def _ids(url: str) -> dict[str, str]:
    code, body = post(url, "/v3/cluster/member/list", {})
    assert code == 200, body
    return {m.get("name", ""): m["ID"] for m in body["members"]}


def _answer(code: int, body: dict[str, Any]) -> tuple[int, int, str] | int:
    return code if code == 200 else (code, body.get("code"), body.get("message"))


def _script(cluster: LocalCluster) -> list[tuple[str, tuple[int, int, str] | int]]:
    """Stop one follower ("down"), then send the changes to the leader; each step's answer,
    by name. (Stopping a follower, not the leader: no election to time requests out.)"""
    leader = cluster.wait_leader()
    down, up = [name for name in sorted(cluster.members) if name != leader]
    url = cluster.url(leader)
    ids = _ids(url)
    cluster.stop_member(down)
    answers: list[tuple[str, tuple[int, int, str] | int]] = []

    def step(name: str, path: str, doc: dict[str, Any], retry: bool = False) -> None:
        code, body = (reconfigure if retry else post)(url, path, doc)
        answers.append((name, _answer(code, body)))

    step("add a voter, one down", "/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:1"]})
    step("add a learner, one down", "/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:1"], "isLearner": True})
    step("remove the other follower (up), one down", "/v3/cluster/member/remove", {"ID": ids[up]})
    step("remove the leader itself, one down", "/v3/cluster/member/remove", {"ID": ids[leader]})
    step("remove the down one", "/v3/cluster/member/remove", {"ID": ids[down]})
    # two voters left, both up: a voter may be added (it will never start) ...
    step("add a voter to two", "/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:2"]}, retry=True)
    # ... after which 2 of 3 voters are started, and a fourth would need 3 started
    step("add a voter beside one never started", "/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:3"]})
    step("add a learner beside one never started", "/v3/cluster/member/add",
         {"peerURLs": ["http://127.0.0.1:3"], "isLearner": True})
    return answers


EXPECTED = [
    ("add a voter, one down", UNHEALTHY),
    ("add a learner, one down", UNHEALTHY),
    ("remove the other follower (up), one down", UNHEALTHY),
    ("remove the leader itself, one down", UNHEALTHY),
    ("remove the down one", 200),
    ("add a voter to two", 200),
    ("add a voter beside one never started", NOT_STARTED),
    ("add a learner beside one never started", UNHEALTHY),
]


@needs_etcd
def test_refusals_match_etcd(tmp_path) -> None:
    results = {}
    for binary in ("etcd", "kvraft"):
        cluster = start_cluster(tmp_path, binary=binary, extra=FAST_FLAGS if binary == "kvraft" else [])
        try:
            cluster.wait_ready()
            results[binary] = _script(cluster)
        finally:
            cluster.stop()
    assert results["etcd"] == EXPECTED  # the captured behaviour still holds for this etcd
    assert results["kvraft"] == results["etcd"]


def test_off_lets_the_unsafe_add_through_and_kvctl_reports_the_refusal(tmp_path) -> None:
    strict = start_cluster(tmp_path / "strict", extra=FAST_FLAGS)
    try:
        leader = strict.wait_leader()
        strict.stop_member(next(name for name in strict.members if name != leader))
        kvctl = subprocess.run(
            [sys.executable, "-m", "kvraft.cli", "--endpoints", strict.url(leader), "member", "add", "m9",
             "--peer-urls", "http://127.0.0.1:1"],
            capture_output=True, text=True, timeout=60,
        )
        assert kvctl.returncode != 0
        assert "etcdserver: unhealthy cluster" in kvctl.stderr, kvctl.stderr
    finally:
        strict.stop()

    loose = start_cluster(tmp_path / "loose", extra=[*FAST_FLAGS, "--strict-reconfig-check=false"])
    try:
        leader = loose.wait_leader()
        loose.stop_member(next(name for name in loose.members if name != leader))
        code, body = post(loose.url(leader), "/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:1"]})
        assert code == 200, body
        # 4 voters, 2 of them up: the cluster lost its quorum, as etcd's would; that is
        # what the check is for
        def write_fails() -> bool:
            try:
                return post(loose.url(leader), "/v3/kv/put", {"key": "YQ=="}, 3.0)[0] != 200
            except OSError:  # no answer in time: the write waits for a quorum
                return True

        wait_until(write_fails, 30, what="writes to stop once the quorum is gone")
    finally:
        loose.stop()


@pytest.mark.parametrize("flag", ["--strict-reconfig-check=maybe"])
def test_a_bad_value_is_refused(flag: str) -> None:
    from kvraft.server.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="strict-reconfig-check"):
        parse_config([flag, "--data-dir", "/nonexistent/x"])
