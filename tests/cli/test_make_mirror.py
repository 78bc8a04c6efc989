"""``kvctl make-mirror``: a prefix of one kvraft cluster copied to another and kept in sync
(base at one revision, then every source revision as one txn on the destination); the
argument errors compared with etcdctl's."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from kvclusters import Runtime, etcdctl_path, start_runtime, started
from kvctl_harness import run_etcdctl, run_kvctl

from kvraft.client import Op, SyncClient

KVCTL = [sys.executable, "-m", "kvraft.cli"]


@pytest.fixture(scope="module")
def two_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Runtime]]:
    base = tmp_path_factory.mktemp("mirror")
    with started(("kvraft", base / "src"), ("kvraft", base / "dst")) as (source, dest):
        yield source, dest


def _eventually(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _dump(client: SyncClient, prefix: str) -> dict[str, str]:
    return {kv.key.decode(): kv.value.decode() for kv in client.get(prefix, prefix=True).kvs}


def test_make_mirror_copies_the_base_then_follows_updates(two_clusters: tuple[Runtime, Runtime]) -> None:
    source, dest = two_clusters
    with SyncClient(source.endpoints) as src, SyncClient(dest.endpoints) as dst:
        for i in range(25):
            src.put(f"mm/base/{i:02d}", f"v{i}")
        src.put("outside/key", "not mirrored")
        proc = subprocess.Popen(
            [*KVCTL, f"--endpoints={source.endpoints[0]}", "make-mirror", "--prefix", "mm/", "--dest-prefix", "copy/",
             "--report-interval", "300ms", dest.endpoints[0]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
        try:
            want = {f"copy/base/{i:02d}": f"v{i}" for i in range(25)}
            _eventually(lambda: _dump(dst, "copy/") == want, "the base copy")
            src.put("mm/new", "1")
            src.delete("mm/base/00")
            src.txn().then(Op.put("mm/t1", "a"), Op.put("mm/t2", "b"), Op.delete("mm/base/01")).commit()
            del want["copy/base/00"], want["copy/base/01"]
            want.update({"copy/new": "1", "copy/t1": "a", "copy/t2": "b"})
            _eventually(lambda: _dump(dst, "copy/") == want, "the updates")
            assert dst.get("outside/", prefix=True).kvs == ()
            assert not dst.get("mm/", prefix=True).kvs
            assert proc.stdout is not None
            counts = []
            while not counts or counts[-1] < 25 + 5:  # 25 base puts, then 5 events
                line = proc.stdout.readline()
                assert line, proc.stderr.read() if proc.stderr else ""
                counts.append(int(line))
            assert counts == sorted(counts)
        finally:
            proc.kill()
            proc.communicate(timeout=30)


def test_no_dest_prefix_mirrors_to_the_root(two_clusters: tuple[Runtime, Runtime]) -> None:
    source, dest = two_clusters
    with SyncClient(source.endpoints) as src, SyncClient(dest.endpoints) as dst:
        src.put("root/a", "1")
        proc = subprocess.Popen([*KVCTL, f"--endpoints={source.endpoints[0]}", "make-mirror", "--prefix", "root/",
                                 "--no-dest-prefix", dest.endpoints[0]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _eventually(lambda: bool(dst.get("a").kvs), "the key at the root")
            assert dst.get("a").kvs[0].value == b"1"
        finally:
            proc.kill()
            proc.communicate(timeout=30)


def test_rev_resumes_without_a_base_and_max_txn_ops_splits_a_revision(two_clusters: tuple[Runtime, Runtime]) -> None:
    """etcdctl 3.5's ``--rev N``: no base copy, the updates from revision N (a mirror that
    stopped resumes where it was); ``--max-txn-ops``: a source revision with more events is
    written as several txns (the destination's --max-txn-ops would refuse one)."""
    source, dest = two_clusters
    with SyncClient(source.endpoints) as src, SyncClient(dest.endpoints) as dst:
        src.put("rv/before", "not copied: before --rev")
        start = src.put("rv/first", "1").header.revision
        src.txn().then(*(Op.put(f"rv/t{i}", str(i)) for i in range(5))).commit()
        proc = subprocess.Popen(
            [*KVCTL, f"--endpoints={source.endpoints[0]}", "make-mirror", "--prefix", "rv/", "--rev", str(start),
             "--max-txn-ops", "2", dest.endpoints[0]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            want = {"rv/first": "1", **{f"rv/t{i}": str(i) for i in range(5)}}
            _eventually(lambda: _dump(dst, "rv/") == want, "the updates from --rev")
            # the source's 5-put txn arrived as txns of 2, 2 and 1: three destination revisions
            revisions = sorted({kv.mod_revision for kv in dst.get("rv/t", prefix=True).kvs})
            assert len(revisions) == 3 and revisions == list(range(revisions[0], revisions[0] + 3))
        finally:
            proc.kill()
            proc.communicate(timeout=30)
    bad = run_kvctl([f"--endpoints={source.endpoints[0]}", "make-mirror", "--dest-user", "u:p", "--dest-password", "q",
                     dest.endpoints[0]])
    assert (bad.rc, bad.err) == (128, "Error: --dest-user option shouldn't include password when --dest-password is "
                                      "set\n")


@pytest.mark.parametrize("argv", [["make-mirror"], ["make-mirror", "a:1", "b:2"]])
def test_argument_errors_match_etcdctl(argv: list[str]) -> None:
    ours = run_kvctl(["--endpoints=127.0.0.1:1", *argv])
    assert ours.rc == 128 and ours.err.startswith("Error: ")
    if etcdctl_path() is not None:
        golden = run_etcdctl(["--endpoints=127.0.0.1:1", *argv])
        assert (ours.rc, ours.out, ours.err) == (golden.rc, golden.out, golden.err)


def test_dest_prefix_and_no_dest_prefix_conflict() -> None:
    # etcdctl checks this only once the source answers (it hangs on an unreachable one);
    # the text (checked by hand against etcdctl 3.4.23 on a live etcd) and the code agree
    ours = run_kvctl(["--endpoints=127.0.0.1:1", "make-mirror", "--dest-prefix", "x", "--no-dest-prefix", "127.0.0.1:1"])
    assert (ours.rc, ours.err) == (
        128, "Error: `--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one\n")


def test_unreachable_destination_exits_2(two_clusters: tuple[Runtime, Runtime]) -> None:
    source, _dest = two_clusters
    result = run_kvctl([f"--endpoints={source.endpoints[0]}", "--dial-timeout=300ms", "--command-timeout=1s",
                        "make-mirror", "127.0.0.1:1"])
    assert result.rc == 2 and result.err.startswith("Error: context deadline exceeded")


def test_mirror_from_etcd_into_kvraft(two_clusters: tuple[Runtime, Runtime], tmp_path_factory: pytest.TempPathFactory) -> None:
    """The online way from etcd 3.4 into kvraft (docs/kvctl.md): kvctl reads etcd's gateway."""
    import shutil

    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed")
    _source, dest = two_clusters
    etcd = start_runtime("etcd", tmp_path_factory.mktemp("mirror-etcd"))
    try:
        with SyncClient(etcd.endpoints) as src, SyncClient(dest.endpoints) as dst:
            src.put("em/one", "1")
            proc = subprocess.Popen([*KVCTL, f"--endpoints={etcd.endpoints[0]}", "make-mirror", "--prefix", "em/",
                                     dest.endpoints[0]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                _eventually(lambda: _dump(dst, "em/") == {"em/one": "1"}, "the base copy from etcd")
                src.put("em/two", "2")
                src.delete("em/one")
                _eventually(lambda: _dump(dst, "em/") == {"em/two": "2"}, "the updates from etcd")
            finally:
                proc.kill()
                proc.communicate(timeout=30)
    finally:
        etcd.stop()
