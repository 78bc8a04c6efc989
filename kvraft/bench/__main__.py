"""``python -m kvraft.bench WORKLOAD [flags]``: put, range, txn-put, mixed (``kv_load``);
watch-fanout, lease-keepalive, lock (``watch_load``); watch-suite (``feature_suite``);
storage (``storage``: the LMDB log and MVCC store alone); server-vs-etcd
(``server_compare``: the server targets, kvraft and etcd side by side); cluster-load
(``cluster_load``: simulated agents and a binder, step by step, kvraft and etcd); paired
(``paired``: an A/B of kvraft source trees, bursts interleaved); raft-core (``raft_core``: the
Raft core's CPU per replicated write, no I/O); scoped-tokens (``scoped_tokens``: what the
agent's per-attempt tokens cost); range-stream (``range_stream``: a member's memory while it
lists many keys, one range against the streamed range); failover (``failover``: a write through a
follower right after the leader is killed, kvraft and etcd); numbered (``numbered``: what numbering
a write for the at-most-once table costs, kvraft's client numbered against plain); frozen-member
(``frozen``: a read, a watch and a CLI read on a member that froze, keepalive on and off; what
heartbeats cost a member with many idle watches); startup (``startup``: from the processes' start to the
first acknowledged write, new and restarted clusters, kvraft and etcd); defrag-online and
snapshot-stall (``large_store``: what defragmenting the leader, and the Raft snapshots of a
large store, cost the cluster's writes, kvraft and etcd); rolling-restart and remove-leader
(``rolling``: a client's puts while each member is restarted in turn, or while the leader is
removed, kvraft and etcd); net-faults (``net_faults``: puts while peer links lose packets or the
network keeps changing shape, kvraft and etcd)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from kvraft.bench import (
    cluster_load,
    failover,
    feature_suite,
    frozen,
    kv_load,
    large_store,
    net_faults,
    numbered,
    paired,
    raft_core,
    range_stream,
    rolling,
    scoped_tokens,
    server_compare,
    startup,
    storage,
    watch_load,
)
from kvraft.bytecode import compile_packages

WORKLOADS: dict[str, Callable[[str, list[str]], int]] = {
    **{name: kv_load.main for name in ("put", "range", "txn-put", "mixed")},
    **{name: watch_load.main for name in watch_load.WORKLOADS},
    "watch-suite": feature_suite.main,
    "storage": storage.main,
    "server-vs-etcd": server_compare.main,
    "cluster-load": cluster_load.main,
    "paired": paired.main,
    "raft-core": raft_core.main,
    "scoped-tokens": scoped_tokens.main,
    "range-stream": range_stream.main,
    "failover": failover.main,
    "numbered": numbered.main,
    "frozen-member": frozen.main,
    "startup": startup.main,
    "defrag-online": large_store.main,
    "snapshot-stall": large_store.main,
    "rolling-restart": rolling.main,
    "remove-leader": rolling.main,
    "net-faults": net_faults.main,
}


def main(argv: list[str]) -> int:
    compile_packages()  # (the members start from bytecode, as installed: kvraft.bytecode)
    if not argv or argv[0] not in WORKLOADS:
        print(f"usage: python -m kvraft.bench {{{'|'.join(WORKLOADS)}}} [flags]", file=sys.stderr)
        return 2
    return WORKLOADS[argv[0]](argv[0], argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
