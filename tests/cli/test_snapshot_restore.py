"""``kvctl snapshot save / status / restore`` against kvraft, end to end: keys written to a
source member, saved through ``maintenance/snapshot`` (the framed, checksummed stream),
restored into three new data dirs, a 3-member cluster started from them, the keys read
back from every member; and the refusals (existing data dir, damaged file, bad flags)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvclusters import FAST_FLAGS, Runtime, etcdctl_path, start_runtime
from kvctl_harness import run_etcdctl, run_kvctl

from kvraft.client import SyncClient
from kvraft.server.local import LocalCluster

KEYS = {f"snap/{i:03d}": f"value-{i}" for i in range(120)}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Path, int]]:
    """A kvraft member with data, and a snapshot of it saved by kvctl: (runtime, file, revision)."""
    base = tmp_path_factory.mktemp("snapsrc")
    rt = start_runtime("kvraft", base)
    try:
        with SyncClient(rt.endpoints, request_timeout_s=30) as client:
            for key, value in KEYS.items():
                client.put(key, value)
            client.put("snap/000", "overwritten")  # history: two revisions of one key
            client.delete("snap/119")
            client.put("bin\x00key", b"\xff\x00\x01")
            client.user_add("alice", "pw")
            revision = client.get("snap/000").header.revision
        path = base / "kv.snap"
        saved = run_kvctl([f"--endpoints={rt.endpoints[0]}", "snapshot", "save", str(path)])
        assert (saved.rc, saved.out) == (0, f"Snapshot saved at {path}\n"), saved.err
        assert "100.00%" in saved.err and not Path(str(path) + ".part").exists()
        yield rt, path, revision
    finally:
        rt.stop()


def test_status_reads_a_kvraft_snapshot_in_every_format(source: tuple[Runtime, Path, int]) -> None:
    _rt, path, revision = source
    doc = run_kvctl(["snapshot", "status", str(path), "-w", "json"])
    assert doc.rc == 0, doc.err
    status = json.loads(doc.out)
    assert status["revision"] == revision
    assert status["totalKey"] > len(KEYS) + 1  # every revision of every key, plus meta/auth records
    assert status["totalSize"] == path.stat().st_size and status["hash"] > 0
    simple = run_kvctl(["snapshot", "status", str(path)])
    assert simple.out == f"{status['hash']:x}, {revision}, {status['totalKey']}, {_humanize(status['totalSize'])}\n"
    table = run_kvctl(["snapshot", "status", str(path), "-w", "table"]).out
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("|")]
    assert rows == [["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
                    [f"{status['hash']:x}", str(revision), str(status["totalKey"]), _humanize(status["totalSize"])]]
    fields = run_kvctl(["snapshot", "status", str(path), "-w", "fields"]).out
    assert f'"Revision" : {revision}\n' in fields
    again = run_kvctl(["snapshot", "status", str(path), "-w", "json"])
    assert json.loads(again.out)["hash"] == status["hash"]  # stable


def _humanize(size: int) -> str:
    from kvraft.cli.goformat import humanize_bytes

    return humanize_bytes(size)


def test_damaged_or_truncated_snapshots_are_refused(source: tuple[Runtime, Path, int], tmp_path: Path) -> None:
    _rt, path, _revision = source
    data = path.read_bytes()
    truncated = tmp_path / "truncated.snap"
    truncated.write_bytes(data[: len(data) - 40])
    flipped = tmp_path / "flipped.snap"
    flipped.write_bytes(data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])
    for bad in (truncated, flipped):
        status = run_kvctl(["snapshot", "status", str(bad)])
        assert status.rc == 1 and status.err.startswith("Error: snapshot"), status.err
        target = tmp_path / f"{bad.stem}.data"
        restore = run_kvctl(["snapshot", "restore", str(bad), "--data-dir", str(target)])
        assert restore.rc == 1 and "Error: " in restore.err and not target.exists()
        assert not list(tmp_path.glob(f"{bad.stem}.data.restoring-*"))


def test_restore_refuses_what_etcdctl_refuses(source: tuple[Runtime, Path, int], tmp_path: Path) -> None:
    _rt, path, _revision = source
    taken = tmp_path / "taken"
    taken.mkdir()
    result = run_kvctl(["snapshot", "restore", str(path), "--data-dir", str(taken)])
    assert (result.rc, result.err.splitlines()[-1]) == (1, f'Error: data-dir "{taken}" exists')
    result = run_kvctl(["snapshot", "restore", str(path), "--data-dir", str(tmp_path / "x"), "--name", "x"])
    assert result.err.splitlines()[-1] == 'Error: couldn\'t find local name "x" in the initial cluster configuration'
    result = run_kvctl(["snapshot", "restore", str(tmp_path / "nope.snap"), "--data-dir", str(tmp_path / "y")])
    assert (result.rc, result.err.splitlines()[-1]) == (1, f"Error: open {tmp_path / 'nope.snap'}: no such file or directory")
    assert run_kvctl(["snapshot", "restore"]).rc == 128
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_restore_refusals_match_etcdctl(source: tuple[Runtime, Path, int], tmp_path: Path) -> None:
    """The same refusals through etcdctl 3.4 and kvctl: the exit code and the ``Error:``
    line (both log JSON lines on stderr before it). etcdctl checks these before it reads
    the file, so both get the same kvraft snapshot."""
    if etcdctl_path() is None:
        pytest.skip("etcdctl not installed")
    _rt, path, _revision = source
    taken = tmp_path / "taken"
    taken.mkdir()
    cases = [
        [str(path), "--data-dir", str(taken)],
        [str(path), "--data-dir", str(tmp_path / "x"), "--name", "x"],
        [str(tmp_path / "nope.db"), "--data-dir", str(tmp_path / "z")],
        [str(path), "--data-dir", str(tmp_path / "y"), "--initial-advertise-peer-urls", "http://localhost:2390"],
        [],
    ]
    for argv in cases:
        results = []
        for runner in (run_etcdctl, run_kvctl):
            result = runner(["snapshot", "restore", *argv])
            results.append((result.rc, result.err.strip().splitlines()[-1]))
        assert results[0] == results[1], argv
    assert not any((tmp_path / name).exists() for name in ("x", "y", "z"))


def test_restore_into_three_new_members_serves_every_key(source: tuple[Runtime, Path, int], tmp_path: Path) -> None:
    rt, path, revision = source
    with SyncClient(rt.endpoints) as client:
        old_members = {m.id for m in client.member_list().members}
        old_cluster = client.member_list().header.cluster_id
    cluster = LocalCluster(3, tmp_path / "restored", binary="kvraft", token="restored-cluster", extra_args=FAST_FLAGS)
    try:
        for member in cluster.members.values():
            result = run_kvctl([
                "snapshot", "restore", str(path), "--data-dir", str(member.data_dir), "--name", member.name,
                "--initial-cluster", cluster.initial_cluster(), "--initial-cluster-token", cluster.token,
                "--initial-advertise-peer-urls", member.peer_url,
            ])
            assert (result.rc, result.out) == (0, ""), result.err
            assert '"msg": "restored snapshot"' in result.err
        cluster.start(timeout_s=120)
        founded = next(iter(rt.cluster.members.values())).data_dir  # a member that founded its cluster
        def layout(data_dir: Path) -> list[str]:  # (peer_features.json: only where a member has peers)
            return sorted(p.name for p in data_dir.iterdir() if p.name != "peer_features.json")

        for member in cluster.members.values():  # the same layout (the same Raft log storage)
            assert layout(member.data_dir) == layout(founded)
        for member in cluster.members.values():
            with SyncClient([member.client_url], request_timeout_s=30) as client:
                got = client.get("snap/", prefix=True)
                values = {kv.key.decode(): kv.value.decode() for kv in got.kvs}
                want = {**KEYS, "snap/000": "overwritten"}
                del want["snap/119"]
                assert values == want, member.name
                assert got.header.revision >= revision  # the revision carries over
                assert client.get("bin\x00key").kvs[0].value == b"\xff\x00\x01"
                assert client.get("snap/000", revision=2).kvs[0].value == b"value-0"  # history too
                members = client.member_list()
                assert {m.id for m in members.members}.isdisjoint(old_members)
                assert sorted(m.name for m in members.members) == ["m0", "m1", "m2"]
                assert members.header.cluster_id != old_cluster
                assert "alice" in client.user_list().users
        with SyncClient([m.client_url for m in cluster.members.values()], request_timeout_s=30) as client:
            put = client.put("after/restore", "yes")
            assert put.header.revision > revision
        for member in cluster.members.values():  # the new cluster replicates new writes
            with SyncClient([member.client_url], request_timeout_s=30) as client:
                assert client.get("after/restore").kvs[0].value == b"yes"
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_a_snapshot_path_that_is_a_directory_is_etcdctls_error(tmp_path: Path) -> None:
    """restore said 'open DIR: no such file or directory' of a directory that exists, and
    status printed Python's "[Errno 21] Is a directory: 'DIR'"; etcdctl's words instead."""
    result = run_kvctl(["snapshot", "restore", str(tmp_path), "--data-dir", str(tmp_path / "y")])
    assert (result.rc, result.err.splitlines()[-1]) == (1, f"Error: read {tmp_path}: is a directory")
    result = run_kvctl(["snapshot", "status", str(tmp_path)])
    assert (result.rc, result.err.splitlines()[-1]) == (1, f"Error: open {tmp_path}: is a directory")
    assert not (tmp_path / "y").exists()


def test_a_data_dir_that_cannot_be_made_names_it(tmp_path: Path) -> None:
    """A --data-dir under a file (or a directory it may not write) was reported by the
    restore's scratch directory ('open D.restoring-<pid>: not a directory'), a name the
    user never gave; etcdctl names the directory it could not make."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = run_kvctl(["snapshot", "restore", str(afile), "--data-dir", str(afile / "d")])
    assert (result.rc, result.err.splitlines()[-1]) == (1, f"Error: mkdir {afile / 'd'}: not a directory")


