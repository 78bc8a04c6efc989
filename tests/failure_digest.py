"""What a failed test's processes said, next to its traceback.

A test that starts real daemons (members, schedulers, agents, tasks) fails with a timeout
that says what did not happen, never why: that is in the daemons' log files, under pytest's
temporary directory, and gone when CI ends. For a failed test this plugin adds a report
section ``daemon logs and machine``:

- the warning and error lines (JSON logs' ``level``, and plain lines with ``Traceback``,
  ``Error`` or ``error:``) written during the test to the ``*.log`` files under the xdist
  worker's temporary directory, the last few per file, the most recently written files first;
- the machine: load, available memory, free disk and ``/dev/shm``, the number of processes
  and the three (not kernel threads) that used the most CPU (a leaked busy process, a full disk);
- the processes started before the test that name a pytest temporary directory (daemons of an
  earlier test still running: a leaked agent or scheduler that retries its endpoints and
  finds a port that a later test's member took), with their age.

The section is a few KiB at most, so the failures at the head of CI's output show it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

START = pytest.StashKey[float]()
TITLE = "daemon logs and machine"
MAX_FILES = 10
LINES_PER_FILE = 4
MAX_LINE = 240
TAIL_BYTES = 256 * 1024
LEVELS = {"warn", "warning", "error", "fatal", "critical", "panic", "dpanic"}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[START] = time.time()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.excinfo is None or call.excinfo.errisinstance(pytest.skip.Exception):
        return
    try:
        text = digest(_basetemp(item), item.stash.get(START, time.time() - 600.0))
    except Exception as exc:  # a diagnostic never hides the failure it explains
        text = f"(no digest: {exc!r})"
    report.sections.append((TITLE, text))


def _basetemp(item: pytest.Item) -> Path | None:
    factory = getattr(item.config, "_tmp_path_factory", None)
    if factory is None:
        return None
    try:
        return Path(factory.getbasetemp())
    except (OSError, ValueError):
        return None


def digest(root: Path | None, since: float) -> str:
    """The section's text: log lines of concern written after ``since`` under ``root``, then
    the machine's state."""
    out: list[str] = []
    if root is not None and root.is_dir():
        recent = []
        for path in root.rglob("*.log"):
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if mtime >= since:
                recent.append((mtime, path))
        recent.sort(reverse=True)
        for _, path in recent[:MAX_FILES]:
            lines = concerns(path, since)
            if lines:
                out.append(f"{path.relative_to(root)}:")
                out += [f"  {line}" for line in lines]
        if not out:
            out.append(f"no warning or error in the {len(recent)} log files written during the test")
    out += machine(since)
    return "\n".join(out)


def concerns(path: Path, since: float) -> list[str]:
    """The last ``LINES_PER_FILE`` lines of concern in the tail of ``path`` written after
    ``since`` (JSON lines carry their time; other lines are taken as recent)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    picked: list[str] = []
    for line in tail:
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                when = doc.get("t")
                if str(doc.get("level", "")).lower() not in LEVELS or (isinstance(when, int | float) and when < since):
                    continue
                fields = {k: v for k, v in doc.items() if k not in ("level", "ts", "t", "caller", "msg", "logger")}
                line = f"{doc.get('level')} {doc.get('logger', '')}: {doc.get('msg')} {json.dumps(fields)}"
                picked.append(line[:MAX_LINE])
                continue
        if "Traceback" in line or "Error" in line or "error:" in line:
            picked.append(line[:MAX_LINE])
    return picked[-LINES_PER_FILE:]


MAX_EARLIER = 12


def machine(since: float | None = None) -> list[str]:
    """One line of load, memory, disk and processes, the three busiest processes and (with
    ``since``) those of earlier tests still running."""
    parts = []
    try:
        parts.append("load " + " ".join(Path("/proc/loadavg").read_text().split()[:3]))
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        parts.append(f"memory available {int(meminfo['MemAvailable'].split()[0]) // 1024} MiB")
    except (OSError, KeyError, ValueError):
        pass
    for mount in ("/tmp", "/dev/shm"):
        try:
            usage = shutil.disk_usage(mount)
            parts.append(f"{mount} free {usage.free // 2**20} MiB of {usage.total // 2**20}")
        except OSError:
            pass
    busiest = []
    earlier = []
    tick = os.sysconf("SC_CLK_TCK")
    boot = _boot_time()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if not cmd or entry.name == "1":  # kernel threads and init
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        busiest.append((int(fields[11]) + int(fields[12]), entry.name, cmd))
        started = boot + int(fields[19]) / tick if boot is not None else None
        if since is not None and started is not None and started < since and "/pytest-of-" in cmd:
            earlier.append((started, entry.name, cmd))
    parts.append(f"{len(busiest)} processes")
    busiest.sort(reverse=True)
    out = ["machine: " + ", ".join(parts)]
    out += [f"  pid {pid}: {ticks / tick:.0f} s CPU: {cmd[:160]}" for ticks, pid, cmd in busiest[:3]]
    if earlier:
        earlier.sort()
        now = time.time()
        out.append(f"{len(earlier)} processes started before this test name a pytest tmp dir (an earlier test's?):")
        out += [f"  pid {pid}: started before this test, {now - t:.0f} s ago: {cmd[:200]}"
                for t, pid, cmd in earlier[:MAX_EARLIER]]
    return out


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None
