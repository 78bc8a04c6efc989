"""The compatibility test of issue 6: one command sequence through etcdctl against a real
etcd 3.4 and through kvctl against kvraft; outputs compared ignoring ids, revisions and
times (and the server's version string and database size, which are kvraft's own)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from kvclusters import etcdctl_path, start_runtime
from kvctl_harness import Identity, run_etcdctl, run_kvctl

SEQUENCE = [
    ["put", "foo", "bar"], ["put", "foo", "baz", "--prev-kv"], ["put", "foo1", "1", "-w", "json"],
    ["put", "foo2", "2", "-w", "fields"], ["get", "foo"], ["get", "foo", "--prefix", "-w", "json"],
    ["get", "foo", "--prefix", "-w", "fields"], ["get", "foo", "--prefix", "--keys-only"],
    ["get", "foo", "--prefix", "--limit", "1", "--sort-by=KEY", "--order=DESCEND"],
    ["get", "--from-key", ""], ["get", "foo", "--rev", "2"], ["get", "foo", "--rev", "999"],
    ["del", "foo1", "--prev-kv"], ["del", "nothing"], ["del", "foo", "--prefix", "-w", "json"],
    ["txn"], ["lease", "grant", "100"], ["lease", "list"], ["member", "list"], ["member", "list", "-w", "json"],
    ["endpoint", "health", "-w", "json"], ["endpoint", "status", "-w", "json"], ["endpoint", "status", "-w", "fields"], ["alarm", "list"], ["compaction", "3"], ["compaction", "3"],
    ["user", "add", "root:pw"], ["role", "add", "app"],
    ["role", "grant-permission", "app", "readwrite", "/app/", "--prefix"], ["role", "get", "app"],
    ["user", "grant-role", "root", "app"], ["user", "get", "root"], ["user", "list", "-w", "json"],
    ["auth", "enable"], ["get", "foo"], ["--user", "root:pw", "get", "k1"], ["--user", "root:bad", "get", "k1"],
    ["--user", "root:pw", "auth", "disable"], ["user", "delete", "root"], ["role", "delete", "app"],
]
TXN_INPUT = 'value("foo2") = "2"\n\nput foo2 3\nget foo2\n\nput x y\n\n'
_NUMBERS = re.compile(r'("(?:revision|raft_term|create_revision|mod_revision|raftIndex|raftTerm|raftAppliedIndex|'
                      r'dbSize|dbSizeInUse)":)\d+|("(?:Revision|RaftTerm|CreateRevision|ModRevision)" : )\d+')


def ignore_ids_revisions_times(text: str) -> str:
    text = _NUMBERS.sub(lambda m: (m.group(1) or m.group(2)) + "<N>", text)
    text = re.sub(r'("version":|"Version" : )"[\d.]+"', r'\1"<SERVER_VERSION>"', text)
    text = re.sub(r'("DBSize" : |"RaftIndex" : |"RaftAppliedIndex" : )\d+', r"\1<N>", text)
    return re.sub(r"lease <HEX16> granted", "lease <LEASE> granted", text)


@pytest.fixture(scope="module")
def etcd_and_kvraft(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Identity, Identity]]:
    if etcdctl_path() is None:
        pytest.skip("etcdctl not installed (apt-get install etcd-client; .ci/run does)")
    base = tmp_path_factory.mktemp("compat")
    etcd = start_runtime("etcd", base)
    try:
        kvraft = start_runtime("kvraft", base)
    except BaseException:
        etcd.stop()
        raise
    a, b = Identity(etcd), Identity(kvraft)
    a.learn()
    b.learn()
    yield a, b
    etcd.stop()
    kvraft.stop()


def test_same_sequence_same_output_on_etcd_and_kvraft(etcd_and_kvraft: tuple[Identity, Identity]) -> None:
    etcd, kvraft = etcd_and_kvraft
    mismatches = []
    for argv in SEQUENCE:
        stdin = TXN_INPUT if argv == ["txn"] else ""
        golden = run_etcdctl([f"--endpoints={etcd.endpoint()}", *argv], stdin)
        ours = run_kvctl([f"--endpoints={kvraft.endpoint()}", *argv], stdin)
        want = (golden.rc, ignore_ids_revisions_times(etcd.normalize(golden.out)), etcd.normalize(golden.err))
        got = (ours.rc, ignore_ids_revisions_times(kvraft.normalize(ours.out)), kvraft.normalize(ours.err))
        if want != got:
            mismatches.append(f"{' '.join(argv)}:\n  etcdctl/etcd: {want!r}\n  kvctl/kvraft: {got!r}")
    assert not mismatches, "\n".join(mismatches)