def run_kvutl(argv: list[str]) -> tuple[int, str, str]:
    import io

    from kvraft.cli.util import run

    out, err = io.StringIO(), io.StringIO()
    return run(argv, io.StringIO(), out, err), out.getvalue(), err.getvalue()


def test_a_restore_with_a_bumped_revision_sends_old_watchers_to_relist(
        source: tuple[Runtime, Path, int], tmp_path: Path) -> None:
    """etcdutl's ``--bump-revision N --mark-compacted`` (through kvutl): the restored member's
    revision is N past the snapshot's, and every revision up to there reads as compacted, so
    a watcher or informer that resumes from a revision it saw before the restore is told to
    list again rather than waiting for revisions the restored cluster would hand out anew.
    kvctl had neither flag."""
    from kvraft.client import CompactedError, WatchCompactedError

    _rt, path, revision = source
    cluster = LocalCluster(1, tmp_path / "bumped", binary="kvraft", extra_args=FAST_FLAGS)
    member = cluster.members["m0"]
    rc, out, err = run_kvutl(["snapshot", "restore", str(path), "--data-dir", str(member.data_dir), "--name", "m0",
                              "--initial-cluster", cluster.initial_cluster(), "--initial-cluster-token", cluster.token,
                              "--initial-advertise-peer-urls", member.peer_url, "--bump-revision", "1000000",
                              "--mark-compacted"])
    assert (rc, out) == (0, ""), err
    assert f'"revision": {revision + 1_000_000}' in err
    try:
        cluster.start(timeout_s=120)
        with SyncClient([member.client_url], request_timeout_s=30) as client:
            got = client.get("snap/", prefix=True)
            assert got.header.revision == revision + 1_000_000
            assert len(got.kvs) == len(KEYS) - 1 and client.get("snap/000").kvs[0].value == b"overwritten"
            with pytest.raises(CompactedError):
                client.get("snap/000", revision=revision)
            with pytest.raises(WatchCompactedError):
                for _ in client.watch("snap/", prefix=True, start_revision=revision):
                    break
            assert client.put("after/restore", "yes").header.revision == revision + 1_000_001
    finally:
        cluster.stop()
    rc, out, err = run_kvutl(["defrag", "--data-dir", str(member.data_dir)])  # (stopped: etcdutl's offline defrag)
    assert (rc, out, err) == (0, "", "")
    rc, _, err = run_kvutl(["defrag", "--data-dir", str(tmp_path / "nothing")])
    assert rc == 1 and err.startswith(f"Error: Failed to defragment etcd data[{tmp_path / 'nothing'}] (cannot open")


