"""A member joining an existing cluster asks its peers for the members and its id
(kvraft.server.join; etcd's GetClusterFromRemotePeers and ValidateClusterAndAssignIDs)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvraft.server import join
from kvraft.server.join import JoinError, RemoteCluster, describe, fetch_cluster, match_members
from kvraft.server.local import free_port, post
from kvraft.server.membership import Member
from kvraft.server.transport import PeerTransport, cluster_key
from tests.server.conftest import FAST_FLAGS, needs_etcd, start_cluster
from tests.server.helpers import get, put, reconfigure, wait_until

A, B, C = "http://127.0.0.1:1001", "http://127.0.0.1:1002", "http://127.0.0.1:1003"


def _remote(*members: Member, removed: set[int] | None = None) -> RemoteCluster:
    return RemoteCluster(7, 10, list(members), removed or set(), "http://peer")


# -- matching --initial-cluster to the cluster (pure) -----------------------------------------
def test_ids_come_from_the_cluster_by_peer_url() -> None:
    remote = _remote(Member(11, "a", [A]), Member(22, "b", [B]), Member(33, "", [C], is_learner=True))
    assert match_members({"a": [A], "b": [B], "c": [C]}, "c", remote) == {"a": 11, "b": 22, "c": 33}


def test_urls_match_trimmed_and_in_any_order() -> None:
    remote = _remote(Member(11, "a", [A, B]), Member(33, "", [C]))
    assert match_members({"a": [B + " ", A], "c": [C]}, "c", remote) == {"a": 11, "c": 33}


def test_a_member_not_added_is_told_to_run_member_add() -> None:
    remote = _remote(Member(11, "a", [A]), Member(22, "b", [B]))
    with pytest.raises(JoinError, match=r"no member of the cluster has the peer URLs http://127.0.0.1:1003 "
                                        r".*kvctl member add c --peer-urls=http://127.0.0.1:1003"):
        match_members({"a": [A], "b": [B], "c": [C]}, "c", remote)


def test_an_initial_cluster_leaving_out_a_member_is_refused() -> None:
    remote = _remote(Member(11, "a", [A]), Member(22, "b", [B]), Member(33, "", [C]))
    with pytest.raises(JoinError) as info:
        match_members({"a": [A], "c": [C]}, "c", remote)
    assert "member count is unequal (--initial-cluster has 2, the cluster 3)" in str(info.value)
    assert "members missing from --initial-cluster: b=http://127.0.0.1:1002" in str(info.value)


def test_an_initial_cluster_naming_a_stranger_is_refused() -> None:
    remote = _remote(Member(11, "a", [A]), Member(33, "", [C]))
    with pytest.raises(JoinError, match=r"not members of the cluster: b=http://127.0.0.1:1002"):
        match_members({"a": [A], "b": [B], "c": [C]}, "c", remote)


def test_a_malformed_description_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a kvraft member's description"):
        RemoteCluster.from_wire([1, 2, [["x"]], []], "http://peer")
    body = describe(7, 10, [Member(11, "a", [A])], {5})
    assert RemoteCluster.from_wire(body, "http://peer") == RemoteCluster(7, 10, [Member(11, "a", [A])], {5}, "http://peer")


# -- asking the peers (in process, real sockets on 127.0.0.1) --------------------------------
async def _listener(token: str, answer: list) -> tuple[PeerTransport, str]:
    port = free_port()
    transport = PeerTransport(99, cluster_key(token), lambda *_: None, describe=lambda: answer)
    await transport.listen([f"http://127.0.0.1:{port}"])
    return transport, f"http://127.0.0.1:{port}"


async def test_the_newest_answer_listing_the_member_wins() -> None:
    stale, stale_url = await _listener("t", describe(7, 5, [Member(11, "a", [A])], set()))
    fresh, fresh_url = await _listener("t", describe(7, 9, [Member(11, "a", [A]), Member(44, "", [C])], {22}))
    try:
        remote = await fetch_cluster([stale_url, fresh_url], "c", [C], cluster_key("t"), timeout_s=5)
        assert (remote.applied_index, remote.removed, remote.source) == (9, {22}, fresh_url)
        assert remote.member_at([C]) == Member(44, "", [C])
    finally:
        await stale.close()
        await fresh.close()


async def test_peers_with_another_token_end_the_join_at_once() -> None:
    peer, url = await _listener("the-cluster", describe(7, 5, [Member(44, "", [C])], set()))
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(JoinError, match=r"do not hold this member's cluster key: --initial-cluster-token"):
            await fetch_cluster([url], "c", [C], cluster_key("a-typo"), timeout_s=30)
        assert asyncio.get_running_loop().time() - started < 20  # not the whole timeout
    finally:
        await peer.close()


async def test_answers_without_the_member_end_the_join_after_the_grace(monkeypatch) -> None:
    monkeypatch.setattr(join, "RETRY_S", 0.05)
    peer, url = await _listener("t", describe(7, 5, [Member(11, "a", [A])], set()))
    try:
        with pytest.raises(JoinError, match=r"no member of the cluster has the peer URLs"):
            await fetch_cluster([url], "c", [C], cluster_key("t"), timeout_s=30, grace_s=0.2)
    finally:
        await peer.close()


async def test_unreachable_peers_end_the_join_after_the_timeout(monkeypatch) -> None:
    monkeypatch.setattr(join, "RETRY_S", 0.05)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(JoinError, match=rf"cannot fetch the cluster from its peers in 0.5 s \({url}: "):
        await fetch_cluster([url], "c", [C], cluster_key("t"), timeout_s=0.5)


async def test_members_that_do_not_describe_the_cluster_leave_the_ids_to_the_flags() -> None:
    """A member of a version before the question closes at the join hello (addressed to 0):
    in a rolling upgrade, a new member joins as that version did, its id from the flags
    (which is what that version's ``member add`` gave it)."""
    port = free_port()
    transport = PeerTransport(99, cluster_key("t"), lambda *_: None)  # no describe: the old version
    await transport.listen([f"http://127.0.0.1:{port}"])
    try:
        assert await fetch_cluster([f"http://127.0.0.1:{port}"], "c", [C], cluster_key("t"), timeout_s=5) is None
    finally:
        await transport.close()


async def test_an_older_peer_with_the_others_down_leaves_the_ids_to_the_flags_after_the_grace(monkeypatch) -> None:
    """A rolling upgrade with a member down: the old one closes at the question, the down one
    cannot answer; after the grace the joiner does as the old version (it waited for ever, then
    failed at the timeout)."""
    monkeypatch.setattr(join, "RETRY_S", 0.05)
    port = free_port()
    transport = PeerTransport(99, cluster_key("t"), lambda *_: None)  # no describe: the old version
    await transport.listen([f"http://127.0.0.1:{port}"])
    down = f"http://127.0.0.1:{free_port()}"
    try:
        started = asyncio.get_running_loop().time()
        got = await fetch_cluster([f"http://127.0.0.1:{port}", down], "c", [C], cluster_key("t"), timeout_s=30,
                                  grace_s=0.3)
        assert got is None and asyncio.get_running_loop().time() - started < 10
    finally:
        await transport.close()


def test_guessed_ids_are_confirmed_by_the_log_or_dropped(tmp_path) -> None:
    """The fallback's registry (ids from --initial-cluster): a founder's ``found`` entry
    confirms a guess; once the entry adding this member applies, a guess still unconfirmed
    (a founder whose URL moved since: another id) is no member."""
    from kvraft.apply.ops import MemberOp
    from kvraft.server.membership import Membership

    m = Membership(tmp_path / "members.json")
    m.members = {1: Member(1, "a", [A]), 2: Member(2, "b", [B]), 9: Member(9, "c", [C])}
    m.own_id = 9
    m.guess_from_flags(9)
    assert m.guessed == {1, 2}
    m.apply(MemberOp("found", 1))
    m.apply(MemberOp("found", 5))  # b's real id: its URL was updated, so the flag's 2 is wrong
    m.apply(MemberOp("add", 9, "", [C]))
    assert sorted(m.members) == [1, 5, 9] and m.guessed == set()
    again = Membership(tmp_path / "members.json")
    assert again.load() and sorted(again.members) == [1, 5, 9]


# -- real clusters ---------------------------------------------------------------------------
def _member_id(url: str, name: str) -> str:
    code, body = post(url, "/v3/cluster/member/list", {})
    assert code == 200, body
    return next(m["ID"] for m in body["members"] if m.get("name") == name)


@pytest.mark.parametrize("binary", ["kvraft", pytest.param("etcd", marks=needs_etcd)])
def test_a_removed_member_is_added_back_at_its_peer_url(tmp_path, binary) -> None:
    """etcd's replace procedure for a member whose disk died: remove it, add it again with
    the same peer URL, start it with an empty data dir and ``existing``. kvraft refused the
    add ("etcdserver: ID removed": the id was a hash of the URL) until 2026-12-06."""
    cluster = start_cluster(tmp_path, binary=binary, extra=FAST_FLAGS)
    try:
        leader = cluster.wait_leader()
        gone = next(n for n in sorted(cluster.members) if n != leader)
        old_id = _member_id(cluster.url(leader), gone)
        assert put(cluster.url(leader), "before", "1")[0] == 200
        cluster.stop_member(gone, signal.SIGKILL)
        shutil.rmtree(cluster.members[gone].data_dir)
        code, body = reconfigure(cluster.url(leader), "/v3/cluster/member/remove", {"ID": old_id})
        assert code == 200, body
        code, body = reconfigure(cluster.url(leader), "/v3/cluster/member/add",
                                 {"peerURLs": [cluster.members[gone].peer_url]})
        assert code == 200, body
        new_id = body["member"]["ID"]
        assert new_id != old_id
        cluster.start_member(gone, state="existing")
        wait_until(lambda: get(cluster.url(gone), "before", serializable=True) == {"before": "1"}, 60,
                   what="the replacement to catch up")
        assert put(cluster.url(gone), "after", "2")[0] == 200
        assert _member_id(cluster.url(leader), gone) == new_id
        if binary == "kvraft":  # a restart keeps the id member add gave; its flags did not change
            cluster.stop_member(gone)
            cluster.start_member(gone, state="existing")
            wait_until(lambda: put(cluster.url(gone), "again", "3")[0] == 200, 60, what="the restarted member")
            assert b"they changed since the data dir was created" not in cluster.members[gone].log_path.read_bytes()
    finally:
        cluster.stop()


def _start_alone(cluster, name: str, initial_cluster: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a member that must refuse to start (and return at once)."""
    member = cluster.members[name]
    command = cluster.command(member, initial_cluster, "existing")
    if token is not None:
        command[command.index("--initial-cluster-token") + 1] = token
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _add_m3(cluster):  # type: ignore[no-untyped-def]
    """``member add`` of a new process m3 (not started) through the leader: (leader, m3)."""
    leader = cluster.wait_leader()
    newcomer = cluster.add_process("m3")
    code, body = reconfigure(cluster.url(leader), "/v3/cluster/member/add", {"peerURLs": [newcomer.peer_url]})
    assert code == 200, body
    return leader, newcomer


def test_a_joiner_with_another_token_exits(kv_cluster) -> None:
    """Before: it dialled for ever, every hello failing authentication."""
    cluster = kv_cluster
    leader, newcomer = _add_m3(cluster)
    result = _start_alone(cluster, "m3", cluster.initial_cluster(), token="not-the-cluster's")
    assert result.returncode == 1, result.stderr
    assert "do not hold this member's cluster key: --initial-cluster-token" in result.stderr
    assert not newcomer.data_dir.exists() or not (newcomer.data_dir / "members.json").exists()


def test_a_joiner_whose_initial_cluster_leaves_out_a_founder_exits(kv_cluster) -> None:
    """Before: it started and never dialled the founder it was not told of."""
    cluster = kv_cluster
    leader, newcomer = _add_m3(cluster)
    left_out = next(n for n in ("m0", "m1", "m2") if n != leader)
    names = [n for n in ("m0", "m1", "m2", "m3") if n != left_out]
    result = _start_alone(cluster, "m3", cluster.initial_cluster(names))
    assert result.returncode == 1, result.stderr
    assert "member count is unequal (--initial-cluster has 3, the cluster 4)" in result.stderr
    assert f"members missing from --initial-cluster: {left_out}={cluster.members[left_out].peer_url}" in result.stderr
    # with the whole list it joins
    cluster.start_member("m3", cluster.initial_cluster(), "existing")
    wait_until(lambda: post(cluster.url("m3"), "/v3/maintenance/status", {})[0] == 200, 60, what="m3 to serve")


def test_a_joiner_that_was_not_added_exits(kv_cluster) -> None:
    cluster = kv_cluster
    cluster.wait_leader()
    cluster.add_process("m3")
    result = _start_alone(cluster, "m3", cluster.initial_cluster())
    assert result.returncode == 1, result.stderr
    assert "no member of the cluster has the peer URLs" in result.stderr
    assert "kvctl member add m3 --peer-urls=" in result.stderr


@given(st.integers(1, 6), st.data())
def test_matching_holds_exactly_when_the_flag_lists_the_cluster(size: int, data: st.DataObject) -> None:
    """Property: --initial-cluster (any order, any names, URLs in any order) matches iff it
    names exactly the cluster's members by URL; then every name gets its member's id."""
    members = [Member(100 + i, f"m{i}" if i % 2 else "", [f"http://127.0.0.1:{2000 + 2 * i}",
                                                          f"http://127.0.0.1:{2001 + 2 * i}"]) for i in range(size)]
    remote = _remote(*members)
    chosen = data.draw(st.lists(st.sampled_from(range(size + 1)), unique=True, min_size=1))  # size: a stranger
    initial = {}
    for i in chosen:
        urls = [f"http://127.0.0.1:{2000 + 2 * i}", f"http://127.0.0.1:{2001 + 2 * i}"]
        initial[f"n{i}"] = data.draw(st.permutations(urls))
    own = f"n{data.draw(st.sampled_from(chosen))}"
    exact = sorted(chosen) == list(range(size))
    own_known = int(own[1:]) < size
    if exact:
        assert match_members(initial, own, remote) == {f"n{i}": 100 + i for i in range(size)}
    else:
        with pytest.raises(JoinError, match="no member of the cluster has" if not own_known else
                           "--initial-cluster does not match the cluster's members"):
            match_members(initial, own, remote)
