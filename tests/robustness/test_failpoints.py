"""Failpoints: the module's parsing and counting, the debug route, and real members hitting
them (a failed log write stops the member with a failure status; a power cut tears the
unsynced WAL frame and the member recovers)."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from kvraft import failpoints
from kvraft.robustness.cluster import RobustCluster
from kvraft.server.local import LocalCluster, post


def test_parse_count_and_disarm(monkeypatch: pytest.MonkeyPatch) -> None:
    failpoints.arm("t_point", "2*error")
    assert failpoints.armed()["t_point"] == "2*error"
    for _ in range(2):
        with pytest.raises(OSError, match="injected I/O error"):
            failpoints.hit("t_point")
    failpoints.hit("t_point")  # the count is spent: nothing happens
    assert "t_point" not in failpoints.armed()
    failpoints.arm("t_point", "sleep(1)")
    failpoints.arm("t_point", "off")
    assert "t_point" not in failpoints.armed()
    failpoints.hit("never_armed")
    for bad in ("explode", "sleep(x)", "3*", "sleep(10", "-1*error"):
        with pytest.raises(failpoints.FailpointError):
            failpoints.arm("t_point", bad)
    with pytest.raises(failpoints.FailpointError, match="bad failpoint name"):
        failpoints.arm("Bad Name", "error")


def test_env_arms_at_start_and_rejects_garbage() -> None:
    code = "from kvraft import failpoints; print(failpoints.enabled(), failpoints.armed())"
    env = dict(os.environ, KVRAFT_FAILPOINTS="a_b=1*panic; c=50%sleep(5)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True {'a_b': '1*panic', 'c': '50%sleep(5)'}"
    env["KVRAFT_FAILPOINTS"] = "nonsense"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "want NAME=ACTION" in done.stderr
    env.pop("KVRAFT_FAILPOINTS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False {}"


def _put(url: str, key: str) -> int:
    status, _ = post(url, "/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(), "value": "dg=="}, timeout_s=10)
    return status


@pytest.fixture
def cluster(tmp_path: object) -> Iterator[RobustCluster]:
    c = RobustCluster(3, str(tmp_path), env={"KVRAFT_FAILPOINTS": ""})
    try:
        c.start(90)
        yield c
    finally:
        c.stop()


def test_debug_route_only_with_the_variable() -> None:
    with LocalCluster(1) as plain:
        plain.start()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(plain.url("m0") + "/debug/failpoints", timeout=10)
        assert err.value.code in (404, 405)


def _wait_exit(c: RobustCluster, name: str, timeout_s: float = 60) -> int:
    process = c.members[name].process
    assert process is not None
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        assert time.monotonic() < deadline, f"{name} did not stop"
        time.sleep(0.1)
    return process.returncode


def test_failed_log_write_stops_the_member_with_a_failure_status(cluster: RobustCluster) -> None:
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.members if n != leader)
    bad = urllib.request.Request(cluster.url(follower) + "/debug/failpoints/raft_before_save", data=b"boom", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=10)
    assert err.value.code == 400
    cluster.arm(follower, "raft_before_save", "1*error")
    for i in range(20):
        assert _put(cluster.url(leader), f"k{i}") == 200  # the other two keep a quorum
        if not cluster.members[follower].alive():
            break
    assert _wait_exit(cluster, follower) == 1  # was 0: a fatal stop looked like a clean exit
    cluster.restart(follower)
    assert "revision" in cluster.wait_converged(list(cluster.members), 90)


def test_power_cut_tears_the_unsynced_frame_and_the_member_recovers(cluster: RobustCluster) -> None:
    leader = cluster.wait_leader()
    cluster.arm(leader, "wal_before_fdatasync", "1*crash")
    for i in range(20):
        try:
            _put(cluster.url(leader), f"p{i}")
        except OSError:
            break
    assert _wait_exit(cluster, leader) == failpoints.EXIT_CODE
    assert "failpoint wal_before_fdatasync: 1*crash" in cluster.members[leader].log_path.read_text()
    cluster.restart(leader)
    cluster.wait_ready(90)
    assert "revision" in cluster.wait_converged(list(cluster.members), 90)


def test_writes_go_on_while_the_leaders_defragmentation_copies(cluster: RobustCluster) -> None:
    """The copy is held 3 s (``defrag_after_copy``): puts through the leader are answered
    meanwhile, and the defragmentation then completes. Until session 51 the member ran the
    copy on its event loop, so no put was answered until the defragmentation was."""
    import threading

    leader = cluster.wait_leader()
    url = cluster.url(leader)
    for i in range(50):
        assert _put(url, f"d{i}") == 200
    cluster.arm(leader, "defrag_after_copy", "1*sleep(3000)")
    answer: list[object] = []
    defrag = threading.Thread(target=lambda: answer.append(post(url, "/v3/maintenance/defragment", {}, timeout_s=60)))
    defrag.start()
    time.sleep(0.5)  # (inside the held copy: it ends 3 s after it began)
    answered_during = 0
    while defrag.is_alive() and answered_during < 5:
        assert _put(url, f"during{answered_during}") == 200
        answered_during += 1
    still_defragmenting = defrag.is_alive()
    defrag.join(60)
    assert answer == [(200, {})]  # etcd 3.4's DefragmentResponse: no header
    assert answered_during == 5 and still_defragmenting, "puts waited for the defragmentation"
    assert "revision" in cluster.wait_converged(list(cluster.members), 90)


def test_a_member_that_dies_in_the_defragmentations_switch_restarts_on_its_data(cluster: RobustCluster) -> None:
    """``defrag_before_install``: writers paused, the new file whole but not live. The member
    restarts on the old generation (the scratch file is removed at open) and catches up."""
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.members if n != leader)
    for i in range(50):
        assert _put(cluster.url(leader), f"s{i}") == 200
    cluster.arm(follower, "defrag_before_install", "1*panic")
    with pytest.raises(OSError):  # the member exits with the request open
        post(cluster.url(follower), "/v3/maintenance/defragment", {}, timeout_s=60)
    assert _wait_exit(cluster, follower) == failpoints.EXIT_CODE
    leftovers = sorted(p.name for p in cluster.members[follower].data_dir.rglob("*.lmdb.tmp"))
    assert leftovers, "the scratch file the switch was about to install"
    for i in range(20):
        assert _put(cluster.url(leader), f"t{i}") == 200
    cluster.restart(follower)
    cluster.wait_ready(90)
    assert "revision" in cluster.wait_converged(list(cluster.members), 90)
    assert not list(cluster.members[follower].data_dir.rglob("*.lmdb.tmp"))


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@contextlib.contextmanager
def _follower_behind_two_snapshots(tmp_path: object, armed: str) -> Iterator[tuple[RobustCluster, str, str, int]]:
    """Three members taking a snapshot every 100 entries and keeping 5 (``KVRAFT_FAILPOINTS``
    = ``armed``), a follower killed while the leader took two: it needs a snapshot when it
    returns. Yields the cluster, the leader, the follower and the puts made."""
    extra = ["--snapshot-count", "100", "--snapshot-catchup-entries", "5"]
    c = RobustCluster(3, str(tmp_path), extra_args=extra, env={"KVRAFT_FAILPOINTS": armed})
    try:
        c.start(90)
        leader = c.wait_leader()
        url = c.url(leader)
        follower = next(name for name in c.members if name != leader)
        c.kill(follower)
        deadline, i = time.monotonic() + 60, 0
        while _metric(url, "kvraft_driver_snapshots_created_total") < 2:
            assert time.monotonic() < deadline, "the leader took no snapshot"
            assert _put(url, f"n{i}") == 200
            i += 1
        yield c, leader, follower, i
    finally:
        c.stop()


def test_writes_go_on_while_a_snapshot_for_a_follower_is_built(tmp_path: object) -> None:
    """``--snapshot-count 100 --snapshot-catchup-entries 5``: a follower killed while the
    leader takes snapshots needs one when it returns. The leader builds its data then (the
    copy of the whole store, held 4 s here by ``snapshot_build``): puts through it are
    answered meanwhile, and the follower then converges. The snapshots the members take
    hold no data: none of them passed ``snapshot_build``, and saving one costs no copy.
    (Until session 52 every member copied its store into each snapshot it took; until
    session 51 on its event loop, so no put was answered meanwhile.)"""
    with _follower_behind_two_snapshots(tmp_path, "") as (c, leader, follower, i):
        url, deadline = c.url(leader), time.monotonic() + 60
        log = c.members[leader].log_path
        assert "failpoint snapshot_build" not in log.read_text(), "a snapshot taken copied the store"
        assert _metric(url, "etcd_debugging_snap_save_total_duration_seconds_count") >= 2
        c.arm(leader, "snapshot_build", "1*sleep(4000)")
        c.restart(follower)
        while "failpoint snapshot_build" not in log.read_text():
            assert time.monotonic() < deadline, "no snapshot was built for the follower"
            assert _put(url, f"m{i}") == 200
            i += 1
        for j in range(5):
            assert _put(url, f"during{j}") == 200
        assert "sending a snapshot at" not in log.read_text(), "the puts waited for the build"
        assert "revision" in c.wait_converged(list(c.members), 90)
        assert "sending a snapshot at" in log.read_text()


def test_a_member_that_dies_before_installing_a_received_snapshot_installs_it_at_its_next_start(
        tmp_path: object) -> None:
    """``apply_before_restore``: the follower's WAL recorded a snapshot whose store it built as
    the snapshot arrived (``snapshot-<index>.lmdb``), and it dies before switching to it. Its
    next start installs that file (the log no longer holds the entries it covers), deletes it,
    and the member converges."""
    with _follower_behind_two_snapshots(tmp_path, "apply_before_restore=1*panic") as (c, _leader, follower, _puts):
        c.restart(follower)
        assert _wait_exit(c, follower) == failpoints.EXIT_CODE
        store_dir = c.members[follower].data_dir / "mvcc.lmdb"
        kept = sorted(p.name for p in store_dir.glob("snapshot-*.lmdb"))
        assert kept, sorted(p.name for p in store_dir.iterdir())
        c.restart(follower)  # (armed again, but nothing reaches the stage: the start installs it)
        c.wait_ready(90)
        assert "revision" in c.wait_converged(list(c.members), 90)
        assert not list(store_dir.glob("snapshot-*")), sorted(p.name for p in store_dir.iterdir())
        assert "restoring the state machine from the log's snapshot" in c.members[follower].log_path.read_text()


def _metric_from(url: str, prefix: str) -> float:
    """The value of the first line of ``url``'s /metrics that starts with ``prefix`` (0 if none)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(prefix):
                return float(line.split()[-1])
    return 0.0


