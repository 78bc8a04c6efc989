"""``/debug/pprof/``: etcd's ``--enable-pprof``, in Python's terms.

etcd serves Go's runtime profiles on its client URLs when started with ``--enable-pprof``.
A kvraft member serves the Python equivalents an operator needs, under the same paths, only
with ``--enable-pprof`` (``make_app`` installs these routes; without the flag every path
below is a 404 like any unknown path). Every answer is ``text/plain; charset=utf-8``; like
etcd's, none is behind auth, so enable the flag only where the client URLs are trusted.

``/debug/pprof/``
    An index: one line per profile.
``/debug/pprof/goroutine?debug=N``
    Every thread's stack (``sys._current_frames()``, names from ``threading.enumerate()``)
    and every asyncio task of the member's loop (``asyncio.all_tasks()``). A task's stack is
    its await chain (``cr_await`` from the task's coroutine down to the awaitable it waits
    on): ``Task.get_stack()`` gives only the outermost frame of a suspended task on 3.11,
    since a suspended coroutine's frame has no ``f_back``. Frames are listed innermost first,
    as Go's dump. ``debug=2``: one stack per thread and task, threads first (the loop's
    thread first), then tasks by name. ``debug=1``, ``0`` and the default: identical stacks
    grouped, ``N @ kind ...: names`` per group, the largest group first, ties by name (as
    Go's ``debug=1``; there is no protobuf form).
``/debug/pprof/profile?seconds=N&hz=H``
    A sampled CPU profile: a thread started for it reads ``sys._current_frames()`` ``H``
    times a second (default 100, 1 to 1000) for ``N`` seconds (default 30 as Go, 1 to 300)
    and counts each thread's stack; the handler awaits it, so the loop serves on. The
    answer is folded stacks, one line per thread and distinct stack,
    ``thread;outermost (file:line);...;innermost count``: the input of ``flamegraph.pl`` and
    speedscope. Every thread but the sampler is sampled, an idle one in its wait (the
    loop's thread comes first; idle, its stack ends in the loop's run call), so the counts
    add up to about ``N * H * threads``. One profile at a time per process, as Go's:
    another request meanwhile gets Go's 500 ``Could not enable CPU profiling: cpu profiling
    already in use``. A profile whose client leaves stops within half a second (aiohttp
    does not cancel the handler; it looks). A sample walks each stack by ``f_back``, each
    code object's label made once per profile; the sampler holds the GIL meanwhile.
``/debug/pprof/heap?gc=1``
    The objects the cyclic collector tracks (``gc.get_objects()``: containers and
    instances; a ``str``, ``bytes`` or ``int`` is not tracked, and its holder's
    ``getsizeof`` counts only the reference to it), grouped by type, with the count and
    the total of ``sys.getsizeof``, the 50 largest types and a total. What start-up built
    is frozen by ``gc.freeze()`` (``kvraft.server.main``) and not walked (``gc`` lists no
    frozen object); its count is given. With
    ``tracemalloc`` tracing (``PYTHONTRACEMALLOC=1``), also its 25 largest source lines.
    ``gc=1`` collects first (Go's parameter). The walk runs on the loop's thread, so the
    member pauses while it runs: the answer says how long. A member holding 100,000 keys
    written since its start (about 400,000 objects) paused 150 to 165 ms on the shared
    2-core development box (docs/observability.md).
``/debug/pprof/cmdline``
    The process's command line (``sys.orig_argv``), NUL-separated as Go's.

A query parameter that is not an integer in its range is refused with 400 and one line
naming it. Go's other profiles (``allocs``, ``block``, ``mutex``, ``threadcreate``,
``trace``, ``symbol``) are Go's ``404 Unknown profile``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import os
import re
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from types import CodeType, FrameType
from typing import Any, NamedTuple

from aiohttp import web

from kvraft.server.api.state import SERVER

__all__ = [
    "BUSY",
    "GROUP_NAMES",
    "HEAP_TOP",
    "Labels",
    "MAX_HZ",
    "MAX_SECONDS",
    "Profile",
    "Site",
    "Stack",
    "TRACEMALLOC_TOP",
    "await_chain",
    "fold",
    "folded",
    "group",
    "heap_rows",
    "install",
    "render_full",
    "render_grouped",
    "render_heap",
    "sample",
    "task_stacks",
    "thread_stacks",
]

MAX_SECONDS = 300
MAX_HZ = 1000
HEAP_TOP = 50
TRACEMALLOC_TOP = 25
GROUP_NAMES = 10
"""Names listed in a ``debug=1`` group's header; more are counted."""

