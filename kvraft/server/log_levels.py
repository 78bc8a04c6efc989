"""etcd's ``--log-package-levels``: a log level per package, e.g.
``etcdmain=CRITICAL,etcdserver=DEBUG``.

etcd 3.4 names its capnslog packages (``raft``, ``rafthttp``, ``etcdserver``, ``mvcc``, ...);
kvraft logs through Python loggers named ``kvraft.<part>``. Each entry names either one of
etcd's packages, which stands for the kvraft loggers doing that package's work
(``PACKAGES``), or a logger by its own name (``kvraft.raft``, ``kvraft.storage.mvcc``,
``aiohttp.server``), or ``*`` for every kvraft logger. A logger's level covers the loggers
below it that have none of their own (Python's hierarchy), so ``kvraft.storage=DEBUG`` turns
on the store's and the compactor's debug lines alone. Entries apply left to right over
``--log-level``, which stays the default for everything not named.

Levels are capnslog's: CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG, TRACE, or their first
letters; zap's names (``warn``, ``panic``, ``fatal``) are taken too, in any case. etcd 3.4
ignores the flag unless ``--logger=capnslog`` and only warns about a value it cannot parse;
kvraft applies it to both loggers and refuses such a value at start.

Pure: ``parse_package_levels`` turns the flag into ``[(logger name, level), ...]``, and
``apply_package_levels`` sets them on ``logging``.
"""

from __future__ import annotations

import logging
import re

__all__ = ["PACKAGES", "apply_package_levels", "parse_package_levels"]

TRACE = 5
"""capnslog's TRACE: below DEBUG (kvraft logs nothing finer than DEBUG)."""

_LEVELS = {
    "CRITICAL": logging.CRITICAL, "C": logging.CRITICAL, "PANIC": logging.CRITICAL, "FATAL": logging.CRITICAL,
    "ERROR": logging.ERROR, "E": logging.ERROR,
    "WARNING": logging.WARNING, "W": logging.WARNING, "WARN": logging.WARNING,
    "NOTICE": logging.INFO, "N": logging.INFO,  # (Python has no NOTICE; kvraft's notable lines are INFO)
    "INFO": logging.INFO, "I": logging.INFO,
    "DEBUG": logging.DEBUG, "D": logging.DEBUG,
    "TRACE": TRACE, "T": TRACE,
}

PACKAGES: dict[str, tuple[str, ...]] = {
    "etcdmain": ("kvraft.main",),
    "embed": ("kvraft.main",),
    "etcdserver": ("kvraft.node", "kvraft.driver", "kvraft.features", "kvraft.join", "kvraft.corruption",
                   "kvraft.compactor", "kvraft.peer_features", "kvraft.failpoints"),
    "etcdserver/api": ("kvraft.api", "kvraft.watch"),
    "etcdserver/api/v3rpc": ("kvraft.api", "kvraft.watch"),
    "etcdserver/api/rafthttp": ("kvraft.transport", "kvraft.tls"),
    "rafthttp": ("kvraft.transport", "kvraft.tls"),
    "raft": ("kvraft.raft",),
    "mvcc": ("kvraft.storage", "kvraft.apply"),
    "mvcc/backend": ("kvraft.storage",),
    "wal": ("kvraft.storage",),
    "etcdserver/api/snap": ("kvraft.storage",),
    "snap": ("kvraft.storage",),
    # etcd packages whose work logs nothing of its own in kvraft (its lines are under the above)
    "lease": (),
    "auth": (),
    "pkg/transport": ("kvraft.tls",),
    "proxy/grpcproxy": (),
}
"""etcd 3.4's package names (with or without ``go.etcd.io/etcd/``) and the kvraft loggers
that do their work."""

_LOGGER = re.compile(r"(kvraft|aiohttp)(\.[A-Za-z_][A-Za-z0-9_]*)*")
_ETCD_PREFIXES = ("go.etcd.io/etcd/", "github.com/coreos/etcd/")


def _level(text: str) -> int:
    level = _LEVELS.get(text.strip().upper())
    if level is None:
        raise ValueError(f"unknown level {text.strip()!r} (want CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG or TRACE)")
    return level


def _loggers(name: str) -> tuple[str, ...]:
    if name == "*":
        return ("kvraft",)
    for prefix in _ETCD_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if name in PACKAGES:
        return PACKAGES[name]
    if _LOGGER.fullmatch(name):
        return (name,)
    raise ValueError(f"unknown package {name!r}: name one of etcd's ({', '.join(sorted(PACKAGES))}), "
                     "a kvraft logger (kvraft.raft, kvraft.storage, ...) or *")


def parse_package_levels(text: str) -> list[tuple[str, int]]:
    """``pkg=LEVEL,...`` -> ``[(logger, level), ...]`` in order; ``ValueError`` names the
    entry that cannot be read. An empty flag is no entries."""
    out: list[tuple[str, int]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, level = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"cannot parse {item!r} (want package=LEVEL)")
        value = _level(level)
        out.extend((logger, value) for logger in _loggers(name.strip()))
    return out


def apply_package_levels(levels: list[tuple[str, int]]) -> None:
    """Set each named logger's level (later entries win). ``*`` resets the named loggers'
    own levels first, as capnslog's ``*=LEVEL`` sets every package."""
    for name, level in levels:
        if name == "kvraft":
            for other in list(logging.Logger.manager.loggerDict):
                logger = logging.Logger.manager.loggerDict[other]
                if other.startswith("kvraft.") and isinstance(logger, logging.Logger):
                    logger.setLevel(logging.NOTSET)
        logging.getLogger(name).setLevel(level)
