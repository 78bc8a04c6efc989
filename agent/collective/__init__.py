"""Gradient exchange for data-parallel training: allreduce over MPI, a TCP ring, or loopback.

    import agent.collective as gx
    comm = gx.init()                       # rank, size, rendezvous from the launcher's env
    h = comm.allreduce(grads, op="mean", async_op=True)
    ...                                    # overlap: keep computing
    h.wait()

See docs/design/collective.md.
"""

from agent.collective.bootstrap import BACKENDS, init
from agent.collective.communicator import Communicator, Handle, Statistics
from agent.collective.errors import (
    PEER_FAILURE_EXIT_CODE,
    CollectiveError,
    CollectiveTimeout,
    MismatchError,
    PeerFailure,
)
from agent.collective.fusion import FusionPolicy
from agent.collective.loopback import LoopbackWorld, run_ranks
from agent.collective.rendezvous import FileRendezvous, Rendezvous, TCPStoreRendezvous

__all__ = [
    "BACKENDS",
    "PEER_FAILURE_EXIT_CODE",
    "CollectiveError",
    "CollectiveTimeout",
    "Communicator",
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
