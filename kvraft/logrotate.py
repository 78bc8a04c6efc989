"""``RotatingLogFile``: a log file that rotates as etcd's does (``--enable-log-rotation``).

etcd 3.5 hands its one file output to lumberjack, configured by
``--log-rotation-config-json`` (``{"maxsize": 100, "maxage": 0, "maxbackups": 0,
"localtime": false, "compress": false}``). The same rules here:

- a record that would take the file past ``maxsize`` megabytes (MiB, as lumberjack counts)
  first moves the file aside as ``<name>-<time>.<ext>`` (``app.log`` ->
  ``app-2026-12-07T01-02-03.456.log``; UTC unless ``localtime``) and starts a new one;
- then backups beyond ``maxbackups`` (0: keep all), the oldest first, and those older than
  ``maxage`` days (0: keep) are removed, and with ``compress`` the others are gzipped
  (``.log.gz``).
"""

from __future__ import annotations

import calendar
import gzip
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_ROTATION_JSON", "Rotation", "RotatingLogFile", "parse_rotation"]

DEFAULT_ROTATION_JSON = '{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}'
MEGABYTE = 1024 * 1024
TIME_FORMAT = "%Y-%m-%dT%H-%M-%S"


@dataclass(frozen=True)
class Rotation:
    maxsize: int = 100
    maxage: int = 0
    maxbackups: int = 0
    localtime: bool = False
    compress: bool = False


def parse_rotation(text: str) -> Rotation:
    """``--log-rotation-config-json`` as etcd reads it: keys it does not know are ignored, a
    value of the wrong type or bad JSON is an error (``ValueError``, etcd's words)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"improperly formatted log rotation config: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"invalid log rotation config: cannot unmarshal {type(doc).__name__} into the config object")
    values: dict[str, Any] = {}
    for name, kind in (("maxsize", int), ("maxage", int), ("maxbackups", int), ("localtime", bool),
                       ("compress", bool)):
        for key, value in doc.items():
            if key.lower() != name:  # (Go's json matches field names without case)
                continue
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"invalid log rotation config: {key} wants a {'number' if kind is int else 'bool'}")
            values[name] = value
    return Rotation(**values)


class RotatingLogFile(logging.FileHandler):
    """A ``FileHandler`` (appending) that rotates as described in the module docstring."""

    def __init__(self, path: str, rotation: Rotation) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.rotation = rotation
        self.max_bytes = max(rotation.maxsize, 0) * MEGABYTE or 100 * MEGABYTE
        stem, ext = os.path.splitext(os.path.basename(self.baseFilename))
        self._stem, self._ext = stem, ext
        self._backup = re.compile(re.escape(stem) + r"-(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3})" + re.escape(ext)
                                  + r"(\.gz)?$")

    def emit(self, record: logging.LogRecord) -> None:
        """``StreamHandler.emit``, the record formatted once for its size and its write."""
        try:
            line = self.format(record) + self.terminator
            if self.stream is None:
                self.stream = self._open()
            written = self.stream.tell()
            if written > 0 and written + len(line.encode("utf-8")) > self.max_bytes:
                self.rotate()
            self.stream.write(line)
            self.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 (logging's rule: a failing handler reports, never raises)
            self.handleError(record)

    def backup_name(self, now: float) -> str:
        stamp = time.localtime(now) if self.rotation.localtime else time.gmtime(now)
        millis = int(now * 1000) % 1000
        name = f"{self._stem}-{time.strftime(TIME_FORMAT, stamp)}.{millis:03d}{self._ext}"
        return os.path.join(os.path.dirname(self.baseFilename), name)

    def rotate(self) -> None:
        """Move the file aside, start a new one, then drop or compress old backups."""
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        if os.path.exists(self.baseFilename):
            os.rename(self.baseFilename, self.backup_name(time.time()))
        self.stream = self._open()
        self.clean()

    def backups(self) -> list[tuple[float, Path]]:
        """The rotated files of this log with the times in their names, the newest first."""
        directory = Path(self.baseFilename).parent
        found = []
        for path in directory.iterdir():
            if (m := self._backup.match(path.name)) is None:
                continue
            stamp, millis = m.group(1).rsplit(".", 1)
            fields = time.strptime(stamp, TIME_FORMAT)
            when = time.mktime(fields) if self.rotation.localtime else calendar.timegm(fields)
            found.append((when + int(millis) / 1000, path))
        return sorted(found, reverse=True)

    def clean(self) -> None:
        backups = self.backups()
        keep = backups[: self.rotation.maxbackups] if self.rotation.maxbackups > 0 else backups
        if self.rotation.maxage > 0:
            cutoff = time.time() - self.rotation.maxage * 86400
            keep = [(when, path) for when, path in keep if when >= cutoff]
        kept = {path for _, path in keep}
        for _, path in backups:
            if path not in kept:
                path.unlink(missing_ok=True)
        if self.rotation.compress:
            for path in sorted(kept):
                if path.suffix != ".gz":
                    with path.open("rb") as plain, gzip.open(f"{path}.gz", "wb") as packed:
                        shutil.copyfileobj(plain, packed)
                    path.unlink()