_CLIENT_CHECK_S = 0.5
"""How often a profile's handler looks whether its client is still there."""

BUSY = "Could not enable CPU profiling: cpu profiling already in use"
"""Go's ``net/http/pprof`` answer (500) while a profile is being taken."""

_PROFILING = threading.Lock()
"""Held while a profile is taken: the sampler sees every thread of the process."""


# -- folded stacks (the CPU profile) ---------------------------------------------------


class Labels:
    """Each frame's label, ``qualname (file:line)``, made once per code object and line;
    ``file`` is the path under the longest of ``roots`` (``sys.path``) that holds it."""

    def __init__(self, roots: Iterable[str] = ()) -> None:
        self._roots = sorted({os.path.join(os.path.abspath(r), "") for r in roots if isinstance(r, str)},
                             key=len, reverse=True)
        self._codes: dict[CodeType, dict[int, str]] = {}

    def short(self, filename: str) -> str:
        for root in self._roots:
            if filename.startswith(root):
                return filename[len(root):]
        return filename

    def label(self, code: CodeType, line: int) -> str:
        lines = self._codes.get(code)
        if lines is None:
            lines = self._codes[code] = {}
        text = lines.get(line)
        if text is None:
            text = lines[line] = _clean(f"{code.co_qualname} ({self.short(code.co_filename)}:{line})")
        return text


def _clean(text: str) -> str:
    """A name as one element of a folded line (``;`` separates them)."""
    return text.replace(";", ",").replace("\n", " ")


def fold(frame: FrameType | None, labels: Labels) -> tuple[str, ...]:
    """The stack that ``frame`` is the top of, outermost first, as labels."""
    out: list[str] = []
    label = labels.label
    while frame is not None:
        out.append(label(frame.f_code, frame.f_lineno or 0))
        frame = frame.f_back
    out.reverse()
    return tuple(out)


@dataclass
class Profile:
    """What ``sample`` counted: each (thread name, stack) and how often; ``samples``: how
    many times the threads were read."""

    counts: dict[tuple[str, tuple[str, ...]], int]
    samples: int


def folded(counts: Mapping[tuple[str, tuple[str, ...]], int], first: str = "") -> str:
    """Folded stacks, one ``thread;frame;...;frame count`` line each: thread ``first``'s
    lines first, then by thread name; within a thread the most frequent first."""
    lines = sorted(((name, stack, n) for (name, stack), n in counts.items()),
                   key=lambda item: (item[0] != first, item[0], -item[2], item[1]))
    return "".join(f"{';'.join((_clean(name), *stack))} {n}\n" for name, stack, n in lines)


def sample(seconds: float, hz: int, stop: threading.Event | None = None,
           clock: Callable[[], float] = time.monotonic) -> Profile:
    """Read every other thread's stack ``hz`` times a second for ``seconds`` (or until
    ``stop`` is set), on the calling thread. A late sample is not made up for: the next one
    is due ``1 / hz`` after it."""
    stop = stop or threading.Event()
    labels = Labels(sys.path)
    me = threading.get_ident()
    names: dict[int, str] = {}
    counts: dict[tuple[str, tuple[str, ...]], int] = {}
    interval = 1.0 / hz
    due = clock()
    end = due + seconds
    samples = 0
    while due < end:
        _count(sys._current_frames(), me, names, labels, counts)
        samples += 1
        due += interval
        now = clock()
        if due < now:  # late (a long walk, a busy GIL): no catching up in a burst
            due = now + interval
        if due < end and stop.wait(due - now):
            break
    return Profile(counts, samples)


def _count(frames: Mapping[int, FrameType], me: int, names: dict[int, str], labels: Labels,
           counts: dict[tuple[str, tuple[str, ...]], int]) -> None:
    """One sample: count each thread's stack but thread ``me``'s. (A function of its own so
    that no frame outlives the sample.)"""
    for ident, frame in frames.items():
        if ident == me:
            continue
        name = names.get(ident)
        if name is None:  # a thread not seen before: its name, while it runs
            names.update((t.ident, t.name) for t in threading.enumerate() if t.ident is not None)
            name = names.setdefault(ident, f"thread-{ident}")
        key = (name, fold(frame, labels))
        counts[key] = counts.get(key, 0) + 1


# -- goroutines (threads and tasks) ----------------------------------------------------


class Site(NamedTuple):
    function: str
    """``module.qualname``"""
    file: str
    line: int


