"""``kvctl snapshot restore <etcd snapshot>``: an etcd 3.4 cluster's data (key history, a
compaction point, a deletion, a lease with its key, users and roles) saved from etcd,
restored into a kvraft data dir and served by a kvraft member with the same revisions;
and etcd's hash check on the file (damaged, missing, skipped)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvclusters import FAST_FLAGS, Runtime, start_runtime
from kvctl_harness import run_kvctl

from kvraft.client import CompactedError, SyncClient
from kvraft.server.local import LocalCluster


@pytest.fixture(scope="module")
def etcd_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, object]]]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed")
    base = tmp_path_factory.mktemp("etcdimport")
    rt: Runtime = start_runtime("etcd", base)
    try:
        with SyncClient(rt.endpoints) as client:
            first = client.put("imp/a", "1").header.revision
            client.put("imp/a", "2")
            client.put("imp/b", b"\xff\x00bin")
            client.put("imp/gone", "x")
            client.delete("imp/gone")
            compacted = client.put("imp/a", "3").header.revision
            client.compact(compacted, physical=True)
            lease = client.lease_grant(900)
            client.put("imp/leased", "v", lease=lease.id)
            client.role_add("reader")
            client.role_grant_permission("reader", "READ", "imp/", "imp0")
            client.user_add("carol", "secret")
            client.user_grant_role("carol", "reader")
            final = client.get("imp/", prefix=True)
        path = base / "etcd.db"
        saved = run_kvctl([f"--endpoints={rt.endpoints[0]}", "snapshot", "save", str(path)])
        assert saved.rc == 0, saved.err
        facts: dict[str, object] = {"first": first, "compacted": compacted, "lease": lease.id,
                                    "revision": final.header.revision,
                                    "kvs": {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                                            for kv in final.kvs}}
        yield path, facts
    finally:
        rt.stop()


def test_an_etcd_snapshot_restores_into_a_kvraft_member(etcd_snapshot: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    path, facts = etcd_snapshot
    cluster = LocalCluster(1, tmp_path / "kv", binary="kvraft", token="from-etcd", extra_args=FAST_FLAGS)
    member = cluster.members["m0"]
    result = run_kvctl(["snapshot", "restore", str(path), "--data-dir", str(member.data_dir), "--name", "m0",
                        "--initial-cluster", cluster.initial_cluster(), "--initial-cluster-token", cluster.token,
                        "--initial-advertise-peer-urls", member.peer_url])
    assert (result.rc, result.out) == (0, ""), result.err
    try:
        cluster.start(timeout_s=90)
        with SyncClient([member.client_url], request_timeout_s=30) as client:
            got = client.get("imp/", prefix=True)
            assert {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                    for kv in got.kvs} == facts["kvs"]
            assert got.header.revision == facts["revision"]
            assert client.get("imp/a", revision=int(facts["compacted"])).kvs[0].value == b"3"  # type: ignore[call-overload]
            with pytest.raises(CompactedError):
                client.get("imp/a", revision=int(facts["first"]))  # type: ignore[call-overload]
            ttl = client.lease_time_to_live(int(facts["lease"]), keys=True)  # type: ignore[call-overload]
            assert ttl.granted_ttl == 900 and ttl.keys == (b"imp/leased",)
            assert client.user_get("carol").roles == ("reader",)
            perms = client.role_get("reader").perm
            assert [(p.perm_type, p.key, p.range_end) for p in perms] == [("READ", b"imp/", b"imp0")]
            assert client.put("imp/new", "after").header.revision == int(facts["revision"]) + 1  # type: ignore[call-overload]
            client.user_add("root", "rootpw")
            client.role_add("root")
            client.user_grant_role("root", "root")
            client.auth_enable()
        with SyncClient([member.client_url], user="carol", password="secret") as carol:  # the bcrypt hash carried over
            assert carol.get("imp/b").kvs[0].value == b"\xff\x00bin"
    finally:
        cluster.stop()


def test_etcd_hash_check(etcd_snapshot: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    path, _facts = etcd_snapshot
    data = path.read_bytes()
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    result = run_kvctl(["snapshot", "restore", str(damaged), "--data-dir", str(tmp_path / "d1")])
    assert result.rc == 1 and "expected sha256" in result.err and not (tmp_path / "d1").exists()
    bare = tmp_path / "bare.db"  # as copied from a data dir: no hash
    bare.write_bytes(data[:-32])
    result = run_kvctl(["snapshot", "restore", str(bare), "--data-dir", str(tmp_path / "d2")])
    assert result.rc == 1 and result.err.splitlines()[-1] == "Error: snapshot missing hash but --skip-hash-check=false"
    result = run_kvctl(["snapshot", "restore", str(bare), "--skip-hash-check", "--data-dir", str(tmp_path / "d3")])
    assert result.rc == 0, result.err
    assert (tmp_path / "d3" / "mvcc.lmdb").exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    result = run_kvctl(["snapshot", "restore", str(garbage), "--skip-hash-check", "--data-dir", str(tmp_path / "d4")])
    assert result.rc == 1 and result.err.startswith('{"level"') and not (tmp_path / "d4").exists()
