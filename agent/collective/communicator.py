"""The communicator a training script uses: ``comm = init(); comm.allreduce(grads)``.

Order of work for one ``allreduce(tensors, op, compression)``:

1. adapt each tensor to a numpy view (torch CPU tensors share memory; bf16, non-contiguous
   and GPU tensors go through a staging copy that is written back);
2. the first time a signature (op, shapes, dtypes, compression) is seen, check that every
   rank submitted the same one (a 16-byte digest allgather; on mismatch a second allgather
   of the descriptions builds a precise error on every rank);
3. the PURE fusion plan for the backend's policy (cached per signature) says which tensors
   go in place and which are packed into persistent bucket buffers;
4. each bucket is summed by the backend, flat or hierarchically (reduce inside the node,
   allreduce across node leaders, broadcast inside the node); ``mean`` scales afterwards.

Threads: ``async_op=True`` queues the work for the communication thread and returns a
``Handle``; a synchronous call runs inline on the caller when nothing is queued (no thread
hand-off: ~30 us saved per call), else it queues behind the pending work and waits. Ops are
executed in submission order on every rank.

Failures: the monitor (heartbeats to rank 0) or the data plane reports a ``PeerFailure``;
the communicator stores the first one, aborts the backend (sockets are shut down, so a
blocked TCP call returns), and every pending and later operation raises it. MPI calls cannot
be interrupted: a ``Handle.wait()`` still raises, but a caller blocked *inline* in MPI cannot;
after ``inline_grace_s`` the watchdog prints the failure and exits the process with status
``PEER_FAILURE_EXIT_CODE`` (75) instead of hanging.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import queue
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.collective import fusion as fusion_mod
from agent.collective.compression import wire_dtype_for
from agent.collective.errors import (
    PEER_FAILURE_EXIT_CODE,
    CollectiveError,
    CollectiveTimeout,
    MismatchError,
    PeerFailure,
)
from agent.collective.interface import Backend
from agent.collective.probe import Probe, probe_policy
from agent.collective.schedule import Hierarchy, hierarchy

__all__ = ["Communicator", "Handle", "Statistics", "blocked_exit_line"]

_BF16 = "bfloat16"


def _torch() -> Any:
    mod = sys.modules.get("torch")
    return mod


def blocked_exit_line(failure: BaseException | None, rank: int, backend: str) -> str:
    """What a rank prints when it must leave with a caller blocked inside a call that cannot
    be interrupted (MPI). It starts as a traceback's last line does, with the exception's
    qualified name, so that jobrun's ``first_error_line`` finds the cause in it: this rank
    leaves without a traceback (a CI run's summary named a later consequence instead)."""
    kind = type(failure)
    return (f"{kind.__module__}.{kind.__qualname__}: {failure} -- rank {rank}: the caller is blocked inside "
            f"{backend} and cannot be interrupted; exiting with status {PEER_FAILURE_EXIT_CODE}")


@dataclass(frozen=True, slots=True)
class Statistics:
    ops: int
    tensors: int
    buckets: int
    bytes_reduced: int
    verify_checks: int


class Handle:
    """Result of an ``async_op=True`` call. ``wait()`` returns the op's result (the gathered
    array for ``allgather``, else None) or raises its error; it never waits forever when a
    peer fails, because the failure wakes every pending handle."""

    __slots__ = ("_error", "_event", "_result", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._event = threading.Event()
        self._error: BaseException | None = None
        self._result: Any = None

    def _finish(self, result: Any = None, error: BaseException | None = None) -> None:
        if self._event.is_set():
            return
        self._result, self._error = result, error
        self._event.set()

    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float | None = None) -> Any:
        if not self._event.wait(timeout_s):
            raise CollectiveTimeout(f"{self.name}: not finished after {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self._result


class _Tensor:
    """A submitted tensor seen as a numpy array (``view``) plus how to write results back."""

    __slots__ = ("dtype_key", "flat", "original", "read_only", "shape", "staged", "view")

    def __init__(self, t: Any) -> None:
        self.original = t
        self.staged = False
        self.read_only = isinstance(t, np.ndarray) and not t.flags.writeable
        key: str | None = None
        if isinstance(t, np.ndarray):
            arr = t
        else:
            torch = _torch()
            if torch is None or not isinstance(t, torch.Tensor):
                raise TypeError(f"expected numpy arrays or torch tensors, got {type(t).__name__}")
            src = t.detach()
            if src.dtype == torch.bfloat16:  # numpy has no bf16: stage as fp32
                arr, self.staged, key = src.float().cpu().numpy(), True, _BF16
            elif src.device.type != "cpu" or not src.is_contiguous():
                arr, self.staged = src.cpu().contiguous().numpy().copy(), True
            else:
                arr = src.numpy()
        if not arr.flags.c_contiguous:
            arr, self.staged = np.ascontiguousarray(arr), True
        if arr.dtype.kind not in "fiu" or arr.dtype.byteorder == ">":
            raise TypeError(f"cannot reduce dtype {arr.dtype}")
        self.dtype_key = key or arr.dtype.str
        self.view = arr
        self.flat = arr.reshape(-1)
        self.shape = tuple(t.shape) if key else tuple(arr.shape)

    def write_back(self) -> None:
        if not self.staged:
            return
        t = self.original
        if isinstance(t, np.ndarray):
            np.copyto(t, self.view, casting="unsafe")
        else:
            torch = _torch()
            t.detach().copy_(torch.from_numpy(self.view).to(t.dtype).reshape(t.shape))


def _torch_key(t: Any) -> tuple[Any, ...]:
    if isinstance(t, np.ndarray):
        return (t.shape, t.dtype, t.flags.c_contiguous, t.flags.writeable)
    torch = _torch()
    if torch is None or not isinstance(t, torch.Tensor):  # as _Tensor says it
        raise TypeError(f"expected numpy arrays or torch tensors, got {type(t).__name__}")
    return (tuple(t.shape), str(t.dtype), t.is_contiguous(), t.device.type)


def _writable(items: list[_Tensor]) -> list[_Tensor]:
    """Refuse a read-only array before anything is sent: the result is written into it, and
    failing later, in the middle of the ring, leaves the neighbours' streams out of step."""
    for i, t in enumerate(items):
        if t.read_only:
            raise ValueError(f"tensor {i} is a read-only array: the result is written into it in place")
    return items


def _spec(t: _Tensor, compression: str | None) -> fusion_mod.TensorSpec:
    if t.dtype_key == _BF16:
        acc = np.dtype(np.float32)
        wire = wire_dtype_for(compression or "bf16", acc)
    elif t.view.dtype == np.float16:
        acc = np.dtype(np.float32)
        wire = wire_dtype_for(compression or "fp16", acc)
    else:
        acc = t.view.dtype
        wire = wire_dtype_for(compression, acc)
    inplace_ok = (not t.staged) and t.view.dtype == acc
    return fusion_mod.TensorSpec(t.flat.size, t.dtype_key, acc.str, wire.str, acc.itemsize, inplace_ok)


class _Program:
    """A compiled allreduce for one signature: the fusion plan plus persistent buffers."""

    __slots__ = ("buckets", "buffers", "fast", "op", "scale", "wires")

    def __init__(self, buckets: list[fusion_mod.Bucket], op: str, scale: float) -> None:
        self.buckets = buckets
        self.buffers = [None if b.inplace else np.empty(b.count, np.dtype(b.acc_dtype)) for b in buckets]
        self.wires = [None if b.wire_dtype == b.acc_dtype else np.dtype(b.wire_dtype) for b in buckets]
        self.op = op
        self.scale = scale
        self.fast: Callable[[Any], None] | None = None

    def run(self, comm: Communicator, items: list[_Tensor]) -> None:
        for bucket, buf, wire in zip(self.buckets, self.buffers, self.wires, strict=True):
            if buf is None:
                flat = items[bucket.entries[0].tensor].flat
            else:
                flat = buf
                for e in bucket.entries:
                    np.copyto(flat[e.offset : e.offset + e.count], items[e.tensor].flat, casting="unsafe")
            comm._reduce_flat(flat, wire)
            if self.op == "mean":
                np.multiply(flat, self.scale, out=flat, casting="unsafe")
            if buf is not None:
                for e in bucket.entries:
                    np.copyto(items[e.tensor].flat, flat[e.offset : e.offset + e.count], casting="unsafe")
            comm._stats["bytes_reduced"] += flat.nbytes
        for t in items:
            t.write_back()
        comm._stats["buckets"] += len(self.buckets)


class Communicator:
    """Collective operations over one backend. Build it with ``agent.collective.init()``."""

    def __init__(
        self,
        backend: Backend,
        *,
        node: str | None = None,
        placement: Sequence[str] | None = None,
        hierarchical: bool | str = "auto",
        compression: str | None = None,
        fusion: fusion_mod.FusionPolicy | str | None = None,
        verify: str = "first",
        monitor: Any = None,
        inline_sync: bool = True,
        inline_grace_s: float = 1.0,
        diagnosis_grace_s: float = 0.5,
    ) -> None:
        if verify not in ("first", "always", "never"):
            raise ValueError("verify must be 'first', 'always' or 'never'")
        if compression is not None:
            wire_dtype_for(compression, np.dtype(np.float32))  # validates the name
        self.backend = backend
        self.rank = backend.rank
        self.size = backend.size
        if self.size > 1:  # before any other collective: differently set-up ranks pair wrong calls
            self._agree_setup((
                ("placement", "gathered" if placement is None else ",".join(placement)),
                ("hierarchical", str(hierarchical)),
                ("fusion", "backend's" if fusion is None else str(fusion)),
                ("verify", verify),
                ("compression", str(compression)),
            ))
        self.compression = compression
        #: alpha / beta measured at start-up with ``fusion="probe"`` (``probe.py``), else None
        self.fusion_probe: Probe | None = None
        if fusion == "probe":
            self.fusion_probe = probe_policy(backend)
            fusion = self.fusion_probe.policy
        elif isinstance(fusion, str):
            raise ValueError(f"fusion must be a FusionPolicy, 'probe' or None, not {fusion!r}")
        self.fusion = fusion or backend.fusion
        self.verify = verify
        self.inline_sync = inline_sync
        self.inline_grace_s = inline_grace_s
        self.diagnosis_grace_s = diagnosis_grace_s
        self.monitor = monitor
        self.rendezvous: Any = None  # closed with the communicator (rank 0 may host it)
        self._failure: CollectiveError | None = None
        self._state_lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._exec_lock = threading.Lock()
        self._pending = 0
        self._handles: set[Handle] = set()
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Handle] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._inline_thread: bool | None = None  # True while a caller runs an op inline
        self._thread_busy = False  # the communication thread is inside an op
        self._seq = 0  # collectives started (the same count on every rank): stall inspector
        self._verified: set[tuple[Any, ...]] = set()
        self._programs: OrderedDict[tuple[Any, ...], _Program] = OrderedDict()
        self._last_fast: tuple[Any, ...] | None = None  # (array, op, comp, shape, strides, dtype, call)
        self._stats = {"ops": 0, "tensors": 0, "buckets": 0, "bytes_reduced": 0, "verify_checks": 0}
        self._closed = False
        # placement -> hierarchy
        if placement is None:
            placement = self._gather_nodes(node or socket.gethostname())
        if len(placement) != self.size:
            raise ValueError(f"placement names {len(placement)} nodes for {self.size} ranks")
        self.placement = tuple(placement)
        self.hierarchy: Hierarchy = hierarchy(self.placement)
        self.node = self.placement[self.rank]
        self.local_rank = self.hierarchy.local_rank[self.rank]
        self.local_size = self.hierarchy.local_size[self.rank]
        use_h = self.hierarchy.useful if hierarchical == "auto" else bool(hierarchical)
        self.local: Backend | None = None
        self.cross: Backend | None = None
        if use_h and self.size > 1:
            self.local = backend.split(self.hierarchy.node_index[self.rank], self.rank)
            try:
                self.cross = backend.split(0 if self.local_rank == 0 else 1, self.rank)
            except BaseException:
                self.local.close()  # its sockets (a TCP sub-ring) were left open
                raise
        self.hierarchical = self.local is not None
        self.backend_name = backend.name + ("+hierarchical" if self.hierarchical else "")
        atexit.register(self._atexit)

    # -- public API ------------------------------------------------------------------------
    def allreduce(
        self, tensors: Any, op: str = "sum", *, async_op: bool = False, compression: str | None = "default", name: str = "allreduce"
    ) -> Handle | None:
        """Sum (or average, ``op="mean"``) a list of numpy arrays / torch tensors in place."""
        last = self._last_fast
        if (  # the same array object as last time, unchanged: one bound call, nothing else
            last is not None
            and last[0] is tensors
            and not async_op
            and last[1] == op
            and last[2] == compression
            and last[3] == tensors.shape
            and last[4] == tensors.strides
            and last[5] is tensors.dtype
            and tensors.flags.writeable
            and self._failure is None
            and not self._pending
            and self._exec_lock.acquire(False)
        ):
            self._inline_thread = True
            self._seq += 1
            try:
                last[6](tensors)
            except BaseException as exc:
                self._translate(exc)
                raise
            finally:
                self._inline_thread = None
                self._exec_lock.release()
            return None
        if op != "sum" and op != "mean":
            raise ValueError(f"op must be 'sum' or 'mean', not {op!r}")
        comp = self.compression if compression == "default" else compression
        t = type(tensors)
        items = tensors if t is list else [tensors] if t is np.ndarray else self._as_list(tensors)
        if async_op or not self.inline_sync:
            return self._submit(lambda: self._allreduce(items, op, comp), async_op, name)  # type: ignore[no-any-return]
        # synchronous path: run on the caller unless async work is queued (keeps order)
        if self._failure is not None:
            raise self._failure
        if self._pending or self._closed or not self._exec_lock.acquire(False):
            return self._submit(lambda: self._allreduce(items, op, comp), False, name)  # type: ignore[no-any-return]
        if self._pending:  # async work was queued meanwhile: stay behind it
            self._exec_lock.release()
            return self._submit(lambda: self._allreduce(items, op, comp), False, name)
        self._inline_thread = True
        self._seq += 1
        try:
            self._allreduce(items, op, comp, compression)
        except BaseException as exc:
            self._translate(exc)
            raise
        finally:
            self._inline_thread = None
            self._exec_lock.release()
        return None

    def broadcast(self, tensors: Any, root: int = 0, *, async_op: bool = False) -> Handle | None:
        """Copy ``root``'s tensors to every rank, in place."""
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < self.size:
            # as MPI_ERR_ROOT: the ring would take it modulo the size, another rank's data
            raise ValueError(f"broadcast root {root!r} is not a rank of this world (0..{self.size - 1})")
        items = self._as_list(tensors)
        return self._submit(lambda: self._broadcast(items, root), async_op, "broadcast")  # type: ignore[no-any-return]

    def allgather(self, tensor: Any, *, async_op: bool = False) -> Any:
        """Every rank's ``tensor`` stacked along a new first axis (shape ``(size, *shape)``)."""
        return self._submit(lambda: self._allgather(tensor), async_op, "allgather")

    def barrier(self) -> None:
        self._submit(self.backend.barrier, False, "barrier")

    def statistics(self) -> Statistics:
        return Statistics(**self._stats)

    def progress(self) -> tuple[int, bool]:
        """(collectives started, currently inside one): what the monitor's heartbeats carry."""
        return (self._seq, self._inline_thread is not None or self._thread_busy)

    @property
    def failed(self) -> CollectiveError | None:
        return self._failure

    def close(self, barrier: bool = True, timeout_s: float = 60.0) -> None:
        """Finish queued work, (optionally) wait for every rank, then release everything."""
        if self._closed:
            return
        if barrier and self._failure is None and self.size > 1:
            h = None
            try:
                h = self._submit(self.backend.barrier, True, "close-barrier")
                assert h is not None
                h.wait(timeout_s)
            except CollectiveError:
                if h is not None and not h.done():  # some rank never came: stop waiting for it,
                    for b in (self.local, self.cross, self.backend):  # or the join below waits
                        if b is not None and b.interruptible:  # timeout_s a second time
                            b.abort()
        self._closed = True
        self._last_fast = None  # the one-call path does not look at _closed: every call now does
        if self.monitor is not None:
            self.monitor.close()
        if self._thread is not None:
            self._queue.put(None)
            if self._failure is None:
                self._thread.join(timeout_s)
        for b in (self.local, self.cross, self.backend):
            if b is not None and (self._failure is None or b.interruptible):
                b.close()
        if self.rendezvous is not None:
            self.rendezvous.close()

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(barrier=exc[0] is None)

    # -- submission and threads ------------------------------------------------------------
    @staticmethod
    def _as_list(tensors: Any) -> list[Any]:
        if isinstance(tensors, (list, tuple)):
            return list(tensors)
        return [tensors]

    def _submit(self, fn: Callable[[], Any], async_op: bool, name: str) -> Any:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise CollectiveError("communicator is closed")
        if not async_op and self.inline_sync:
            with self._submit_lock:
                inline = self._pending == 0
                if inline:
                    self._exec_lock.acquire()
            if inline:
                self._inline_thread = True
                self._seq += 1
                try:
                    return self._execute(fn)
                finally:
                    self._inline_thread = None
                    self._exec_lock.release()
        handle = Handle(name)
        with self._submit_lock:
            self._pending += 1
            self._handles.add(handle)
            self._queue.put((fn, handle))
            if self._thread is None:
                self._thread = threading.Thread(target=self._comm_loop, name=f"collective-comm-{self.rank}", daemon=True)
                self._thread.start()
        if async_op:
            return handle
        return handle.wait()

    def _comm_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, handle = item
            with self._exec_lock:
                self._seq += 1
                self._thread_busy = True
                try:
                    if self._failure is not None:
                        raise self._failure
                    handle._finish(self._execute(fn))
                except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                    handle._finish(error=exc)
                finally:
                    self._thread_busy = False
            with self._submit_lock:
                self._pending -= 1
                self._handles.discard(handle)

    def _execute(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except BaseException as exc:
            self._translate(exc)
            raise

    def _translate(self, exc: BaseException) -> None:
        """Raise the communicator's failure instead of a transport error, if there is one."""
        if isinstance(exc, PeerFailure):
            # A neighbour's socket may close because *it* aborted on someone else's failure:
            # give the monitor a moment to name the rank that really failed.
            deadline = time.monotonic() + self.diagnosis_grace_s
            while self._failure is None and time.monotonic() < deadline and self.monitor is not None:
                time.sleep(0.01)
            self._on_failure(exc)
            assert self._failure is not None
            raise self._failure from exc
        if isinstance(exc, (OSError, CollectiveTimeout)) and self._failure is not None:
            raise self._failure from exc

    def _on_failure(self, exc: CollectiveError) -> None:
        """Called by the monitor thread or the data plane; the first failure wins."""
        with self._state_lock:
            if self._failure is not None:
                return
            self._failure = exc
        for b in (self.backend, self.local, self.cross):
            if b is not None:
                b.abort()
        with self._submit_lock:
            handles = list(self._handles)
        for h in handles:
            h._finish(error=exc)
        if not self.backend.interruptible and self._inline_thread is not None:
            threading.Thread(target=self._watchdog, name="collective-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        time.sleep(self.inline_grace_s)
        if self._inline_thread is not None:
            sys.stderr.write(blocked_exit_line(self._failure, self.rank, self.backend.name) + "\n")
            sys.stderr.flush()
            os._exit(PEER_FAILURE_EXIT_CODE)

    def _atexit(self) -> None:
        # A thread stuck in MPI would hang MPI_Finalize: leave without it.
        if self._failure is not None and not self.backend.interruptible:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(PEER_FAILURE_EXIT_CODE)

    # -- verification ----------------------------------------------------------------------
    def _verify(self, signature: tuple[Any, ...]) -> None:
        if self.verify == "never" or self.size == 1:
            return
        if self.verify == "first" and signature in self._verified:
            return
        self._stats["verify_checks"] += 1
        differ = self._texts_if_they_differ(repr(signature))
        if differ is None:
            self._verified.add(signature)
            return
        raise MismatchError(_describe_mismatch(*differ))

    def _texts_if_they_differ(self, text: str) -> tuple[list[str], np.ndarray] | None:
        """Collective: None when every rank holds the same ``text`` (one allgather of 16-byte
        digests); else every rank's text and the digests' rows (two more allgathers)."""
        raw = text.encode()
        digest = np.frombuffer(hashlib.blake2b(raw, digest_size=16).digest(), np.uint8)
        digests = np.empty(16 * self.size, np.uint8)
        self.backend.allgather(digest.copy(), digests)
        rows = digests.reshape(self.size, 16)
        if (rows == rows[0]).all():
            return None
        lengths = np.empty(self.size, np.int64)
        self.backend.allgather(np.array([len(raw)], np.int64), lengths)
        width = int(lengths.max())
        mine = np.zeros(width, np.uint8)
        mine[: len(raw)] = np.frombuffer(raw, np.uint8)
        every = np.empty(width * self.size, np.uint8)
        self.backend.allgather(mine, every)
        return [bytes(every[r * width : r * width + int(lengths[r])]).decode() for r in range(self.size)], rows

    # -- the operations (run inline or on the comm thread) ---------------------------------
    def _allreduce(self, raw: list[Any], op: str, comp: str | None, comp_arg: str | None = None) -> None:
        try:  # numpy arrays
            key: tuple[Any, ...] = (op, comp, *[(t.shape, t.dtype, t.flags.c_contiguous, t.flags.writeable) for t in raw])
        except AttributeError:  # torch tensors (or a mix)
            key = (op, comp, *[_torch_key(t) for t in raw])
        program = self._programs.get(key)
        if program is None or self.verify == "always":
            program = self._compile(raw, op, comp, key)
        if program.fast is not None:  # one numpy array reduced where it lies
            a = raw[0]
            program.fast(a)
            if self.verify != "always" and comp_arg is not None and self.inline_sync:
                # keyed on the caller's arguments as given ("default" included)
                self._last_fast = (a, op, comp_arg, a.shape, a.strides, a.dtype, program.fast)
        else:
            program.run(self, [_Tensor(t) for t in raw])
        self._stats["ops"] += 1

    def _compile(self, raw: list[Any], op: str, comp: str | None, key: tuple[Any, ...]) -> _Program:
        items = _writable([_Tensor(t) for t in raw])
        if op == "mean" and any(t.view.dtype.kind != "f" for t in items):
            raise TypeError("op='mean' needs floating-point tensors")
        signature = ("allreduce", op, comp, tuple((t.shape, t.dtype_key) for t in items))
        self._verify(signature)
        buckets = fusion_mod.plan([_spec(t, comp) for t in items], self.fusion)
        program = _Program(buckets, op, 1.0 / self.size)
        flat_backend = self.local is None
        if (  # one array only: with empty ones beside it the bucket's tensor is not raw[0]
            len(raw) == 1
            and len(buckets) == 1
            and buckets[0].inplace
            and op == "sum"
            and flat_backend
            and isinstance(raw[0], np.ndarray)
            and buckets[0].wire_dtype == buckets[0].acc_dtype
        ):
            direct = getattr(self.backend, "direct_allreduce", None)  # MPI: the bound MPI call itself
            if direct is not None and (call := direct(buckets[0].count)) is not None:
                program.fast = call
            else:
                allreduce = self.backend.allreduce
                program.fast = lambda a: allreduce(a.reshape(-1))
        self._programs[key] = program
        if len(self._programs) > 256:
            self._programs.popitem(last=False)
        self._stats["tensors"] += len(items)
        return program

    def _reduce_flat(self, flat: np.ndarray, wire: np.dtype | None) -> None:
        if self.local is None or self.cross is None:
            self.backend.allreduce(flat, wire)
            return
        self.local.reduce(flat, 0)
        if self.local_rank == 0:
            self.cross.allreduce(flat, wire)
        self.local.broadcast(flat, 0)

    def _broadcast(self, raw: list[Any], root: int) -> None:
        items = _writable([_Tensor(t) for t in raw])
        self._verify(("broadcast", root, tuple((t.shape, t.dtype_key) for t in items)))
        for t in items:
            if t.flat.size:
                self.backend.broadcast(t.flat.view(np.uint8), root)
            t.write_back()
        self._stats["ops"] += 1

    def _allgather(self, tensor: Any) -> Any:
        t = _Tensor(tensor)
        self._verify(("allgather", t.shape, t.dtype_key))
        out = np.empty((self.size, *t.shape), t.view.dtype)
        if t.flat.size:
            self.backend.allgather(t.flat.view(np.uint8), out.reshape(-1).view(np.uint8))
        self._stats["ops"] += 1
        if isinstance(tensor, np.ndarray):
            return out
        torch = _torch()
        result = torch.from_numpy(out)
        return result.to(tensor.dtype) if t.dtype_key == _BF16 else result

    def _agree_setup(self, setup: tuple[tuple[str, str], ...]) -> None:
        """Collective: every rank was set up alike (placement, hierarchical mode, fusion, verify,
        compression). A rank given another placement split into other node groups (wrong sums:
        6, 6, 6 and 4 for 10); another hierarchical, fusion or verify setting issues other
        collectives than its peers (garbage or a hang). Every rank raises the same error."""
        differ = self._texts_if_they_differ(repr(setup))
        if differ is None:
            return
        setups = [dict(_literal(text)) for text in differ[0]]
        lines = ["ranks were set up differently (KVRAFT_PLACEMENT, KVRAFT_COLLECTIVE_* or init arguments):"]
        for r in range(1, self.size):
            diffs = [f"{k} {v!r} vs {setups[0].get(k)!r}" for k, v in setups[r].items() if setups[0].get(k) != v]
            if diffs:
                lines.append(f"  rank {r} vs rank 0: " + "; ".join(diffs)[:400])
        raise MismatchError("\n".join(lines))

    def _gather_nodes(self, node: str) -> list[str]:
        if self.size == 1:
            return [node]
        width = 128
        mine = np.zeros(width, np.uint8)
        raw = node.encode()[:width]
        mine[: len(raw)] = np.frombuffer(raw, np.uint8)
        every = np.empty(width * self.size, np.uint8)
        self.backend.allgather(mine, every)
        return [bytes(every[r * width : (r + 1) * width]).rstrip(b"\0").decode() for r in range(self.size)]


_AST_LOCK = threading.Lock()


def _literal(text: str) -> Any:
    """``ast.literal_eval``, one thread at a time: CPython 3.11.7 keeps the AST builder's
    recursion depth per interpreter, so two threads parsing at once (the ranks of an in-process
    world, each raising the same mismatch) failed one with "SystemError: AST constructor
    recursion depth mismatch (before=30, after=26)" (seen in the full run; CPython gh-106905)."""
    import ast

    with _AST_LOCK:
        return ast.literal_eval(text)


def _describe_mismatch(sigs: list[str], rows: np.ndarray) -> str:
    parsed: list[Any] = []
    for s in sigs:
        try:
            parsed.append(_literal(s))
        except (ValueError, SyntaxError):
            parsed.append(s)
    ref = parsed[0]
    lines = ["ranks submitted different collectives:"]
    for r in range(1, len(parsed)):
        if (rows[r] == rows[0]).all():
            continue
        lines.append(f"  rank {r} vs rank 0: {_diff(parsed[r], ref)}")
    lines.append("  rank 0 submitted: " + sigs[0][:400])
    return "\n".join(lines)


def _diff(mine: Any, ref: Any) -> str:
    if not (isinstance(mine, tuple) and isinstance(ref, tuple)) or mine[0] != ref[0]:
        return f"operation {str(mine)[:200]} vs {str(ref)[:200]}"
    if mine[0] == "allreduce":
        if mine[1] != ref[1]:
            return f"op {mine[1]!r} vs {ref[1]!r}"
        if mine[2] != ref[2]:
            return f"compression {mine[2]!r} vs {ref[2]!r}"
        a, b = mine[3], ref[3]
        if len(a) != len(b):
            return f"{len(a)} tensors vs {len(b)} tensors"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return f"tensor {i}: shape {x[0]} dtype {_dt(x[1])} vs shape {y[0]} dtype {_dt(y[1])}"
    return f"{str(mine)[:200]} vs {str(ref)[:200]}"


def _dt(key: str) -> str:
    return key if key == _BF16 else str(np.dtype(key))
