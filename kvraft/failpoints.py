"""Failpoints: named places in the member where a test can inject a fault (etcd's gofail).

Compiled in everywhere, active only when the environment variable ``KVRAFT_FAILPOINTS`` is
set when the process starts; without it ``hit`` returns at once and the debug route does
not exist. The variable holds the failpoints to arm at start, gofail's syntax::

    KVRAFT_FAILPOINTS='raft_before_save=sleep(200);apply_before_commit=1*crash'

and, with the variable set, ``/debug/failpoints`` on the client URL lists them (GET), arms
one (``PUT /debug/failpoints/NAME`` with the action as the body) or disarms it (DELETE).

Actions (optionally prefixed with ``N*``: fire at most N times, or ``P%``: fire with
probability P):

* ``sleep(MS)``: block the calling thread for MS milliseconds (a slow disk, a stalled apply);
* ``error``: raise ``OSError(EIO)`` (a failing disk write);
* ``panic``: exit the process at once (SIGKILL-like; the OS keeps what was written);
* ``crash``: a power cut: every registered crash hook drops the data its layer wrote but did
  not fsync (the Raft log truncates its unsynced tail), then the process exits;
* ``off``: disarmed.

The sites are listed in docs/robustness.md; every site is a plain ``hit("name")`` call.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ENV", "FailpointError", "arm", "armed", "disarm", "enabled", "hit", "on_crash"]

ENV = "KVRAFT_FAILPOINTS"
EXIT_CODE = 86

log = logging.getLogger("kvraft.failpoints")

_SPEC = re.compile(r"^(?:(?P<count>\d+)\*|(?P<percent>\d+(?:\.\d+)?)%)?(?P<action>sleep\((?P<ms>\d+)\)|error|panic|crash|off)$")


class FailpointError(ValueError):
    """A failpoint action that does not parse."""


@dataclass
class _Armed:
    spec: str
    action: str
    ms: int = 0
    remaining: int | None = None
    percent: float | None = None


_lock = threading.Lock()
_armed: dict[str, _Armed] = {}
_crash_hooks: list[Callable[[], None]] = []
_enabled = ENV in os.environ
_rng = random.Random()


def enabled() -> bool:
    return _enabled


def _parse(spec: str) -> _Armed:
    m = _SPEC.match(spec.strip())
    if m is None:
        raise FailpointError(f"bad failpoint action {spec!r}: want [N*|P%]sleep(MS)|error|panic|crash|off")
    return _Armed(
        spec.strip(),
        "sleep" if m["ms"] is not None else m["action"],
        int(m["ms"] or 0),
        int(m["count"]) if m["count"] else None,
        float(m["percent"]) if m["percent"] else None,
    )


def arm(name: str, spec: str) -> None:
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise FailpointError(f"bad failpoint name {name!r}")
    parsed = _parse(spec)
    with _lock:
        if parsed.action == "off":
            _armed.pop(name, None)
        else:
            _armed[name] = parsed


def disarm(name: str) -> None:
    with _lock:
        _armed.pop(name, None)


def armed() -> dict[str, str]:
    with _lock:
        return {name: a.spec for name, a in sorted(_armed.items())}


def on_crash(hook: Callable[[], None]) -> None:
    """Register what a power cut would lose (called on ``crash``, in registration order)."""
    with _lock:
        _crash_hooks.append(hook)


def hit(name: str) -> None:
    """The failpoint ``name``: nothing unless armed."""
    if not _armed:
        return
    with _lock:
        a = _armed.get(name)
        if a is None:
            return
        if a.percent is not None and _rng.random() * 100 >= a.percent:
            return
        if a.remaining is not None:
            a.remaining -= 1
            if a.remaining <= 0:
                del _armed[name]
        hooks = list(_crash_hooks)
    log.warning("failpoint %s: %s", name, a.spec)
    if a.action == "sleep":
        time.sleep(a.ms / 1000)
    elif a.action == "error":
        raise OSError(errno.EIO, f"failpoint {name}: injected I/O error")
    elif a.action == "panic":
        os._exit(EXIT_CODE)
    elif a.action == "crash":
        for hook in hooks:
            try:
                hook()
            except Exception:  # a power cut does not wait for tidy errors
                log.exception("crash hook failed")
        os._exit(EXIT_CODE)


def _arm_from_env() -> None:
    for item in filter(None, (part.strip() for part in os.environ.get(ENV, "").split(";"))):
        name, sep, spec = item.partition("=")
        if not sep:
            raise FailpointError(f"{ENV}: want NAME=ACTION, got {item!r}")
        arm(name.strip(), spec)


if _enabled:
    _arm_from_env()
