"""Numbered writes on a real cluster (``Kvraft-Request-Id``, kvraft.apply.sessions): a copy
of a write already applied is answered with the first copy's answer and changes nothing,
on whichever member it arrives, after restarts, and on a member that caught up from a
snapshot."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from kvraft.server.local import LocalCluster, b64, post
from tests.server.conftest import FAST_FLAGS, converged, serializable_get, start_cluster

HEADER = "Kvraft-Request-Id"


def _numbered(cluster: LocalCluster, name: str, path: str, doc: dict, rid: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    return post(cluster.url(name), path, doc, timeout_s=30, headers={HEADER: rid})  # type: ignore[no-any-return]


def test_a_copy_is_answered_as_the_first_and_applied_once_on_every_member(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path, size=3, extra=FAST_FLAGS)
    try:
        names = list(cluster.members)
        put = {"key": b64("k"), "value": b64("one"), "prev_kv": True}
        code, first = _numbered(cluster, names[0], "/v3/kv/put", put, "a1:1:1")
        assert code == 200, first
        # the same number through each other member: the first answer, nothing applied
        changed = {"key": b64("k"), "value": b64("two"), "prev_kv": True}  # (a client never changes it; shows no apply)
        for name in names[1:]:
            code, again = _numbered(cluster, name, "/v3/kv/put", changed, "a1:1:1")
            assert code == 200, again
            assert again["header"]["revision"] == first["header"]["revision"]
        for copy in converged(cluster, "k"):
            (kv,) = copy["kvs"]
            assert kv["value"] == b64("one") and kv["version"] == "1", copy
        # another number of the same client is a new write, with the first one's prev_kv
        code, second = _numbered(cluster, names[1], "/v3/kv/put", changed, "a1:2:2")
        assert code == 200, second
        assert int(second["header"]["revision"]) > int(first["header"]["revision"])
        assert second["prev_kv"]["value"] == b64("one")
        # and a late copy of seq 1, now below the client's first unanswered: refused, not applied
        code, stale = _numbered(cluster, names[2], "/v3/kv/put", put, "a1:1:1")
        assert code == 412 and stale["code"] == 9 and "already answered" in stale["message"], stale
        assert all(c["kvs"][0]["value"] == b64("two") for c in converged(cluster, "k"))
    finally:
        cluster.stop()


def test_a_compare_and_swap_retried_reports_success_and_counts_once(tmp_path: Path) -> None:
    """The counter increment of the Raft reference's scenario 13: without the number, the
    retry's compare fails and the client believes its increment was lost."""
    cluster = start_cluster(tmp_path, size=3, extra=FAST_FLAGS)
    try:
        leader = cluster.wait_leader(60)
        code, body = post(cluster.url(leader), "/v3/kv/put", {"key": b64("counter"), "value": b64("0")})
        assert code == 200, body
        revision = int(body["header"]["revision"])
        txn = {"compare": [{"key": b64("counter"), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}],
               "success": [{"request_put": {"key": b64("counter"), "value": b64("1")}}]}
        answers = [_numbered(cluster, name, "/v3/kv/txn", txn, "c0ffee:7:7") for name in cluster.members]
        assert all(code == 200 and answer.get("succeeded") is True for code, answer in answers), answers
        assert len({a["header"]["revision"] for _, a in answers}) == 1
        # the same txn unnumbered: its compare fails now, as it would have for a plain retry
        code, plain = post(cluster.url(leader), "/v3/kv/txn", txn)
        assert code == 200 and not plain.get("succeeded"), plain
        for copy in converged(cluster, "counter"):
            assert copy["kvs"][0]["value"] == b64("1") and copy["kvs"][0]["version"] == "2", copy
    finally:
        cluster.stop()


def test_bad_request_ids_are_refused(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path, size=1, extra=FAST_FLAGS)
    try:
        name = next(iter(cluster.members))
        for bad in ["", "x:1:1", "0:1:1", "a1:0:0", "a1:2:3", "a1:1", "a1:-1:1", "a1: 1:1"]:
            code, body = _numbered(cluster, name, "/v3/kv/put", {"key": b64("k"), "value": b64("v")}, bad)
            assert code == 400 and body["code"] == 3 and "Kvraft-Request-Id" in body["message"], (bad, body)
        assert "kvs" not in serializable_get(cluster, name, "k")
        with urllib.request.urlopen(cluster.url(name) + "/version", timeout=10) as response:
            code, version = response.status, json.loads(response.read())
        assert code == 200 and "request-ids" in version["kvraft_features"]
    finally:
        cluster.stop()


