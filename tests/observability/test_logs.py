"""Every daemon logs one JSON object per line (kvraft.client.observe.JsonFormatter): the
members with etcd's ``--logger zap`` default (and ``--log-outputs`` to a file), the
scheduler, the agent and the dashboard. Each line parses on its own and carries the fixed
keys; the daemons' own fields (member, node, scheduler) are on every line."""

from __future__ import annotations

import json
import logging
import subprocess
from datetime import datetime
from pathlib import Path

from kvraft.client.observe import ConsoleFormatter, JsonFormatter, configure_logging
from kvraft.server.local import LocalCluster
from tests.observability.conftest import FAST_FLAGS, PY, ROOT, Stack, wait_for

FIXED = ("level", "ts", "logger", "caller", "msg")


def _lines(path: Path) -> list[dict[str, object]]:
    docs = []
    text = path.read_text()
    if not text.endswith("\n"):  # the daemon is writing its last line right now: leave it
        text = text[: text.rfind("\n") + 1]
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"{path.name}:{number} is not JSON: {line[:300]!r}") from exc
        assert isinstance(doc, dict), (path.name, number, line)
        for key in FIXED:
            assert key in doc, (path.name, number, key, doc)
        assert doc["level"] in ("debug", "info", "warn", "error", "fatal"), doc
        datetime.strptime(str(doc["ts"]), "%Y-%m-%dT%H:%M:%S.%fZ")
        docs.append(doc)
    return docs


def test_every_daemon_writes_json_lines(stack: Stack) -> None:
    # the members: zap is the default; m1 also writes to a file through --log-outputs
    for name, member in stack.cluster.members.items():
        docs = wait_for(lambda p=member.log_path: _lines(p), what=f"{name}'s log")
        assert all(d["member"] == name for d in docs)
        assert any("serving clients" in str(d["msg"]) for d in docs), docs[:5]
    zap = wait_for(lambda: _lines(stack.zap_file), what="m1's --log-outputs file")
    assert all(d["member"] == "m1" for d in zap)
    for daemon, key, value in (("scheduler", "scheduler", "obs-sched"), ("agent", "node", stack.node),
                               ("dashboard", "dashboard", None)):
        docs = wait_for(lambda d=daemon: _lines(stack.logs[d]), what=f"the {daemon}'s log")
        assert all(key in d for d in docs), (daemon, docs[:3])
        if value is not None:
            assert all(d[key] == value for d in docs), (daemon, docs[:3])
    # a record's structured fields land as keys (the agent's "started" line)
    started = [d for d in _lines(stack.logs["agent"]) if d["msg"] == "started"]
    assert started and started[0]["runtime"] == "process" and started[0]["node"] == stack.node


def test_formatter_keeps_fixed_keys_and_reports_exceptions() -> None:
    formatter = JsonFormatter({"member": "m9", "msg": "static never replaces msg"})
    record = logging.LogRecord("kvraft.test", logging.WARNING, "/x/y/file.py", 42, "hello %s", ("world",), None)
    record.fields = {"level": "shadow", "key": b"\xff", "n": 3}
    doc = json.loads(formatter.format(record))
    assert (doc["level"], doc["msg"], doc["caller"], doc["logger"]) == ("warn", "hello world", "file.py:42", "kvraft.test")
    assert (doc["member"], doc["field_msg"], doc["field_level"], doc["n"]) == ("m9", "static never replaces msg", "shadow", 3)
    assert doc["key"] == str(b"\xff")  # anything not JSON is written with str()
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("kvraft.test", logging.ERROR, "f.py", 1, "failed", (), sys.exc_info())
    doc = json.loads(formatter.format(record))
    assert doc["error"] == "ValueError('boom')" and "Traceback" in doc["stacktrace"]
    assert "\n" not in formatter.format(record)  # one line, whatever the traceback
    record = logging.LogRecord("kvraft.test", logging.INFO, "f.py", 1, "a\u2028b\x85c\nd é", (), None)
    line = formatter.format(record)
    assert len(line.splitlines()) == 1 and json.loads(line)["msg"] == "a\u2028b\x85c\nd é"


