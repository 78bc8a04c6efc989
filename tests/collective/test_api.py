"""The public surface of agent.collective is pinned: changing it shows up in review."""

from __future__ import annotations

import agent.collective as gx


def test_public_surface() -> None:
    assert sorted(gx.__all__) == [
        "BACKENDS",
        "CollectiveError",
        "CollectiveTimeout",
        "Communicator",
        "DuplicateRank",
        "FileRendezvous",
        "FusionPolicy",
        "Handle",
        "LoopbackWorld",
        "MismatchError",
        "PEER_FAILURE_EXIT_CODE",
        "PeerFailure",
        "Rendezvous",
        "Statistics",
        "TCPStoreRendezvous",
        "init",
        "run_ranks",
    ]
    assert [f.name for f in gx.BACKENDS] == ["mpi", "tcp"]  # priority order
    for name in gx.__all__:
        assert getattr(gx, name) is not None


def test_backend_factories_say_when_they_are_enabled() -> None:
    mpi, tcp = gx.BACKENDS
    assert not mpi.enabled({}) and not tcp.enabled({})
    assert tcp.enabled({"KVRAFT_RENDEZVOUS": "tcp://127.0.0.1:1"})
    assert mpi.enabled({"OMPI_COMM_WORLD_SIZE": "2"}) == _has_mpi4py()


def _has_mpi4py() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True
