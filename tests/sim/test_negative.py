"""The checkers have teeth: with a deliberately broken core the simulator finds a violation
within a small range of seeds (and the unbroken core passes the same seeds: the corpus)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import kvraft.raft.quorum as quorum
import kvraft.raft.rawnode as rawnode
from kvraft.sim.runner import run_seed


def _first_failure(seeds: range) -> tuple[int, str] | None:
    for seed in seeds:
        res = run_seed(seed)
        if res.status == "violation":
            return seed, res.message
    return None


@pytest.fixture
def minority_commit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Broken commit rule: an index counts as committed once one voter fewer than a
    majority holds it (a lone leader of three commits by itself)."""

    def broken(voters, match):  # type: ignore[no-untyped-def]
        if not voters:
            return quorum.UNBOUNDED
        indexes = sorted((match.get(v, 0) for v in voters), reverse=True)
        return indexes[max(0, len(indexes) // 2 - 1)]

    monkeypatch.setattr(quorum, "majority_committed_index", broken)
    yield


@pytest.fixture
def unsynced_vote(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Broken durability: a change of term or vote no longer asks for an fsync, so a crash
    right after voting forgets the vote (PySyncObj #84)."""

    def broken(hard, prev, entries, snapshot):  # type: ignore[no-untyped-def]
        return bool(entries) or not snapshot.is_empty()

    monkeypatch.setattr(rawnode, "_must_sync", broken)
    yield


def test_minority_commit_is_caught(minority_commit: None) -> None:
    found = _first_failure(range(0, 40))
    assert found is not None, "no seed in 0-39 caught a leader committing without a majority"


def test_unsynced_vote_is_caught(unsynced_vote: None) -> None:
    found = _first_failure(range(0, 10))
    assert found is not None, "no seed in 0-9 caught a vote sent before it was durable"
    assert found[1].startswith("durable_promises: ") and "vote" in found[1]


@pytest.fixture
def unsynced_append(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Broken durability: appended entries no longer ask for an fsync, so a follower
    acknowledges entries a crash would lose (etcd #14370, PySyncObj #84)."""

    def broken(hard, prev, entries, snapshot):  # type: ignore[no-untyped-def]
        return not snapshot.is_empty() or hard.term != prev.term or hard.vote != prev.vote

    monkeypatch.setattr(rawnode, "_must_sync", broken)
    yield


def test_unsynced_append_is_caught(unsynced_append: None) -> None:
    found = _first_failure(range(0, 10))
    assert found is not None, "no seed in 0-9 caught an acknowledgement before fsync"
    assert found[1].startswith("durable_promises: ") and "acknowledged" in found[1]