@dataclass(frozen=True)
class Stack:
    """One thread or task: ``sites`` innermost first (Go's order)."""

    kind: str
    """``thread`` or ``task``"""
    name: str
    state: str
    """``running``, ``daemon`` (a thread), ``awaiting Future`` (a task), ...; or empty"""
    sites: tuple[Site, ...]
    ident: int | None = None
    """A thread's native id (what ``top -H`` and ``py-spy`` show)."""
    coroutine: str = ""
    """A task's coroutine (``qualname``)."""

    def header(self) -> str:
        state = f" [{self.state}]" if self.state else ""
        if self.kind == "thread":
            return f'thread {self.ident} "{self.name}"{state}'
        return f'task "{self.name}" {self.coroutine}{state}'


def _site(frame: FrameType) -> Site:
    code = frame.f_code
    module = frame.f_globals.get("__name__")
    prefix = f"{module}." if isinstance(module, str) else ""
    return Site(prefix + code.co_qualname, code.co_filename, frame.f_lineno or 0)


def _walk(frame: FrameType | None) -> tuple[Site, ...]:
    """Innermost first."""
    sites = []
    while frame is not None:
        sites.append(_site(frame))
        frame = frame.f_back
    return tuple(sites)


def thread_stacks(frames: Mapping[int, FrameType], threads: Iterable[threading.Thread],
                  current: int) -> list[Stack]:
    """A stack per thread in ``frames`` (``sys._current_frames()``): thread ``current``
    first, as ``running``, then by name."""
    known = {t.ident: t for t in threads if t.ident is not None}
    stacks = []
    for ident, frame in frames.items():
        thread = known.get(ident)
        name = thread.name if thread is not None else f"thread-{ident}"
        native = thread.native_id if thread is not None and thread.native_id is not None else ident
        state = "running" if ident == current else "daemon" if thread is not None and thread.daemon else ""
        stacks.append(Stack("thread", name, state, _walk(frame), native))
    stacks.sort(key=lambda s: (s.state != "running", s.name, s.ident or 0))
    return stacks


def await_chain(awaitable: object) -> tuple[list[FrameType], object | None]:
    """The frames of a coroutine and of what it awaits, down the ``cr_await`` chain
    (generators' ``gi_yieldfrom``, async generators' ``ag_await``), outermost first; and
    the innermost awaitable that is not one of those (a future), or None."""
    frames: list[FrameType] = []
    obj: Any = awaitable
    while obj is not None:
        if hasattr(obj, "cr_frame"):
            frame, obj = obj.cr_frame, obj.cr_await
        elif hasattr(obj, "gi_frame"):
            frame, obj = obj.gi_frame, obj.gi_yieldfrom
        elif hasattr(obj, "ag_frame"):
            frame, obj = obj.ag_frame, obj.ag_await
        else:
            return frames, obj
        if frame is not None:
            frames.append(frame)
    return frames, None


def _awaited(obj: object | None) -> str:
    if obj is None:
        return "suspended"
    name = type(obj).__name__
    if name == "FutureIter" or isinstance(obj, asyncio.Future):
        return "awaiting Future"  # (the C future's iterator does not say which)
    return f"awaiting {name}"


def task_stacks(tasks: Iterable[asyncio.Task[Any]], current: asyncio.Task[Any] | None = None) -> list[Stack]:
    """A stack per task, by name."""
    stacks = []
    for task in tasks:
        coro = task.get_coro()
        frames, innermost = await_chain(coro)
        if task is current:
            state = "running"
        elif task.done():
            state = "done"
        elif inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
            state = "not started"
        else:
            state = _awaited(innermost)
        qualname = getattr(coro, "__qualname__", type(coro).__name__)
        stacks.append(Stack("task", task.get_name(), state, tuple(_site(f) for f in reversed(frames)),
                            coroutine=str(qualname)))
    stacks.sort(key=lambda s: s.name)
    return stacks


def group(stacks: Iterable[Stack]) -> list[list[Stack]]:
    """Stacks of the same kind, state, coroutine and sites together; the largest group
    first, then by the first name (each group's names sorted)."""
    groups: dict[tuple[str, str, str, tuple[Site, ...]], list[Stack]] = {}
    for stack in stacks:
        groups.setdefault((stack.kind, stack.state, stack.coroutine, stack.sites), []).append(stack)
    out = [sorted(members, key=lambda s: s.name) for members in groups.values()]
    out.sort(key=lambda members: (-len(members), members[0].name, members[0].kind))
    return out


