"""``init()``: read the launcher's environment, pick a backend, start the failure monitor.

Environment (set by ``agent.collective.launch``, by the node agent, or by ``mpirun``):

==============================  ======================================================
``KVRAFT_RANK``                 this rank (else ``OMPI_COMM_WORLD_RANK`` / ``PMI_RANK``)
``KVRAFT_WORLD_SIZE``           number of ranks (else ``OMPI_COMM_WORLD_SIZE`` / ...)
``KVRAFT_RENDEZVOUS``           ``tcp://host:port`` (rank 0 hosts it) or ``file:///dir``
``KVRAFT_RUN_ID``               namespace for rendezvous keys
``KVRAFT_PLACEMENT``            node of every rank, comma separated (``n1,n1,n2,n2``)
``KVRAFT_NODE``                 this rank's node when there is no placement (else hostname)
``KVRAFT_COLLECTIVE_BACKEND``   ``auto`` (default), ``mpi`` or ``tcp``
``KVRAFT_COLLECTIVE_HOST``      address this rank listens on (default 127.0.0.1)
``KVRAFT_COLLECTIVE_HIERARCHICAL``  ``auto`` (default), ``1`` or ``0``
``KVRAFT_COLLECTIVE_COMPRESSION``   ``fp16``, ``bf16`` or unset
``KVRAFT_COLLECTIVE_FUSION``        ``probe``: fusion policy from alpha/beta measured at init
``KVRAFT_COLLECTIVE_LINKS``         ``auto`` (default: same-host ring links use CMA) or ``socket``
``KVRAFT_COLLECTIVE_CMA_MIN_BYTES``  calls from this size use the CMA links (default ``probe``: measured)
``KVRAFT_COLLECTIVE_HEARTBEAT_S`` / ``KVRAFT_COLLECTIVE_HANG_TIMEOUT_S``  (0.25 / 3.0)
``KVRAFT_COLLECTIVE_STALL_TIMEOUT_S``  fail ranks absent from a collective this long (unset: off)
``KVRAFT_COLLECTIVE_STARVED_TIMEOUT_S``  a silent same-host rank that still runs is hung after (30)
``KVRAFT_COLLECTIVE_INLINE_SYNC``   ``0``: synchronous calls also go through the comm thread
==============================  ======================================================

Backends are tried in priority order (``BACKENDS``): the first whose ``enabled(env)`` is true
wins: ``mpi`` when launched by an MPI launcher and mpi4py imports, else ``tcp`` when a
rendezvous is configured; a single rank with neither gets the loopback backend.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.collective.communicator import Communicator
from agent.collective.fusion import FusionPolicy
from agent.collective.interface import Backend, BackendFactory
from agent.collective.loopback import LoopbackWorld
from agent.collective.monitor import Monitor
from agent.collective.mpi import MPIFactory
from agent.collective.rendezvous import Rendezvous, from_url
from agent.collective.tcp import TCPFactory

__all__ = ["BACKENDS", "init"]

#: priority order, like Horovod's operation manager: the first enabled backend is used
BACKENDS: list[BackendFactory] = [MPIFactory(), TCPFactory()]


def _int_env(env: dict[str, str], *names: str) -> int | None:
    for n in names:
        if env.get(n):
            try:
                return int(env[n])
            except ValueError:
                raise ValueError(f"{n}={env[n]!r} is not an integer") from None
    return None


def _seconds(given: float | None, env: dict[str, str], name: str, default: float | None) -> float | None:
    """An explicit argument, else ``name`` from the environment, else ``default``: a positive,
    finite number of seconds (0, a negative or NaN would make the monitor spin or never judge)."""
    where = name.lower().removeprefix("kvraft_collective_") if given is not None else name
    if given is None:
        raw = env.get(name)
        if not raw:
            return default
        try:
            given = float(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if not (math.isfinite(given) and given > 0):
        raise ValueError(f"{where} must be a positive number of seconds, not {given!r}")
    return given


def init(
    backend: str = "auto",
    *,
    rank: int | None = None,
    size: int | None = None,
    rendezvous: Rendezvous | str | None = None,
    node: str | None = None,
    placement: Sequence[str] | None = None,
    hierarchical: bool | str | None = None,
    compression: str | None = None,
    fusion: FusionPolicy | str | None = None,
    verify: str = "first",
    heartbeat_s: float | None = None,
    hang_timeout_s: float | None = None,
    stall_timeout_s: float | None = None,
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
    **comm_kwargs: Any,
) -> Communicator:
    """Create the communicator. Explicit arguments override the environment."""
    env = dict(os.environ if env is None else env)
    rank = rank if rank is not None else _int_env(env, "KVRAFT_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
    size = size if size is not None else _int_env(env, "KVRAFT_WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
    rank = 0 if rank is None else rank
    size = 1 if size is None else size
    if size < 1:
        raise ValueError(f"world size must be at least 1, not {size}")
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} out of range for world size {size}")
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number of seconds, not {timeout_s!r}")
    heartbeat_s = _seconds(heartbeat_s, env, "KVRAFT_COLLECTIVE_HEARTBEAT_S", 0.25)
    hang_timeout_s = _seconds(hang_timeout_s, env, "KVRAFT_COLLECTIVE_HANG_TIMEOUT_S", 3.0)
    stall_timeout_s = _seconds(stall_timeout_s, env, "KVRAFT_COLLECTIVE_STALL_TIMEOUT_S", None)
    starved_timeout_s = _seconds(None, env, "KVRAFT_COLLECTIVE_STARVED_TIMEOUT_S", 30.0)
    if backend == "auto":
        backend = env.get("KVRAFT_COLLECTIVE_BACKEND") or "auto"  # empty is unset
    if rendezvous is None and env.get("KVRAFT_RENDEZVOUS"):
        rendezvous = env["KVRAFT_RENDEZVOUS"]
    owned: Rendezvous | None = None  # made here from the URL
    if isinstance(rendezvous, str):
        env["KVRAFT_RENDEZVOUS"] = rendezvous
        rendezvous = owned = from_url(rendezvous, rank, env.get("KVRAFT_RUN_ID", ""), timeout_s, env)
    elif rendezvous is not None:
        env.setdefault("KVRAFT_RENDEZVOUS", "object")

    # A failure while forming the world releases what was made so far: a rank 0 store's port,
    # a kvraft lease kept alive, ring and monitor sockets the peers would otherwise wait on.
    with contextlib.ExitStack() as undo:
        if owned is not None:
            undo.callback(owned.close)
        chosen: Backend
        by_name = {f.name: f for f in BACKENDS}
        if backend == "loopback" or (backend == "auto" and size == 1 and not any(f.enabled(env) for f in BACKENDS)):
            if size != 1:
                raise ValueError("the loopback backend of init() is single-rank; use LoopbackWorld for more")
            chosen = LoopbackWorld(1).backend(0)
        elif backend == "auto":
            factory = next((f for f in BACKENDS if f.enabled(env)), None)
            if factory is None:
                raise RuntimeError(
                    f"no collective backend is enabled for {size} ranks: launch under mpirun (mpi) "
                    "or set KVRAFT_RENDEZVOUS=tcp://host:port (tcp)"
                )
            chosen = factory.create(rank, size, env, rendezvous, timeout_s)
        elif backend in by_name:
            chosen = by_name[backend].create(rank, size, env, rendezvous, timeout_s)
        else:
            raise ValueError(f"unknown backend {backend!r}; known: auto, {', '.join(by_name)}, loopback")
        undo.callback(chosen.close)
        if chosen.size != size and backend != "mpi" and chosen.name != "mpi":
            raise ValueError(f"backend {chosen.name} has {chosen.size} ranks, expected {size}")

        monitor = None
        if chosen.size > 1 and chosen.name != "loopback":
            monitor = Monitor(
                chosen.rank,
                chosen.size,
                heartbeat_s=heartbeat_s or 0.25,
                hang_timeout_s=hang_timeout_s or 3.0,
                host=env.get("KVRAFT_COLLECTIVE_HOST") or "127.0.0.1",  # empty is unset, not every interface
                stall_timeout_s=stall_timeout_s,
                starved_timeout_s=starved_timeout_s or 30.0,
            )
            undo.callback(monitor.close)
            address = np.zeros(256, np.uint8)
            if chosen.rank == 0:
                raw = monitor.listen().encode()
                address[: len(raw)] = np.frombuffer(raw, np.uint8)
            chosen.broadcast(address, 0)
            monitor.start(bytes(address).rstrip(b"\0").decode(), timeout_s)

        if placement is None and env.get("KVRAFT_PLACEMENT"):
            placement = env["KVRAFT_PLACEMENT"].split(",")
        if hierarchical is None:
            h = env.get("KVRAFT_COLLECTIVE_HIERARCHICAL") or "auto"  # empty is unset (it forced it on)
            hierarchical = "auto" if h == "auto" else h not in ("0", "false", "no")
        if compression is None:
            compression = env.get("KVRAFT_COLLECTIVE_COMPRESSION") or None
        if fusion is None and env.get("KVRAFT_COLLECTIVE_FUSION"):
            fusion = env["KVRAFT_COLLECTIVE_FUSION"]  # "probe" (anything else is refused)
        if "inline_sync" not in comm_kwargs and env.get("KVRAFT_COLLECTIVE_INLINE_SYNC"):
            comm_kwargs["inline_sync"] = env["KVRAFT_COLLECTIVE_INLINE_SYNC"] not in ("0", "false", "no")
        comm = Communicator(
            chosen,
            node=node or env.get("KVRAFT_NODE"),
            placement=placement,
            hierarchical=hierarchical,
            compression=compression,
            fusion=fusion,
            verify=verify,
            monitor=monitor,
            **comm_kwargs,
        )
        if monitor is not None:
            monitor.progress = comm.progress
            monitor.set_callback(comm._on_failure)
        undo.pop_all()  # formed: from here the communicator owns them
    comm.rendezvous = rendezvous if not isinstance(rendezvous, str) else None
    return comm
