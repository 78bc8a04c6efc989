"""The Backend Protocol every transport implements (Horovod's collective-op interface).

Threading rule: a backend is driven by one thread at a time (the communicator serialises
calls: either the caller thread inline or the communication thread). ``abort()`` is the one
method that may be called from any thread: it makes a blocked call fail promptly where the
transport allows it (``interruptible``), and makes every later call fail.

Buffers are 1-D, C-contiguous numpy arrays; reductions are sums (the communicator turns
``mean`` into sum-then-scale). After ``allreduce`` every rank holds bitwise-identical data.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from agent.collective.fusion import FusionPolicy

__all__ = ["Backend", "BackendFactory", "Link"]


@runtime_checkable
class Backend(Protocol):
    name: str
    rank: int
    size: int
    #: fusion defaults measured for this transport
    fusion: FusionPolicy
    #: abort() unblocks a call that is in progress (sockets: yes; MPI: no)
    interruptible: bool

    def allreduce(self, buf: np.ndarray, wire_dtype: np.dtype | None = None) -> None:
        """Sum ``buf`` over all ranks in place; with ``wire_dtype`` the data travels in that
        dtype (fp16/bf16) and is accumulated in ``buf.dtype``."""

    def reduce(self, buf: np.ndarray, root: int) -> None:
        """Sum into ``buf`` on ``root``; other ranks' ``buf`` is scratch afterwards."""

    def broadcast(self, buf: np.ndarray, root: int) -> None: ...

    def allgather(self, send: np.ndarray, recv: np.ndarray) -> None:
        """``recv`` (``size * len(send)`` elements) receives every rank's ``send`` in rank order."""

    def barrier(self) -> None: ...

    def split(self, color: int, key: int) -> Backend:
        """Sub-group of the ranks with the same ``color``, ordered by ``key`` (collective)."""

    def abort(self) -> None: ...

    def close(self) -> None: ...


class BackendFactory(Protocol):
    name: str

    def enabled(self, env: dict[str, str]) -> bool:
        """True when this backend can run here (library present, launched for it, ...)."""

    def create(self, rank: int, size: int, env: dict[str, str], rendezvous: object | None,
               timeout_s: float = 60.0) -> Backend:
        """Connect to the other ranks, waiting at most ``timeout_s`` for any of them."""


class Link(Protocol):
    """One direction of a ring connection, used by ``ring.RingBackend``.

    ``post_send`` may return before the bytes left: the memory must stay untouched until
    ``flush()``; sends go out in posting order. ``recv_into`` blocks until ``out`` is full.
    """

    def post_send(self, data: memoryview) -> None: ...

    def flush(self) -> None: ...

    def recv_into(self, out: memoryview) -> None: ...
