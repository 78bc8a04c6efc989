"""A member whose data diverged, in a real 3-member cluster of processes on 127.0.0.1:
the leader's periodic check (``--experimental-corrupt-check-time``) names it with a CORRUPT
alarm, after which writes fail with DataLoss and reads go on; restarted with
``--experimental-initial-corrupt-check`` it refuses to start; once it is removed and the
alarm disarmed, the cluster writes again. The divergence is made offline: one record's
value rewritten with a valid checksum, what no check at open can see."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kvraft.server.config import member_id_for
from kvraft.server.local import post
from kvraft.storage.mvcc import MVCCStore
from kvraft.storage.schema import BUCKET_KEY, decode_kv, encode_kv
from tests.server.conftest import FAST_FLAGS, start_cluster
from tests.server.helpers import b64, get, put, reconfigure, wait_until

CORRUPT_MESSAGE = "etcdserver: corrupt cluster"


def rewrite_value(data_dir: Path, key: bytes, value: bytes) -> None:
    """Give the newest record of ``key`` another value, checksum and all."""
    with MVCCStore(data_dir / "mvcc.lmdb", sync=True) as store, store.backend.batch() as batch:
        bucket = batch.dbis[BUCKET_KEY]
        found = None
        for rev_key, raw in batch.txn.cursor(db=bucket):
            if decode_kv(rev_key, raw)[0] == key:
                found = rev_key, decode_kv(rev_key, raw)
        assert found is not None, key
        rev_key, (_, create, mod, version, _old, lease) = found
        batch.txn.put(rev_key, encode_kv(rev_key, key, create, mod, version, value, lease), db=bucket)


def alarms(url: str) -> list[dict]:
    code, body = post(url, "/v3/maintenance/alarm", {"action": "GET"})
    assert code == 200, body
    return body.get("alarms", [])


def test_a_diverged_member_is_refused_at_start_then_caught_by_the_leader(tmp_path) -> None:
    cluster = start_cluster(tmp_path, extra=[*FAST_FLAGS, "--experimental-corrupt-check-time", "1s"])
    try:
        for member in cluster.members.values():
            member.extra = ["--experimental-initial-corrupt-check"]
        for name in cluster.members:  # restart each with the start-up check: all agree, all start
            cluster.stop_member(name)
            cluster.start_member(name)
            cluster.wait_ready(60)
        urls = {name: m.client_url for name, m in cluster.members.items()}
        for index in range(20):
            assert put(urls["m0"], f"k{index:02d}", f"v{index}")[0] == 200
        for url in urls.values():  # every member has applied them all (a serializable read of each)
            wait_until(lambda url=url: len(get(url, "k", "l", serializable=True)) == 20)

        victim = next(name for name in urls if name != cluster.leader())
        others = [name for name in urls if name != victim]
        cluster.stop_member(victim)
        rewrite_value(cluster.members[victim].data_dir, b"k07", b"not what was written")

        # 1. it starts, and the leader's round raises its CORRUPT alarm
        cluster.members[victim].extra = []
        cluster.start_member(victim)
        victim_id = member_id_for([cluster.members[victim].peer_url], cluster.token)
        wait_until(lambda: alarms(urls[others[0]]) != [], timeout_s=60, what="a CORRUPT alarm")
        assert alarms(urls[others[0]]) == [{"memberID": str(victim_id), "alarm": "CORRUPT"}]

        for url in urls.values():
            wait_until(lambda url=url: alarms(url) != [], what="the alarm everywhere")
            code, body = put(url, "after", "x")
            assert (code, body["code"], body["error"]) == (500, 15, CORRUPT_MESSAGE)
            code, body = post(url, "/v3/kv/range", {"key": b64("k00")})
            assert code == 200 and body["count"] == "1"  # reads go on
            code, body = post(url, "/v3/maintenance/status", {})
            assert f"memberID:{victim_id} alarm:CORRUPT " in body["errors"]
        code, body = post(urls[others[0]], "/v3/lease/grant", {"TTL": 30})
        assert (code, body["code"]) == (500, 15)

        # 2. restarted with the start-up check, it refuses to start
        cluster.stop_member(victim)
        cluster.members[victim].extra = ["--experimental-initial-corrupt-check"]
        cluster.start_member(victim)
        process = cluster.members[victim].process
        assert process is not None
        assert process.wait(60) == 1
        log = cluster.members[victim].log_path.read_text()
        assert "found data inconsistency with peers" in log, log[-2000:]

        # 3. the operator's way out: remove the member, disarm, write again
        code, body = reconfigure(urls[others[0]], "/v3/cluster/member/remove", {"ID": str(victim_id)})
        assert code == 200, body
        cluster.stop_member(victim)
        code, body = post(urls[others[0]], "/v3/maintenance/alarm",
                          {"action": "DEACTIVATE", "memberID": str(victim_id), "alarm": "CORRUPT"})
        assert code == 200, body
        deadline = time.monotonic() + 30
        while put(urls[others[1]], "after", "x")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert get(urls[others[0]], "after") == {"after": "x"}
        assert alarms(urls[others[1]]) == []
    finally:
        cluster.stop()


def test_hashkv_right_after_a_write_hashes_the_write(tmp_path) -> None:
    """The hash runs on a worker thread, which reads the disk: the applied writes held for the
    next group commit must be committed first, or the hash is of an older revision than the
    header says (the corruption check then compared a leader's stale hash with its peers')."""
    cluster = start_cluster(tmp_path, size=1, extra=FAST_FLAGS)
    try:
        url = cluster.url("m0")
        for index in range(5):
            assert put(url, "k", f"v{index}")[0] == 200
            code, now = post(url, "/v3/maintenance/hashkv", {})
            revision = int(now["header"]["revision"])
            time.sleep(0.3)  # past the group commit
            code, later = post(url, "/v3/maintenance/hashkv", {"revision": revision})
            assert code == 200 and now["hash"] == later["hash"], (now, later)
    finally:
        cluster.stop()


def test_the_compact_hash_check_catches_a_diverged_member_under_a_write_load(tmp_path) -> None:
    """``--feature-gates=CompactHashCheck=true``: the leader compares the hashes the members
    recorded at a compaction, which writes going on meanwhile do not change. A healthy
    cluster's compaction checks clean; after one member's record is rewritten offline, the
    next compaction names that member."""
    cluster = start_cluster(tmp_path, extra=[*FAST_FLAGS, "--feature-gates", "CompactHashCheck=true",
                                             "--compact-hash-check-time", "200ms"])
    stop_writing = threading.Event()

    def write_on(url: str) -> None:
        index = 0
        while not stop_writing.is_set():
            put(url, f"load{index % 50:02d}", str(index))
            index += 1

    def compact_now(url: str) -> int:
        code, body = post(url, "/v3/kv/range", {"key": b64("k00")})
        revision = int(body["header"]["revision"])
        code, body = post(url, "/v3/kv/compaction", {"revision": revision, "physical": True})
        assert code == 200, body
        return revision

    try:
        urls = {name: m.client_url for name, m in cluster.members.items()}
        for index in range(20):
            assert put(urls["m0"], f"k{index:02d}", f"v{index}")[0] == 200
        for url in urls.values():
            wait_until(lambda url=url: len(get(url, "k", "l", serializable=True)) == 20)
        leader = cluster.leader()
        victim = next(name for name in urls if name != leader)
        others = [name for name in urls if name != victim]

        writer = threading.Thread(target=write_on, args=(urls[leader],), daemon=True)
        writer.start()
        first = compact_now(urls[leader])
        leader_log = cluster.members[leader].log_path
        wait_until(lambda: f"successfully checked hash on whole cluster: revision {first} " in leader_log.read_text(),
                   timeout_s=30, what="the leader's clean compaction hash check")
        assert alarms(urls[leader]) == []

        stop_writing.set()
        writer.join(30)
        cluster.stop_member(victim)
        rewrite_value(cluster.members[victim].data_dir, b"k07", b"not what was written")
        cluster.start_member(victim)
        cluster.wait_ready(60)
        stop_writing.clear()
        writer = threading.Thread(target=write_on, args=(urls[others[0]],), daemon=True)
        writer.start()
        # (the victim lost its recorded hashes with its restart; this compaction is the one compared)
        compact_now(urls[others[0]])
        victim_id = member_id_for([cluster.members[victim].peer_url], cluster.token)
        wait_until(lambda: alarms(urls[others[0]]) != [], timeout_s=60, what="a CORRUPT alarm")
        assert alarms(urls[others[0]]) == [{"memberID": str(victim_id), "alarm": "CORRUPT"}]
    finally:
        stop_writing.set()
        cluster.stop()


def test_hashkv_without_a_revision_is_live_at_a_compaction_point(tmp_path) -> None:
    """HashKV without a revision, and so the periodic check's own hash, is the live hash
    (etcd's ``HashByRev(0)``), not the one a compaction at the current revision recorded:
    with the recorded one (its compaction point the previous one), a peer without the
    record (restarted, or its compaction job not run yet) answers the live hash and looks
    compacted past the leader, and the periodic check raised a false CORRUPT alarm. Asked
    by number, the revision answers the recorded hash, as etcd's."""
    cluster = start_cluster(tmp_path, extra=[*FAST_FLAGS, "--corrupt-check-time", "200ms"])
    try:
        urls = {name: m.client_url for name, m in cluster.members.items()}
        for index in range(10):
            assert put(urls["m0"], f"k{index}", "v")[0] == 200
        leader = cluster.leader()
        code, body = post(urls[leader], "/v3/kv/range", {"key": b64("k0")})
        revision = int(body["header"]["revision"])
        code, body = post(urls[leader], "/v3/kv/compaction", {"revision": revision, "physical": True})
        assert code == 200, body
        for url in urls.values():
            # (a member that has not applied the compaction yet answers both with -1: wait for it)
            wait_until(lambda url=url: post(url, "/v3/maintenance/hashkv", {})[1].get("compact_revision")
                       == str(revision), what="the compaction applied")
            wait_until(lambda url=url: post(url, "/v3/maintenance/hashkv", {"revision": revision})[1]
                       .get("compact_revision") == "-1", what="the compaction's recorded hash")
            code, live = post(url, "/v3/maintenance/hashkv", {})  # (without a revision: still the live one)
            assert code == 200 and live["compact_revision"] == str(revision), live
        time.sleep(1.0)  # ~5 rounds of the periodic check, all comparing live hashes
        assert alarms(urls[leader]) == []
    finally:
        cluster.stop()
