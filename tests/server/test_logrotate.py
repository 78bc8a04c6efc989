"""``kvraft.logrotate``: a log file rotated as etcd's lumberjack rotates it (``--enable-log-rotation``)."""

from __future__ import annotations

import gzip
import logging
import time
from pathlib import Path

import pytest

from kvraft.logrotate import MEGABYTE, RotatingLogFile, Rotation, parse_rotation
from kvraft.server.config import ConfigError, parse_config


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"rotation-test-{id(handler)}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    return logger


def _write(logger: logging.Logger, megabytes: float) -> None:
    line = "x" * 1000
    for _ in range(int(megabytes * MEGABYTE / 1001)):
        logger.info(line)


def test_the_file_moves_aside_past_maxsize_and_backups_are_kept_as_asked(tmp_path: Path) -> None:
    path = tmp_path / "member.log"
    handler = RotatingLogFile(str(path), Rotation(maxsize=1, maxbackups=2))
    logger = _logger(handler)
    for _ in range(4):  # 4 MiB through a 1 MiB file: 3 rotations... and more backups than kept
        _write(logger, 1.05)
        time.sleep(0.002)  # (backup names differ by the millisecond)
    handler.close()
    assert path.stat().st_size <= MEGABYTE
    backups = sorted(p.name for p in tmp_path.iterdir() if p.name != "member.log")
    assert len(backups) == 2, backups
    for name in backups:  # member-2026-12-07T01-02-03.456.log, each at most the size
        assert name.startswith("member-") and name.endswith(".log") and len(name) == len("member-2026-12-07T01-02-03.456.log")
        assert (tmp_path / name).stat().st_size <= MEGABYTE


def test_backups_are_compressed_and_old_ones_dropped(tmp_path: Path) -> None:
    path = tmp_path / "member.log"
    stale = tmp_path / "member-2020-01-01T00-00-00.000.log"  # a backup from long ago
    stale.write_text("old\n")
    handler = RotatingLogFile(str(path), Rotation(maxsize=1, maxage=30, compress=True))
    logger = _logger(handler)
    _write(logger, 1.5)
    handler.close()
    assert not stale.exists()  # older than maxage (by the time in its name)
    packed = [p for p in tmp_path.iterdir() if p.name.endswith(".log.gz")]
    assert len(packed) == 1 and not [p for p in tmp_path.iterdir() if p.name.startswith("member-") and p.suffix == ".log"]
    with gzip.open(packed[0], "rt") as text:
        assert text.readline().rstrip("\n") == "x" * 1000


def test_the_rotation_config_is_read_as_etcd_reads_it() -> None:
    assert parse_rotation('{"maxsize": 5, "MaxBackups": 3, "compress": true, "other": 1}') == \
        Rotation(maxsize=5, maxbackups=3, compress=True)
    with pytest.raises(ValueError, match="improperly formatted log rotation config"):
        parse_rotation("{maxsize: 5")
    with pytest.raises(ValueError, match="invalid log rotation config"):
        parse_rotation('{"maxsize": "5"}')


@pytest.mark.parametrize(("outputs", "json_config", "message"), [
    ("default", None, "--log-outputs requires a single file path"),
    ("a.log,b.log", None, "--log-outputs requires a single file path"),
    ("stderr,a.log", '{"maxsize": 5', "improperly formatted log rotation config"),
])  # fmt: skip
def test_the_flags_are_checked(tmp_path: Path, outputs: str, json_config: str | None, message: str) -> None:
    argv = ["--data-dir", str(tmp_path / "d"), "--enable-log-rotation", "--log-outputs", outputs]
    if json_config is not None:
        argv += ["--log-rotation-config-json", json_config]
    with pytest.raises(ConfigError, match=message):
        parse_config(argv, {})
    config = parse_config(["--data-dir", str(tmp_path / "d"), "--enable-log-rotation", "--log-outputs",
                           f"stderr,{tmp_path / 'm.log'}"], {})
    assert config.enable_log_rotation


def test_configure_logging_rotates_the_file_output(tmp_path: Path) -> None:
    """The member's ``--enable-log-rotation`` reaches its file output (kvraft.client.observe)."""
    from kvraft.client.observe import configure_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("info", "json", ["stderr", str(tmp_path / "m.log")], rotation=Rotation(maxsize=2))
        kinds = [type(h) for h in root.handlers]
        assert kinds == [logging.StreamHandler, RotatingLogFile]
        assert root.handlers[1].max_bytes == 2 * MEGABYTE  # type: ignore[attr-defined]
        configure_logging("info", "json", [str(tmp_path / "m.log")])
        assert [type(h) for h in root.handlers] == [logging.FileHandler]
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = saved
