"""``CompactionGate``: readers share it, a compaction waits for them and is not starved."""

from __future__ import annotations

import threading

from kvraft.storage.mvcc.gate import CompactionGate

_LIVENESS_S = 30  # a bound for "it happens eventually", not a speed check


def test_a_compaction_waits_for_the_reader_and_runs_when_it_leaves() -> None:
    gate = CompactionGate()
    gate.acquire_shared()
    gate.acquire_shared()  # nested on the same thread: no deadlock
    entered = threading.Event()

    def compact() -> None:
        with gate.exclusive():
            entered.set()

    thread = threading.Thread(target=compact)
    thread.start()
    assert not entered.wait(0.05)  # held shared: the compaction waits
    gate.release_shared()
    assert not entered.wait(0.05)  # still held once
    gate.release_shared()  # the last reader leaves: the waiting compaction is woken
    assert entered.wait(_LIVENESS_S)
    thread.join(_LIVENESS_S)


def test_new_readers_queue_behind_a_waiting_compaction() -> None:
    gate = CompactionGate()
    gate.acquire_shared()
    order: list[str] = []
    compacting = threading.Event()

    def compact() -> None:
        with gate.exclusive():
            order.append("compaction")

    def read() -> None:
        gate.acquire_shared()
        order.append("reader")
        gate.release_shared()

    compactor = threading.Thread(target=compact)
    compactor.start()
    while not gate._waiting:  # the compaction is queued
        compacting.wait(0.001)
    reader = threading.Thread(target=read)
    reader.start()
    assert not compacting.wait(0.05) and order == []
    gate.release_shared()
    compactor.join(_LIVENESS_S)
    reader.join(_LIVENESS_S)
    assert order == ["compaction", "reader"]


def test_readers_without_a_compaction_come_and_go() -> None:
    gate = CompactionGate()
    for _ in range(1000):
        gate.acquire_shared()
        gate.release_shared()
    assert gate._readers == 0
    with gate.exclusive():
        pass
