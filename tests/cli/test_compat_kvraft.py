"""The compatibility test of issue 6: one command sequence through etcdctl against a real
etcd 3.4 and through kvctl against kvraft; outputs compared ignoring ids, revisions and
times (and the server's version string and database size, which are kvraft's own)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from kvclusters import etcdctl_path, started
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
    ["user", "add", "nopw", "--no-password"],
    ["auth", "enable"], ["get", "foo"], ["--user", "root:pw", "get", "k1"], ["--user", "root:bad", "get", "k1"],
    ["--user", "nopw:x", "get", "k1"], ["--user", "root:", "get", "k1"],
    ["--user", "root:pw", "auth", "disable"], ["--user", "root:pw", "get", "k1"],
    ["user", "revoke-role", "root", "app"],
    ["role", "revoke-permission", "app", "/app/", "--prefix"], ["role", "get", "app", "-w", "json"],
    ["user", "add", "bob", "--new-user-password", "pw"], ["user", "passwd", "bob", "--interactive=false"],
    ["user", "get", "bob", "--detail"], ["user", "delete", "bob"],
    ["user", "delete", "nopw"], ["user", "delete", "root"], ["role", "delete", "app"], ["role", "delete", "app"],
    # values, hex, formats, errors
    ["put", "k1", "v1"], ["put", "k2", "v2"], ["get", "k", "--prefix", "--print-value-only"],
    ["get", "k", "--prefix", "--hex"], ["get", "k1", "-w", "table"], ["get", "k1", "-w", "nope"],
    ["get", "k", "--prefix", "--order=SIDEWAYS"], ["get"], ["put", "k3"], ["del"],
    # a lease with a key: keep-alive once, time-to-live, revoke (the key goes with it)
    ["lease", "grant", "600"], ["put", "lk", "lv", "--lease={LEASE}"], ["get", "lk", "-w", "fields"],
    ["lease", "keep-alive", "--once", "{LEASE}"], ["lease", "timetolive", "{LEASE}", "--keys"],
    ["lease", "timetolive", "{LEASE}", "-w", "json"], ["lease", "revoke", "{LEASE}"],
    ["lease", "timetolive", "{LEASE}"], ["lease", "revoke", "{LEASE}"], ["get", "lk"],
    ["put", "nl", "v", "--lease=zz"], ["txn", "-i"],
    ["del", "k1", "--from-key", "-w", "json"], ["get", "", "--from-key", "--keys-only"],
    # maintenance
    ["defrag"], ["alarm", "disarm"], ["alarm", "list"], ["compaction", "--physical", "5"],
    ["watch", "foo", "--rev", "1"], ["watch", "foo", "--rev", "1", "-w", "json"], ["move-leader", "zz"],
    ["member", "remove", "1234"], ["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"],
]
TXN_INPUT = 'value("foo2") = "2"\n\nput foo2 3\nget foo2\n\nput x y\n\n'
_NUMBERS = re.compile(r'("(?:revision|raft_term|create_revision|mod_revision|raftIndex|raftTerm|raftAppliedIndex|'
                      r'dbSize|dbSizeInUse)":)\d+|("(?:Revision|RaftTerm|CreateRevision|ModRevision)" : )\d+')


def ignore_ids_revisions_times(text: str) -> str:
    text = _NUMBERS.sub(lambda m: (m.group(1) or m.group(2)) + "<N>", text)
    text = re.sub(r'("version":|"Version" : )"[\d.]+"', r'\1"<SERVER_VERSION>"', text)
    text = re.sub(r'("DBSize" : |"RaftIndex" : |"RaftAppliedIndex" : )\d+', r"\1<N>", text)
    text = re.sub(r"remaining\(\d+s\)", "remaining(<N>s)", text)  # a second may tick on either side
    text = re.sub(r'("ttl":)\d+', r"\1<N>", text)
    return re.sub(r"lease <HEX16> granted", "lease <LEASE> granted", text)


_GRANTED = re.compile(r"lease ([0-9a-f]+) granted")


def _with_lease(argv: list[str], lease: str) -> list[str]:
    return [arg.replace("{LEASE}", lease) for arg in argv]


@pytest.fixture(scope="module")
def etcd_and_kvraft(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Identity, Identity]]:
    if etcdctl_path() is None:
        pytest.skip("etcdctl not installed (apt-get install etcd-client; .ci/run does)")
    base = tmp_path_factory.mktemp("compat")
    with started(("etcd", base), ("kvraft", base)) as (etcd, kvraft):
        a, b = Identity(etcd), Identity(kvraft)
        a.learn()
        b.learn()
        yield a, b


def test_same_sequence_same_output_on_etcd_and_kvraft(etcd_and_kvraft: tuple[Identity, Identity]) -> None:
    etcd, kvraft = etcd_and_kvraft
    mismatches = []
    leases = ["", ""]
    for argv in SEQUENCE:
        stdin = TXN_INPUT if argv[0] == "txn" else "pw2\n" if argv[:2] == ["user", "passwd"] else ""
        golden = run_etcdctl([f"--endpoints={etcd.endpoint()}", *_with_lease(argv, leases[0])], stdin)
        ours = run_kvctl([f"--endpoints={kvraft.endpoint()}", *_with_lease(argv, leases[1])], stdin)
        for index, result in enumerate((golden, ours)):
            if match := _GRANTED.search(result.out):
                leases[index] = match.group(1)
        want = (golden.rc, ignore_ids_revisions_times(etcd.normalize(golden.out)), etcd.normalize(golden.err))
        got = (ours.rc, ignore_ids_revisions_times(kvraft.normalize(ours.out)), kvraft.normalize(ours.err))
        if want != got:
            mismatches.append(f"{' '.join(argv)}:\n  etcdctl/etcd: {want!r}\n  kvctl/kvraft: {got!r}")
    assert not mismatches, "\n".join(mismatches)
