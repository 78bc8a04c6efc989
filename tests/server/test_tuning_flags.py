"""etcd's tuning and logging flags a member takes (kvraft refused them at start before):
``--backend-batch-interval``/``--backend-batch-limit``, ``--experimental-compaction-batch-limit``,
``--experimental-warning-apply-duration``, ``--log-package-levels``, and the ones kvraft takes
but needs nothing for (``--experimental-enable-lease-checkpoint``,
``--experimental-backend-bbolt-freelist-type``, ``--max-concurrent-streams``).

Two one-member clusters side by side, one with the flags and one without, show each flag's
effect through the member's own metrics and log."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvraft.server.local import LocalCluster, post
from tests.server.helpers import b64, get, put

TUNED = [
    "--backend-batch-interval", "1h", "--backend-batch-limit", "5",
    "--experimental-compaction-batch-limit", "2",
    "--experimental-warning-apply-duration", "1ns",
    "--log-package-levels", "etcdserver=WARNING,raft=DEBUG",
    "--experimental-enable-lease-checkpoint=false",
    "--experimental-backend-bbolt-freelist-type", "map",
    "--max-concurrent-streams", "100",
]


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> Iterator[dict[str, LocalCluster]]:
    base = tmp_path_factory.mktemp("tuning")
    clusters = {"tuned": LocalCluster(1, base / "tuned", extra_args=TUNED), "default": LocalCluster(1, base / "default")}
    try:
        for cluster in clusters.values():
            cluster.start(timeout_s=60)
            cluster.wait_leader(60)
        yield clusters
    finally:
        for cluster in clusters.values():
            cluster.stop()


def _metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if not sample.labels}


def _value(url: str, name: str) -> float:
    return _metrics(url).get(name, 0.0)


def _settled(url: str) -> float:
    """The member's backend commit count once start-up's writes are committed."""
    time.sleep(0.5)
    return _value(url, "etcd_disk_backend_commit_duration_seconds_count")


def _log(cluster: LocalCluster) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in cluster.members["m0"].log_path.read_text().splitlines()
            if line.startswith("{")]


def test_backend_batch_limit_and_interval_decide_when_applied_writes_commit(members) -> None:
    tuned, default = members["tuned"].url("m0"), members["default"].url("m0")
    commits = "etcd_disk_backend_commit_duration_seconds_count"
    # the tuned member may hold some of start-up's ops: put until a commit, then none is held
    # (the commit comes inside the apply that reaches the limit, before its answer)
    start = _value(tuned, commits)
    for i in range(6):
        assert put(tuned, f"settle{i}", "v")[0] == 200
        if _value(tuned, commits) > start:
            break
    else:
        raise AssertionError("six ops under a limit of five never committed")
    before = {"tuned": _value(tuned, commits), "default": _settled(default)}
    for i in range(4):
        assert put(tuned, f"held{i}", "v")[0] == 200
        assert put(default, f"held{i}", "v")[0] == 200
    time.sleep(0.5)  # five times the default interval
    assert _value(tuned, commits) == before["tuned"], "four ops under a limit of five, an hour's interval: no commit yet"
    assert _value(default, commits) > before["default"]
    assert put(tuned, "fifth", "v")[0] == 200
    assert _value(tuned, commits) == before["tuned"] + 1
    # held writes are served all the same
    assert get(tuned, "held0") == {"held0": "v"}


def test_warning_apply_duration_sets_what_counts_as_slow(members) -> None:
    tuned, default = members["tuned"].url("m0"), members["default"].url("m0")
    assert put(tuned, "slow", "v")[0] == 200
    assert put(default, "slow", "v")[0] == 200
    assert _value(tuned, "etcd_server_slow_apply_total") >= 1
    assert _value(default, "etcd_server_slow_apply_total") == 0
    slow = [line for line in _log(members["tuned"]) if line["msg"] == "apply request took too long"]
    assert slow and slow[0]["expected-duration"] == "0ms", slow[:1]
    # and every apply is timed, by op and outcome, as etcd's etcd_server_apply_duration_seconds
    with urllib.request.urlopen(default + "/metrics", timeout=10) as response:
        text = response.read().decode()
    counts = {(sample.labels.get("op"), sample.labels.get("success"), sample.labels.get("version")): sample.value
              for family in text_string_to_metric_families(text) for sample in family.samples
              if sample.name == "etcd_server_apply_duration_seconds_count"}
    assert counts.get(("Put", "true", "v3"), 0) >= 1, counts


def test_compaction_batch_limit_splits_the_deletes(members) -> None:
    pauses = "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds_count"
    counts = {}
    for name in ("tuned", "default"):
        url = members[name].url("m0")
        before = _value(url, pauses)
        revision = 0
        for i in range(10):
            code, body = put(url, "compacted", str(i))
            assert code == 200, body
            revision = int(body["header"]["revision"])
        code, body = post(url, "/v3/kv/compaction", {"revision": revision, "physical": True})
        assert code == 200, body
        counts[name] = _value(url, pauses) - before
    # nine old revisions of the key (plus whatever else is older): batches of two pause
    # the writers at least four times before the last batch; one batch of 1,000 never
    assert counts["tuned"] >= 4
    assert counts["default"] == 0
    code, body = post(members["tuned"].url("m0"), "/v3/kv/range", {"key": b64("compacted")})
    assert code == 200 and body["kvs"][0]["value"] == b64("9"), body


def test_log_package_levels_set_each_loggers_level(members) -> None:
    tuned, default = _log(members["tuned"]), _log(members["default"])

    def said(lines: list[dict], logger: str, level: str = "") -> bool:  # type: ignore[type-arg]
        return any(line["logger"] == logger and (not level or line["level"] == level) for line in lines)

    # etcdserver=WARNING: the driver's "elected leader" (INFO) is gone, the rest is not
    assert said(default, "kvraft.driver", "info") and not said(tuned, "kvraft.driver", "info")
    assert said(tuned, "kvraft.main", "info")
    # raft=DEBUG: the Raft core's trace, on the tuned member alone
    assert said(tuned, "kvraft.raft", "debug") and not said(default, "kvraft.raft")
    assert not [line for line in default if line["level"] == "debug"]


def test_flags_kvraft_needs_nothing_for_are_taken_and_said_so(members) -> None:
    notes = [line["msg"] for line in _log(members["tuned"]) if line["logger"] == "kvraft.main"]
    assert any(note.startswith("--feature-gates=LeaseCheckpoint=false (--experimental-enable-lease-checkpoint=false): kvraft "
                                   "always replicates") for note in notes)
    assert any(note.startswith("--experimental-backend-bbolt-freelist-type=map: ") for note in notes)
    assert not [line for line in _log(members["default"]) if "nothing changes" in line["msg"]]


def test_etcds_start_up_lines_are_logged(members) -> None:
    """What scripts and operators wait for in etcd's log: the member published, ready, and
    how each client listener serves."""
    cluster = members["default"]
    lines = _log(cluster)
    for _ in range(100):  # (the publish is applied a moment after the leader is known)
        if any(line["msg"] == "published local member to cluster through raft" for line in lines):
            break
        time.sleep(0.05)
        lines = _log(cluster)
    (published,) = [line for line in lines if line["msg"] == "published local member to cluster through raft"]
    url = cluster.members["m0"].client_url
    assert published["local-member-attributes"] == f"{{Name:m0 ClientURLs:[{url}]}}"
    assert any(line["msg"] == "ready to serve client requests" for line in lines)
    (serving,) = [line for line in lines if line["msg"].startswith("serving client traffic")]
    assert serving["msg"] == "serving client traffic insecurely; this is strongly discouraged!"
    assert serving["address"] == url.removeprefix("http://")
    assert any(line["msg"] == "raft.node: {0} elected leader {0} at term 2".format(published["local-member-id"])
               for line in lines)
    (added,) = [line for line in lines if line["msg"] == "added member"]
    assert added["added-peer-id"] == published["local-member-id"] and added["added-peer-peer-urls"] == [
        cluster.members["m0"].peer_url]
