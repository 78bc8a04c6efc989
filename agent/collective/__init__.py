"""Gradient exchange for data-parallel training: allreduce over MPI, a TCP ring, or loopback.

    import agent.collective as gx
    comm = gx.init()                       # rank, size, rendezvous from the launcher's env
    h = comm.allreduce(grads, op="mean", async_op=True)
    ...                                    # overlap: keep computing
    h.wait()

See docs/design/collective.md.

The names below are imported on first use (PEP 562): importing a submodule that needs none
of them -- ``agent.collective.jobrun``, the wrapper every task of a gang starts, and its rsh
relay -- does not pay for numpy and the communicator (~0.25-0.4 s of a task's start here).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.collective.bootstrap import BACKENDS, init
    from agent.collective.communicator import Communicator, Handle, Statistics
    from agent.collective.errors import (
        PEER_FAILURE_EXIT_CODE,
        CollectiveError,
        CollectiveTimeout,
        DuplicateRank,
        MismatchError,
        PeerFailure,
    )
    from agent.collective.fusion import FusionPolicy
    from agent.collective.loopback import LoopbackWorld, run_ranks
    from agent.collective.rendezvous import FileRendezvous, Rendezvous, TCPStoreRendezvous

_WHERE = {
    "BACKENDS": "bootstrap",
    "init": "bootstrap",
    "Communicator": "communicator",
    "Handle": "communicator",
    "Statistics": "communicator",
    "PEER_FAILURE_EXIT_CODE": "errors",
    "CollectiveError": "errors",
    "CollectiveTimeout": "errors",
    "DuplicateRank": "errors",
    "MismatchError": "errors",
    "PeerFailure": "errors",
    "FusionPolicy": "fusion",
    "LoopbackWorld": "loopback",
    "run_ranks": "loopback",
    "FileRendezvous": "rendezvous",
    "Rendezvous": "rendezvous",
    "TCPStoreRendezvous": "rendezvous",
}

__all__ = [
    "BACKENDS",
    "PEER_FAILURE_EXIT_CODE",
    "CollectiveError",
    "CollectiveTimeout",
    "Communicator",
    "DuplicateRank",
    "FileRendezvous",
    "FusionPolicy",
    "Handle",
    "LoopbackWorld",
    "MismatchError",
    "PeerFailure",
    "Rendezvous",
    "Statistics",
    "TCPStoreRendezvous",
    "init",
    "run_ranks",
]
assert sorted(__all__) == sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