def test_a_follower_slow_to_build_a_received_snapshot_keeps_answering_the_leader(tmp_path: object) -> None:
    """``snapshot_receive_chunk`` = ``sleep(500)``: a disk that takes 0.5 s per MiB under the
    store a follower builds from a received snapshot (16 MiB here, 8 s). The member that
    could outvote it is killed meanwhile, so the leader keeps its quorum, and check-quorum
    its leadership, only while the follower answers its heartbeats. The snapshot comes on a
    connection of its own (etcd's design), so the heartbeats do not wait behind chunks that
    wait for the disk: the leader leads on in the same term, a linearizable read through it
    is answered during the build, and the follower converges."""
    extra = ["--snapshot-count", "100", "--snapshot-catchup-entries", "5"]
    c = RobustCluster(3, str(tmp_path), extra_args=extra, env={"KVRAFT_FAILPOINTS": "snapshot_receive_chunk=sleep(500)"})
    try:
        c.start(90)
        leader = c.wait_leader()
        url = c.url(leader)
        follower, other = (name for name in c.members if name != leader)
        c.kill(follower)
        value = base64.b64encode(os.urandom(80_000)).decode()
        for i in range(220):
            status, _ = post(url, "/v3/kv/put", {"key": base64.b64encode(b"big%04d" % i).decode(), "value": value},
                             timeout_s=10)
            assert status == 200
        assert _metric(url, "kvraft_driver_snapshots_created_total") >= 2
        c.restart(follower)
        deadline = time.monotonic() + 60
        while True:  # (the follower's client URL answers while it receives)
            with contextlib.suppress(OSError):
                if _metric_from(c.url(follower), "etcd_network_snapshot_receive_inflights_total{") >= 1:
                    break
            assert time.monotonic() < deadline, "the follower received no snapshot"
            time.sleep(0.05)
        c.kill(other)
        status = c.status(leader)
        assert status is not None
        term = int(status["raftTerm"])
        time.sleep(2.5)  # (past check-quorum's election timeout, twice)
        code, doc = post(url, "/v3/kv/range", {"key": base64.b64encode(b"big0000").decode()}, timeout_s=5)
        assert code == 200 and doc.get("count") == "1", (code, doc)
        assert _metric_from(c.url(follower), "etcd_network_snapshot_receive_inflights_total{") >= 1, \
            "the build was over before the check"
        assert "revision" in c.wait_converged([leader, follower], 90)
        status = c.status(leader)
        assert status is not None and status["leader"] == status["header"]["member_id"], status
        assert int(status["raftTerm"]) == term, (term, status)
    finally:
        c.stop()
