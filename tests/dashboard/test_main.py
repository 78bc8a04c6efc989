"""``kvraft-dashboard``'s flags: a bad one is one line naming it and exit 2, before anything
starts (no traceback, no dashboard running on nonsense); at start, kvraft not answering yet
is waited for, what waiting cannot mend is one line and exit 1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from kvraft.client import TLSConfig
from kvraft.testing.dns import FakeDNS
from kvraft.testing.ports import free_port
from scheduler.dashboard.app import DashboardConfig
from scheduler.dashboard.main import main, run
from tests.scheduler_daemon.harness import ROOT, start_member_at, wait_for


@pytest.mark.parametrize(("argv", "message"), [
    (["--listen-url", "http://127.0.0.1:99999"], "--listen-url 'http://127.0.0.1:99999': Port out of range 0-65535"),
    (["--listen-url", "http://127.0.0.1:0/path"], "--listen-url 'http://127.0.0.1:0/path': expected http://HOST:PORT"),
    (["--listen-url", "ftp://127.0.0.1:0"], "--listen-url 'ftp://127.0.0.1:0': expected http://HOST:PORT"),
    (["--poll-s", "nan"], "--poll-s: must be a number > 0, not nan"),
    (["--poll-s", "0"], "--poll-s: must be a number > 0, not 0.0"),
    (["--usage-poll-s", "inf"], "--usage-poll-s: must be a number > 0, not inf"),
    (["--request-timeout-s", "-1"], "--request-timeout-s: must be a number > 0, not -1.0"),
    (["--scheduler-url", "notaurl"], "--scheduler-url: 'notaurl' is not a URL; expected http://HOST:PORT"),
    (["--scheduler-url", "http://127.0.0.1:1/x"], "--scheduler-url: 'http://127.0.0.1:1/x' has a path"),
    (["--auto-sync-interval-s", "-1"], "--auto-sync-interval-s: must be a number >= 0 (0: never), not -1.0"),
    (["--discovery-srv-name", "blue"], "--discovery-srv-name needs --discovery-srv"),
])
def test_a_bad_flag_is_one_line_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Were a traceback (a port over 65535), or accepted: a path ignored, NaN and inf poll
    intervals, a --scheduler-url that every poll failed to reach without a word."""
    assert main(["--endpoints", "http://127.0.0.1:1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvraft-dashboard: ") and message in err and len(err.splitlines()) == 1, err


def test_a_dashboard_started_before_kvraft_waits_for_it(tmp_path: Path) -> None:
    """It exited 1 when no endpoint answered (a dashboard started with the members stayed
    down); now it retries, logging each try, and serves once a member answers."""
    client_port, peer_port, http_port = free_port(), free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log_path = tmp_path / "dashboard.log"
    with open(log_path, "wb") as log:
        dash = subprocess.Popen([sys.executable, "-m", "scheduler.dashboard.main", "--endpoints",
                                 f"127.0.0.1:{client_port}", "--listen-url", f"http://127.0.0.1:{http_port}",
                                 "--request-timeout-s", "1", "--log-format", "text"], cwd=ROOT, env=env,
                                stdout=log, stderr=log)
    member: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: log_path.read_text().count("unreachable") >= 2, 60, "two logged tries")
        assert dash.poll() is None, log_path.read_text()
        member = start_member_at(tmp_path, client_port, peer_port)

        def healthy() -> bool:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5) as r:
                return r.status == 200
            return False

        wait_for(healthy, 60, "the dashboard serving once kvraft answers")
        dash.send_signal(signal.SIGTERM)
        assert dash.wait(30) == 0, log_path.read_text()
    finally:
        for p in (dash, member):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_what_waiting_cannot_mend_is_exit_1_and_a_stop_while_waiting_exit_0(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "ca.crt"
    garbage.write_text("not a certificate\n")
    # run(), not main(): main() would point the process's logging at this test's captured stderr
    config = DashboardConfig([f"https://127.0.0.1:{free_port()}"], tls=TLSConfig.from_flags(str(garbage), None, None, False))
    assert asyncio.run(run(config, f"http://127.0.0.1:{free_port()}")) == 1
    err = capsys.readouterr().err
    assert err.startswith("kvraft-dashboard: kvraft at ") and len(err.splitlines()) == 1, err

    async def stop_soon() -> int:
        asyncio.get_running_loop().call_later(1.5, os.kill, os.getpid(), signal.SIGTERM)
        config = DashboardConfig([f"127.0.0.1:{free_port()}"], request_timeout_s=1)
        return await run(config, f"http://127.0.0.1:{free_port()}")

    assert asyncio.run(stop_soon()) == 0


def test_the_endpoints_from_dns_and_a_failed_lookup(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``-d DOMAIN``: the endpoints of the client SRV records (as jobctl's); a lookup that
    finds nothing is one line and exit 2, before anything starts."""
    seen: list[DashboardConfig] = []

    async def fake_run(config: DashboardConfig, listen_url: str) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr("scheduler.dashboard.main.run", fake_run)
    monkeypatch.setattr("scheduler.dashboard.main.configure_logging", lambda *a, **k: None)
    with FakeDNS() as dns:
        dns.add_srv("_etcd-client._tcp.kvraft.test", "localhost", 2379)
        monkeypatch.setenv("KVRAFT_DNS_SERVER", dns.address)
        assert main(["-d", "kvraft.test"]) == 0
        assert seen[0].endpoints == ["http://localhost:2379"] and seen[0].auto_sync_interval_s == 60.0
        assert main(["-d", "other.test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvraft-dashboard: --discovery-srv other.test: dns lookup errors: "), err