def test_answers_survive_restarts_and_reach_a_member_through_a_snapshot(tmp_path: Path) -> None:
    flags = [*FAST_FLAGS, "--snapshot-count", "40", "--snapshot-catchup-entries", "5"]
    cluster = start_cluster(tmp_path, size=3, extra=flags)
    try:
        names = list(cluster.members)
        leader = cluster.wait_leader(60)
        lagging = next(n for n in names if n != leader)
        cluster.stop_member(lagging, sig=signal.SIGKILL)
        others = [n for n in names if n != lagging]
        answers = {}
        for seq in range(1, 121):  # well past --snapshot-count: the lagging member gets a snapshot
            code, body = _numbered(cluster, others[seq % 2], "/v3/kv/put",
                                   {"key": b64(f"k{seq % 7}"), "value": b64(f"v{seq}")}, f"b0b:{seq}:1")
            assert code == 200, body
            answers[seq] = body["header"]["revision"]
        cluster.start_member(lagging)
        cluster.wait_ready(60)
        converged(cluster, "k0")
        with urllib.request.urlopen(cluster.url(lagging) + "/metrics", timeout=10) as response:
            metrics = response.read().decode()
        installed = [line for line in metrics.splitlines() if line.startswith("kvraft_driver_snapshots_applied_total")]
        assert installed and float(installed[0].split()[1]) >= 1, installed
        # every seq is still unanswered for the table (first stayed 1): each copy, on the
        # member that installed the snapshot, answers the first revision and applies nothing
        before = serializable_get(cluster, lagging, "k3")["kvs"][0]
        for seq in (1, 50, 120):
            code, body = _numbered(cluster, lagging, "/v3/kv/put", {"key": b64("k3"), "value": b64("x")}, f"b0b:{seq}:1")
            assert code == 200 and body["header"]["revision"] == answers[seq], (seq, body, answers[seq])
        applied = [line for line in metrics.splitlines() if line.startswith("kvraft_sessions_clients ")]
        assert applied == ["kvraft_sessions_clients 1.0"], applied  # (the snapshot's table: client b0b)
        with urllib.request.urlopen(cluster.url(lagging) + "/metrics", timeout=10) as response:
            after = response.read().decode()
        duplicates = [line for line in after.splitlines() if line.startswith("kvraft_sessions_duplicates_total ")]
        assert duplicates and float(duplicates[0].split()[1]) >= 3, duplicates
        # all members restarted: the table comes back from disk
        for name in names:
            cluster.stop_member(name)
        for name in names:
            cluster.start_member(name)
        cluster.wait_ready(60)
        deadline = time.monotonic() + 30
        while True:  # (refused, code 9, until the member has reached each peer since its start)
            code, body = _numbered(cluster, names[0], "/v3/kv/put", {"key": b64("k3"), "value": b64("y")}, "b0b:77:1")
            if code != 412 or time.monotonic() > deadline:
                break
            assert "request ids are not available" in body["message"], body
            time.sleep(0.2)
        assert code == 200 and body["header"]["revision"] == answers[77], body
        for copy in converged(cluster, "k3"):
            assert copy["kvs"][0] == before, copy
    finally:
        cluster.stop()


def test_the_gate_remembers_a_peer_that_is_down_and_refuses_one_never_heard(tmp_path: Path) -> None:
    """A member proposes numbered writes only while every member announced that it applies
    them (an older version would stop at the entry). One restarted while a peer is down still
    knows that peer's last handshake (peer_features.json); without that file it has heard
    nothing of it and refuses (code 9, nothing proposed), and kvraft's client sends the write
    again unnumbered, once."""
    import asyncio

    from kvraft.client import Client
    from kvraft.server.peer_features import FILE_NAME

    cluster = start_cluster(tmp_path, size=3, extra=FAST_FLAGS)
    try:
        names = list(cluster.members)
        cluster.wait_ready(60)
        cluster.stop_member(names[2], sig=signal.SIGKILL)
        code, listed = post(cluster.url(names[0]), "/v3/cluster/member/list", {})
        dead = next(int(m["ID"]) for m in listed["members"] if m["name"] == names[2])
        refusal = f"request ids are not available: member {dead:x} has not announced them"
        for restart in ("remembers", "forgot"):
            cluster.stop_member(names[1])
            if restart == "forgot":
                (cluster.members[names[1]].data_dir / FILE_NAME).unlink()
            cluster.start_member(names[1])
            cluster.wait_ready(60)
            deadline = time.monotonic() + 30
            while True:  # (until names[1] has reached names[0] since its start)
                code, body = _numbered(cluster, names[1], "/v3/kv/put", {"key": b64("b"), "value": b64("1")},
                                       f"d1:{1 if restart == 'remembers' else 2}:1")
                if code == 200 or refusal in str(body) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if restart == "remembers":
                assert code == 200, body  # (was refused: the member knew nothing of the dead peer)
        assert code == 412 and body["code"] == 9 and refusal in body["message"], body
        assert serializable_get(cluster, names[0], "b")["kvs"][0]["version"] == "1"  # the refused one: nothing

        async def plain_put() -> int:
            async with Client([cluster.url(names[1])]) as client:
                return (await client.put("b", "2")).header.revision

        assert asyncio.run(plain_put()) > 0
        assert serializable_get(cluster, names[1], "b")["kvs"][0]["value"] == b64("2")
        cluster.start_member(names[2])
        cluster.wait_ready(60)
        deadline = time.monotonic() + 30
        while True:  # once names[1] has reached names[2], it takes numbers again
            code, body = _numbered(cluster, names[1], "/v3/kv/put", {"key": b64("b"), "value": b64("3")}, "d1:3:3")
            if code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert code == 200, body
    finally:
        cluster.stop()


