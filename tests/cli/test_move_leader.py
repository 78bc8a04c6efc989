"""``move-leader`` on 3-member clusters: etcdctl and kvctl on etcd print the same line for
the same transfer; kvctl does the same on kvraft."""

from __future__ import annotations

import time

import pytest
from kvclusters import RUNTIMES, start_runtime
from kvctl_harness import run_etcdctl, run_kvctl

from kvraft.client import SyncClient


def _ids(endpoints: list[str]) -> tuple[int, list[int]]:
    with SyncClient(endpoints) as client:
        status = client.status()
        members = client.member_list().members
    return status.leader, [m.id for m in members if m.id != status.leader]


def _wait_leader(endpoints: list[str], want: int) -> None:
    deadline = time.monotonic() + 60
    while _ids(endpoints)[0] != want:
        assert time.monotonic() < deadline, "leadership did not move"
        time.sleep(0.2)


@pytest.mark.parametrize("runtime_name", RUNTIMES)
def test_move_leader_there_and_back(runtime_name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rt = start_runtime(runtime_name, tmp_path, size=3)
    try:
        endpoints = rt.endpoints
        flag = "--endpoints=" + ",".join(e.split("://")[1] for e in endpoints)
        leader, followers = _ids(endpoints)
        target = followers[0]
        if runtime_name == "etcd":
            golden = run_etcdctl([flag, "move-leader", f"{target:x}"])
            assert (golden.rc, golden.out) == (0, f"Leadership transferred from {leader:x} to {target:x}\n")
        else:
            first = run_kvctl([flag, "move-leader", f"{target:x}"])
            assert (first.rc, first.out) == (0, f"Leadership transferred from {leader:x} to {target:x}\n")
        _wait_leader(endpoints, target)
        back = run_kvctl([flag, "move-leader", f"{leader:x}"])
        assert (back.rc, back.out, back.err) == (0, f"Leadership transferred from {target:x} to {leader:x}\n", "")
        _wait_leader(endpoints, leader)
        wrong = run_kvctl([flag, "move-leader", "1"])
        assert (wrong.rc, wrong.err) == (1, "Error: etcdserver: bad leader transferee\n")
    finally:
        rt.stop()
