"""What every daemon (``kvraft``, ``kvraft-scheduler``, ``kvraft-agent``, ``kvraft-dashboard``)
shares for observability: structured JSON logs and the ``/metrics`` endpoint.

It lives in ``kvraft.client`` because the scheduler and the agents may reach kvraft only
through that package (tests/test_house_rules.py); nothing here touches the client itself.

Logs (docs/observability.md): ``JsonFormatter`` writes one JSON object per line, zap's shape as
etcd writes it (``level``, ``ts`` in ISO 8601 UTC, ``caller``, ``msg``) plus ``logger``, the
daemon's static fields and the record's ``extra={"fields": {...}}``; an exception adds
``error`` (its message) and ``stacktrace``. ``configure_logging`` installs it (or the plain
text format) on the root logger, writing to ``stderr``, ``stdout`` or files (etcd's
``--log-outputs``).

Metrics: ``new_registry`` is a per-daemon ``CollectorRegistry`` (never the global one: several
daemons share a process in tests) carrying prometheus_client's ``process_*`` and ``python_*``
collectors; each daemon adds a collector that reads its live state at scrape time.
``metrics_response`` renders it for aiohttp, in the format the scraper's ``Accept`` asks for
(the Prometheus text format by default, OpenMetrics on request).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder

from kvraft.logrotate import RotatingLogFile, Rotation

__all__ = [
    "LEVELS",
    "LOG_FORMATS",
    "ConsoleFormatter",
    "JsonFormatter",
    "configure_logging",
    "metrics_response",
    "new_registry",
    "parse_level",
]

LOG_FORMATS = ("json", "console", "text")

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
    "error": logging.ERROR, "panic": logging.CRITICAL, "fatal": logging.CRITICAL, "critical": logging.CRITICAL,
}
"""Level names the daemons accept (zap's and Python's)."""

_ZAP_LEVEL = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error",
              logging.CRITICAL: "fatal"}

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_RESERVED = ("level", "ts", "logger", "caller", "msg")

_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def parse_level(name: str) -> int:
    """A level name (any case) -> ``logging`` level; ``ValueError`` names the accepted ones."""
    try:
        return LEVELS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {name!r} (use one of {', '.join(LEVELS)})") from None


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module docstring for the keys. ``static`` fields
    (the member or node name) go on every line; a record's ``fields`` never overwrite the
    five fixed keys (they are prefixed ``field_`` instead)."""

    def __init__(self, static: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        text = json.dumps(self.fields(record), default=str, separators=(",", ":"), ensure_ascii=False)  # UTF-8, as zap
        return text.translate(_LINE_BREAKS)  # one line even for readers that split on U+2028

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The line's keys and values, in order."""
        created = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, Any] = {
            "level": _ZAP_LEVEL.get(record.levelno, record.levelname.lower()),
            "ts": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "logger": record.name,
            "caller": f"{record.filename}:{record.lineno}",
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        for source in (self.static, extra if isinstance(extra, Mapping) else {}):
            for key, value in source.items():
                doc["field_" + key if key in _RESERVED else key] = value
        if record.exc_info:
            doc["error"] = repr(record.exc_info[1])
            doc["stacktrace"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return doc


class ConsoleFormatter(JsonFormatter):
    """zap's console encoder with etcd's encoder settings (etcd 3.6's ``--log-format
    console``): ``ts``, ``level``, ``logger``, ``caller`` and ``msg`` separated by tabs, then
    the other fields as one JSON object (zap's spaced form, ``{"member": "m0"}``; left out
    when there are none), an exception's stack trace on the lines after."""

    def format(self, record: logging.LogRecord) -> str:
        doc = self.fields(record)
        head = [doc.pop(key) for key in ("ts", "level", "logger", "caller", "msg")]
        stack = doc.pop("stacktrace", None)
        line = "\t".join(str(part) for part in head)
        if doc:
            line += "\t" + json.dumps(doc, default=str, ensure_ascii=False)
        line = line.translate(_LINE_BREAKS)
        if stack:
            line += "\n" + stack
        return line


def _handler(output: str, rotation: Rotation | None = None) -> logging.Handler:
    if output in ("", "default", "stderr"):
        return logging.StreamHandler(sys.stderr)
    if output == "stdout":
        return logging.StreamHandler(sys.stdout)
    if rotation is not None:  # (etcd's --enable-log-rotation: kvraft.logrotate)
        return RotatingLogFile(output, rotation)
    return logging.FileHandler(output, encoding="utf-8")  # etcd's --log-outputs takes file paths


def configure_logging(level: str | int = "info", log_format: str = "json", outputs: Iterable[str] = ("stderr",),
                      static: Mapping[str, Any] | None = None, text_format: str = _TEXT_FORMAT,
                      rotation: Rotation | None = None) -> None:
    """Replace the root logger's handlers: ``log_format`` is ``json``, ``console`` or ``text``; each of
    ``outputs`` is ``stderr`` (or ``default``), ``stdout`` or a file path (appended to; with
    ``rotation``, rotated as etcd's lumberjack does)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r} (use json, console or text)")
    numeric = parse_level(level) if isinstance(level, str) else level
    formatter: logging.Formatter = (JsonFormatter(static) if log_format == "json" else ConsoleFormatter(static)
                                    if log_format == "console" else logging.Formatter(text_format))
    handlers = []
    for output in list(outputs) or ["stderr"]:
        handler = _handler(output, rotation)
        handler.setFormatter(formatter)
        handlers.append(handler)
    logging.basicConfig(level=numeric, handlers=handlers, force=True)


def new_registry() -> CollectorRegistry:
    """A registry of its own with the ``process_*`` and ``python_*`` collectors."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_response(registry: CollectorRegistry, request: web.Request | None = None) -> web.Response:
    """``GET /metrics``: ``registry`` collected now, in the encoding ``Accept`` asks for (the
    text format when prometheus_client cannot read it, e.g. ``version=abc``, as Go's
    ``expfmt.Negotiate`` answers what it does not know)."""
    try:
        encoder, content_type = choose_encoder(request.headers.get("Accept", "") if request is not None else "")
    except (TypeError, ValueError):
        encoder, content_type = choose_encoder("")
    return web.Response(body=encoder(registry), headers={"Content-Type": content_type})