def test_numbered_writes_with_auth_on(tmp_path: Path) -> None:
    """With auth on, a numbered write goes through the permission check and the Auth applier
    as any write (the number wraps the write tagged with its caller): allowed, it applies once;
    refused, nothing is applied or kept."""
    import asyncio

    from kvraft.client import Client, PermissionDeniedError

    cluster = start_cluster(tmp_path, size=1, extra=FAST_FLAGS)
    try:
        url = cluster.url(next(iter(cluster.members)))
        for path, doc in [("/v3/auth/user/add", {"name": "root", "password": "rootpw"}),
                          ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                          ("/v3/auth/user/add", {"name": "alice", "password": "alicepw"}),
                          ("/v3/auth/enable", {})]:
            code, body = post(url, path, doc)
            assert code == 200, (path, body)

        async def writes() -> None:
            async with Client([url], user="root", password="rootpw") as root:
                first = await root.put("k", "v")
                assert (await root.get("k")).kvs[0].mod_revision == first.header.revision
            async with Client([url], user="alice", password="alicepw") as alice:
                with pytest.raises(PermissionDeniedError):
                    await alice.put("k", "w")
            async with Client([url], user="root", password="rootpw") as root:
                assert (await root.get("k")).kvs[0].version == 1

        asyncio.run(writes())
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            metrics = response.read().decode()
        applied = [line for line in metrics.splitlines() if line.startswith("kvraft_sessions_writes_applied_total ")]
        assert applied and float(applied[0].split()[1]) == 1.0, applied  # root's put (alice's refused before proposing)
    finally:
        cluster.stop()


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def test_concurrent_numbered_puts_share_entries_and_their_copies_apply_nothing(tmp_path: Path) -> None:
    """The fast path coalesces numbered puts of one loop turn into one entry, as plain ones;
    each still applies once and its copy gets its own answer."""
    import asyncio

    import aiohttp

    cluster = start_cluster(tmp_path, size=3, extra=FAST_FLAGS)
    try:
        url = cluster.url(cluster.wait_leader(60))

        async def burst() -> list[int]:
            async with aiohttp.ClientSession() as session:
                async def put(seq: int) -> int:
                    doc = {"key": b64(f"c/{seq}"), "value": b64(f"v{seq}")}
                    async with session.post(url + "/v3/kv/put", json=doc, headers={HEADER: f"e1:{seq}:1"}) as response:
                        assert response.status == 200, await response.text()
                        return int((await response.json())["header"]["revision"])

                return await asyncio.gather(*(put(seq) for seq in range(1, 41)))

        entries = _metric(url, "kvraft_driver_entries_applied_total")
        first = asyncio.run(burst())
        assert len(set(first)) == 40  # each its own revision
        assert _metric(url, "kvraft_driver_entries_applied_total") - entries < 40  # some shared an entry
        assert asyncio.run(burst()) == first  # the copies: the first answers
        assert _metric(url, "kvraft_sessions_duplicates_total") == 40
        for copy in converged(cluster, "c/7"):
            assert copy["kvs"][0]["version"] == "1", copy
    finally:
        cluster.stop()


def test_a_numbered_lease_grant_copied_through_another_member_is_the_same_lease(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path, size=3, extra=FAST_FLAGS)
    try:
        names = list(cluster.members)
        cluster.wait_ready(60)
        answers = [_numbered(cluster, name, "/v3/lease/grant", {"TTL": "30"}, "f1:1:1") for name in names]
        assert all(code == 200 for code, _ in answers), answers
        assert len({answer["ID"] for _, answer in answers}) == 1, answers
        code, leases = post(cluster.url(names[0]), "/v3/lease/leases", {})
        assert code == 200 and [lease["ID"] for lease in leases["leases"]] == [answers[0][1]["ID"]], leases
    finally:
        cluster.stop()