def _summary(stacks: Sequence[Stack]) -> str:
    threads = sum(1 for s in stacks if s.kind == "thread")
    return f"goroutine profile: total {len(stacks)} ({threads} threads, {len(stacks) - threads} asyncio tasks)\n"


def render_grouped(stacks: Sequence[Stack]) -> str:
    """Go's ``debug=1``: ``N @ kind [state]: names`` and the shared stack per group."""
    parts = [_summary(stacks)]
    for members in group(stacks):
        first = members[0]
        names = [s.name for s in members[:GROUP_NAMES]]
        if len(members) > GROUP_NAMES:
            names.append(f"and {len(members) - GROUP_NAMES} more")
        what = first.kind + (f" {first.coroutine}" if first.coroutine else "") + (f" [{first.state}]" if first.state else "")
        parts.append(f"\n{len(members)} @ {what}: {', '.join(names)}\n")
        parts.extend(f"#\t{site.function}\t{site.file}:{site.line}\n" for site in first.sites)
    return "".join(parts)


def render_full(stacks: Sequence[Stack]) -> str:
    """Go's ``debug=2``: every stack, threads then tasks, in the order given."""
    parts = [_summary(stacks)]
    for stack in stacks:
        parts.append(f"\n{stack.header()}:\n")
        parts.extend(f"{site.function}\n\t{site.file}:{site.line}\n" for site in stack.sites)
    return "".join(parts)


# -- heap ------------------------------------------------------------------------------


def _type_name(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def heap_rows(objects: Sequence[object]) -> list[tuple[str, int, int]]:
    """(type, count, bytes by ``sys.getsizeof``) per type of ``objects``, largest first
    (ties by name)."""
    counts = Counter(map(type, objects))
    sizes: dict[type, int] = {}
    get = sizes.get
    for kind, size in zip(map(type, objects), map(sys.getsizeof, objects, repeat(0)), strict=True):
        sizes[kind] = get(kind, 0) + size
    rows = [(_type_name(kind), n, sizes[kind]) for kind, n in counts.items()]
    rows.sort(key=lambda row: (-row[2], row[0]))
    return rows


def render_heap(rows: Sequence[tuple[str, int, int]], frozen: int, took_s: float,
                traced: Sequence[str] = (), top: int = HEAP_TOP) -> str:
    objects, size = sum(r[1] for r in rows), sum(r[2] for r in rows)
    parts = [f"heap profile: {objects} objects, {size} bytes (sys.getsizeof of the objects gc tracks; "
             f"{frozen} frozen at start not walked); walked in {took_s * 1000:.0f} ms, the member paused\n\n",
             f"{'count':>12} {'bytes':>14}  type\n"]
    parts.extend(f"{n:>12} {b:>14}  {name}\n" for name, n, b in rows[:top])
    if len(rows) > top:
        rest = rows[top:]
        parts.append(f"{sum(r[1] for r in rest):>12} {sum(r[2] for r in rest):>14}  ({len(rest)} other types)\n")
    parts.append(f"{objects:>12} {size:>14}  total\n")
    if traced:
        parts.append(f"\ntracemalloc: the {len(traced)} largest source lines\n")
        parts.extend(f"{line}\n" for line in traced)
    return "".join(parts)


# -- handlers --------------------------------------------------------------------------


class _BadParameter(ValueError):
    pass


_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


def _number(request: web.Request, name: str, default: int, low: int, high: int | None = None) -> int:
    """Query parameter ``name`` as an integer from ``low`` to ``high``; ``default`` when it is
    absent or empty (as Go's ``FormValue``). Anything else raises ``_BadParameter``."""
    raw = request.query.get(name, "")
    if raw == "":
        return default
    value = int(raw) if _INTEGER.fullmatch(raw) else None
    if value is None or value < low or (high is not None and value > high):
        want = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"
        raise _BadParameter(f"{name}: want {want}, got {raw!r}")
    return value


def _text(text: str, status: int = 200) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


_INDEX = (
    ("goroutine", "every thread's and asyncio task's stack; ?debug=1 grouped (default), ?debug=2 one each"),
    ("profile", f"a sampled CPU profile as folded stacks; ?seconds=30 (1 to {MAX_SECONDS}), ?hz=100 (1 to {MAX_HZ})"),
    ("heap", f"live objects by type (gc.get_objects, sys.getsizeof), the {HEAP_TOP} largest; ?gc=1 collects first"),
    ("cmdline", "the process's command line, NUL-separated"),
)


async def _index(request: web.Request) -> web.Response:
    name = getattr(request.app[SERVER].config, "name", "")
    lines = [f"/debug/pprof/ of kvraft member {name}\n\n"]
    lines.extend(f"/debug/pprof/{path:<10} {what}\n" for path, what in _INDEX)
    return _text("".join(lines))


async def _to_index(request: web.Request) -> web.Response:
    """Go's mux: the subtree's path without its slash is redirected to it."""
    location = "/debug/pprof/" + (f"?{request.query_string}" if request.query_string else "")
    body = f'<a href="{location}">Moved Permanently</a>.\n\n' if request.method == "GET" else ""
    return web.Response(status=301, headers={"Location": location}, content_type="text/html", text=body)


async def _unknown(_request: web.Request) -> web.Response:
    return _text("Unknown profile\n", status=404)


async def _goroutine(request: web.Request) -> web.Response:
    try:
        debug = _number(request, "debug", 1, 0)
    except _BadParameter as exc:
        return _text(f"{exc}\n", status=400)
    stacks = thread_stacks(sys._current_frames(), threading.enumerate(), threading.get_ident())
    stacks += task_stacks(asyncio.all_tasks(), asyncio.current_task())
    return _text(render_full(stacks) if debug >= 2 else render_grouped(stacks))


async def _profile(request: web.Request) -> web.Response:
    try:
        seconds = _number(request, "seconds", 30, 1, MAX_SECONDS)
        hz = _number(request, "hz", 100, 1, MAX_HZ)
    except _BadParameter as exc:
        return _text(f"{exc}\n", status=400)
    if not _PROFILING.acquire(blocking=False):
        return _text(f"{BUSY}\n", status=500)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Profile] = loop.create_future()
    stop = threading.Event()
    try:
        threading.Thread(target=_sampler, args=(loop, done, seconds, hz, stop), name="pprof-profile",
                         daemon=True).start()
    except BaseException:
        _PROFILING.release()
        raise
    try:
        while not done.done():  # (the handler is not cancelled when its client leaves: look)
            await asyncio.wait([done], timeout=_CLIENT_CHECK_S)
            if request.transport is None or request.transport.is_closing():
                return _text("the client left\n", status=499)  # (to nobody; Go's stops with its request too)
    finally:
        stop.set()  # (the sampler stops at its next sample)
    return _text(folded(done.result().counts, threading.current_thread().name))


