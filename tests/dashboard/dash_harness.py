"""Helpers and fixtures of the dashboard's browser tests: a real 3-member kvraft, fake agents and a
scheduler (tests/scheduler_daemon/harness.py), a ``kvraft-dashboard`` process, and Debian's
chromium driven by playwright (skipped with a reason when either is missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scheduler_daemon"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import PY, ROOT, Procs, cluster3, procs  # noqa: E402,F401  (fixtures)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


def start_dashboard(p: Procs, name: str, *extra: str) -> str:
    """``kvraft-dashboard`` on a free port; its URL (from the line it prints once listening)."""
    log = open(p.base / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([PY, "-m", "scheduler.dashboard", "--endpoints", ",".join(p.endpoints),
                             "--listen-url", "http://127.0.0.1:0", "--poll-s", "1", "--usage-poll-s", "1",
                             *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    p.procs[name] = proc
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("dashboard: http://127.0.0.1:"), \
        f"dashboard did not start: {line!r} {(p.base / f'{name}.log').read_text()[-2000:]}"
    return line.split()[1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    try:
        yield pg
    finally:
        ctx.close()