def test_bad_log_settings_are_refused(tmp_path: Path) -> None:
    try:
        configure_logging("loud")
    except ValueError as exc:
        assert "unknown log level 'loud'" in str(exc)
    else:
        raise AssertionError("a bad level was accepted")
    for argv, message in (
        ([PY, "-m", "kvraft.server.main", "--logger", "glog"], "--logger must be 'zap'"),
        ([PY, "-m", "kvraft.server.main", "--log-format", "text"], "unsupported log format: text"),
        ([PY, "-m", "kvraft.server.main", "--data-dir", str(tmp_path / "d"), "--log-outputs",
          str(tmp_path / "no" / "such" / "dir" / "f.log")], "--log-outputs"),
        ([PY, "-m", "agent", "--log-format", "xml"], "invalid choice"),
        ([PY, "-m", "agent", "--log-format", "yaml"], "'json', 'console', 'text'"),
        ([PY, "-m", "scheduler.service", "--log-format", "xml"], "invalid choice"),
        ([PY, "-m", "scheduler.dashboard.main", "--log-format", "xml"], "invalid choice"),
    ):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 2, (argv, result.returncode, result.stderr[-500:])
        assert message in result.stderr, (argv, result.stderr[-500:])


def test_capnslog_keeps_the_text_lines(tmp_path: Path) -> None:
    """``--logger capnslog``: the plain text lines of before (time, level, member, logger)."""
    cluster = LocalCluster(1, tmp_path / "kv", extra_args=[*FAST_FLAGS, "--logger", "capnslog"])
    try:
        cluster.start(timeout_s=90)
        path = cluster.members["m0"].log_path
        line = wait_for(lambda: next((ln for ln in path.read_text().splitlines() if "serving clients" in ln), None),
                        what="the serving line")
        assert not line.startswith("{") and " INFO m0 kvraft.main: member m0 (" in line, line
    finally:
        cluster.stop()


def test_console_format_is_zaps_console_encoder(tmp_path: Path) -> None:
    """etcd 3.6's ``--log-format console``: ts, level, logger, caller and message separated by
    tabs, the other fields as one spaced JSON object, a stack trace on the lines after; a
    member started with it writes such lines."""
    formatter = ConsoleFormatter({"member": "m9"})
    record = logging.LogRecord("kvraft.test", logging.WARNING, "/x/y/file.py", 42, "hello %s", ("world",), None)
    record.fields = {"took": "1ms", "msg": "shadowed"}
    ts, level, logger, caller, msg, rest = formatter.format(record).split("\t")
    datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    assert (level, logger, caller, msg) == ("warn", "kvraft.test", "file.py:42", "hello world")
    assert rest == '{"member": "m9", "took": "1ms", "field_msg": "shadowed"}'
    assert ConsoleFormatter().format(logging.LogRecord("k", logging.INFO, "f.py", 1, "bare", (), None)).count("\t") == 4
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("kvraft.test", logging.ERROR, "f.py", 1, "failed", (), sys.exc_info())
    first, *stack = formatter.format(record).splitlines()
    assert first.endswith('{"member": "m9", "error": "ValueError(\'boom\')"}') and stack[0].startswith("Traceback")

    cluster = LocalCluster(1, tmp_path / "kv", extra_args=[*FAST_FLAGS, "--log-format", "console"])
    try:
        cluster.start(timeout_s=90)
        path = cluster.members["m0"].log_path
        line = wait_for(lambda: next((ln for ln in path.read_text().splitlines() if "serving clients" in ln), None),
                        what="the serving line")
        assert line.split("\t")[1:3] == ["info", "kvraft.main"] and line.endswith('{"member": "m0"}'), line
    finally:
        cluster.stop()