@pytest.mark.parametrize("flags", [["--bump-revision", "5"], ["--mark-compacted"]])
def test_bump_revision_and_mark_compacted_go_together(
        source: tuple[Runtime, Path, int], tmp_path: Path, flags: list[str]) -> None:
    _rt, path, _revision = source
    for run in (run_kvutl, lambda argv: tuple(vars(run_kvctl(argv)).values())):
        rc, _out, err = run(["snapshot", "restore", str(path), "--data-dir", str(tmp_path / "d"), *flags])
        assert (rc, err) == (128, "Error: --mark-compacted required if --revision-bump > 0\n")
    assert not (tmp_path / "d").exists()
    rc, _out, err = run_kvutl(["snapshot", "restore", str(path), "--bump-revision", "-1", "--mark-compacted"])
    assert rc != 0 and '"--bump-revision"' in err


def test_kvutl_status_save_and_version(source: tuple[Runtime, Path, int]) -> None:
    _rt, path, _revision = source
    for fmt in ("simple", "json", "table", "fields"):
        assert run_kvutl(["-w", fmt, "snapshot", "status", str(path)])[:2] == \
            (0, run_kvctl(["-w", fmt, "snapshot", "status", str(path)]).out)
    assert run_kvutl(["snapshot", "save", str(path)])[::2] == \
        (128, "Error: In order to download snapshot use: `kvctl snapshot save ...`\n")
    rc, out, _ = run_kvutl(["version"])
    assert rc == 0 and out.startswith("kvutl version: ") and out.endswith("API version: 3.4\n")