def _sampler(loop: asyncio.AbstractEventLoop, done: asyncio.Future[Profile], seconds: int, hz: int,
             stop: threading.Event) -> None:
    result: Profile | BaseException = RuntimeError("the profile was not taken")
    try:
        result = sample(seconds, hz, stop)
    except Exception as exc:
        result = exc
    finally:
        _PROFILING.release()  # (before the answer: a profile asked for right after it may start)
        with contextlib.suppress(RuntimeError):  # (the loop closed meanwhile)
            loop.call_soon_threadsafe(_settle, done, result)


def _settle(done: asyncio.Future[Profile], result: Profile | BaseException) -> None:
    if done.done():
        return
    if isinstance(result, BaseException):
        done.set_exception(result)
    else:
        done.set_result(result)


async def _heap(request: web.Request) -> web.Response:
    try:
        collect = _number(request, "gc", 0, 0)
        _number(request, "debug", 0, 0)  # (Go's; the answer is text whatever it says)
    except _BadParameter as exc:
        return _text(f"{exc}\n", status=400)
    started = time.perf_counter()
    if collect:
        gc.collect()
    objects = gc.get_objects()
    try:
        rows = heap_rows(objects)
    finally:
        del objects
    traced: list[str] = []
    if tracemalloc.is_tracing():
        stats = tracemalloc.take_snapshot().statistics("lineno")[:TRACEMALLOC_TOP]
        traced = [str(stat) for stat in stats]
    took = time.perf_counter() - started
    return _text(render_heap(rows, gc.get_freeze_count(), took, traced))


async def _cmdline(_request: web.Request) -> web.Response:
    return _text("\x00".join(sys.orig_argv))


def install(app: web.Application) -> None:
    """The ``/debug/pprof/`` routes (``make_app`` calls this with ``--enable-pprof`` only)."""
    router = app.router
    router.add_get("/debug/pprof", _to_index)
    router.add_get("/debug/pprof/", _index)
    router.add_get("/debug/pprof/goroutine", _goroutine)
    router.add_get("/debug/pprof/profile", _profile)
    router.add_get("/debug/pprof/heap", _heap)
    router.add_get("/debug/pprof/cmdline", _cmdline)
    router.add_get("/debug/pprof/{name}", _unknown)
