"""``--log-package-levels`` (kvraft/server/log_levels.py): etcd's package names and
kvraft's logger names, capnslog's levels, clear errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from kvraft.server.log_levels import PACKAGES, TRACE, apply_package_levels, parse_package_levels


def test_etcds_help_example_reads_as_the_loggers_doing_those_packages_work() -> None:
    levels = parse_package_levels("etcdmain=CRITICAL,etcdserver=DEBUG")
    assert levels[0] == ("kvraft.main", logging.CRITICAL)
    assert ("kvraft.driver", logging.DEBUG) in levels and ("kvraft.node", logging.DEBUG) in levels


@pytest.mark.parametrize(("text", "want"), [
    ("", []),
    ("raft=D", [("kvraft.raft", logging.DEBUG)]),
    ("go.etcd.io/etcd/raft=warning", [("kvraft.raft", logging.WARNING)]),
    ("kvraft.storage.mvcc=TRACE", [("kvraft.storage.mvcc", TRACE)]),
    ("aiohttp.server=ERROR , *=notice", [("aiohttp.server", logging.ERROR), ("kvraft", logging.INFO)]),
    ("wal=C", [("kvraft.storage", logging.CRITICAL)]),
    ("lease=DEBUG", []),  # etcd's lessor logs nothing of its own here
])
def test_parse(text: str, want: list[tuple[str, int]]) -> None:
    assert parse_package_levels(text) == want


@pytest.mark.parametrize(("text", "error"), [
    ("raft", "cannot parse 'raft' (want package=LEVEL)"),
    ("=DEBUG", "cannot parse '=DEBUG'"),
    ("raft=LOUD", "unknown level 'LOUD'"),
    ("etcd=DEBUG", "unknown package 'etcd'"),
    ("kvraft..raft=DEBUG", "unknown package"),
])
def test_bad_values_name_the_entry(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_package_levels(text)


def test_every_package_maps_to_kvraft_loggers() -> None:
    for name, loggers in PACKAGES.items():
        assert all(logger.startswith("kvraft.") for logger in loggers), name


@pytest.fixture
def restored() -> Iterator[None]:
    names = ["kvraft", "kvraft.raft", "kvraft.storage", "kvraft.storage.mvcc"]
    before = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


def test_levels_follow_the_hierarchy_and_later_entries_win(restored: None) -> None:
    apply_package_levels(parse_package_levels("mvcc=DEBUG,kvraft.storage.mvcc=ERROR"))
    assert logging.getLogger("kvraft.storage").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("kvraft.storage.mvcc.store").getEffectiveLevel() == logging.ERROR
    apply_package_levels(parse_package_levels("raft=DEBUG,*=WARNING"))  # * resets what came before
    assert logging.getLogger("kvraft.raft").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("kvraft.storage.mvcc").getEffectiveLevel() == logging.WARNING