def test_kvutl_hashkv_of_a_snapshot_and_a_data_dir_is_the_members_hash(
        source: tuple[Runtime, Path, int], tmp_path: Path) -> None:
    """etcdutl's ``hashkv``: a kvraft snapshot file and a (stopped) data dir restored from it
    hash as the member does at that revision (``kvctl endpoint hashkv``'s number); a running
    member's data dir, an etcd file, a missing path and bad revisions are refused."""
    rt, path, revision = source
    with SyncClient(rt.endpoints, request_timeout_s=30) as client:
        member = client.hash_kv(revision)
    rc, out, err = run_kvutl(["hashkv", str(path)])
    assert (rc, out) == (0, f"{member.hash}, {revision}, {member.compact_revision}\n"), err
    rc, out, _ = run_kvutl(["-w", "json", "hashkv", str(path)])
    assert json.loads(out) == {"hash": member.hash, "hashRevision": revision, "compactRevision": member.compact_revision}
    rc, out, _ = run_kvutl(["-w", "fields", "hashkv", str(path)])
    assert out == f'"Hash" : {member.hash}\n"Hash revision" : {revision}\n"Compact revision" : {member.compact_revision}\n'
    rc, out, _ = run_kvutl(["-w", "table", "hashkv", str(path)])
    assert "HASH REVISION" in out and str(member.hash) in out
    with SyncClient(rt.endpoints, request_timeout_s=30) as client:
        older = client.hash_kv(revision - 5)
    assert run_kvutl(["hashkv", str(path), "--rev", str(revision - 5)])[1].startswith(f"{older.hash}, {revision - 5}, ")

    data_dir = tmp_path / "restored"
    rc, _, err = run_kvutl(["snapshot", "restore", str(path), "--data-dir", str(data_dir)])
    assert rc == 0, err
    for where in (data_dir, data_dir / "mvcc.lmdb"):
        assert run_kvutl(["hashkv", str(where)])[:2] == (0, f"{member.hash}, {revision}, {member.compact_revision}\n")
    rc, _, err = run_kvutl(["hashkv", str(data_dir), "--rev", str(revision + 1)])
    assert (rc, err) == (1, "Error: mvcc: required revision is a future revision\n")

    running = rt.cluster.members["m0"].data_dir
    rc, _, err = run_kvutl(["hashkv", str(running)])
    assert rc == 1 and "a running member has it open" in err, err
    etcd_file = tmp_path / "etcd.db"
    etcd_file.write_bytes(b"\0" * 8192)
    rc, _, err = run_kvutl(["hashkv", str(etcd_file)])
    assert rc == 1 and "use etcdutl hashkv" in err, err
    rc, _, err = run_kvutl(["hashkv", str(tmp_path / "nothing")])
    assert rc == 1 and "no kvraft store there" in err, err
    assert run_kvutl(["hashkv"]) == (1, "", "Error: accepts 1 arg(s), received 0\n")


def test_kvutl_completion_completes_its_own_commands() -> None:
    rc, out, _ = run_kvutl(["completion", "bash"])
    assert rc == 0 and "_shtab_kvutl_subparsers=('defrag' 'snapshot' 'hashkv' 'completion' 'version')" in out
    assert "--rev" in out and "--data-dir" in out and "kvctl" not in out
    rc, out, _ = run_kvutl(["completion", "fish"])
    assert rc == 0 and "complete -c kvutl" in out and "complete -c kvctl" not in out
    assert run_kvutl(["completion", "powershell"])[0] == 1
