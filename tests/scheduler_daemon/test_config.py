"""kvraft-scheduler's settings: a mistake in a flag or in the YAML file is a ValueError naming
the flag or key, the value and what is allowed (the daemon prints it and exits 2), never a
traceback nor a scheduler that starts on a value it should have refused; what it meets at
start and cannot mend by waiting (a listen URL in use, TLS files that do not load) is one line
and exit 1; no kvraft answering yet is waited for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvraft.testing.ports import free_port
from scheduler.service import main, run
from scheduler.service_config import load_config
from tests.scheduler_daemon.harness import ROOT, start_member_at, wait_for


@pytest.mark.parametrize(("argv", "match"), [
    (["--election-ttl-s", "99999999999"], "--election-ttl-s: 99999999999 is out of range"),
    (["--cycle-interval-s", "nan"], "--cycle-interval-s: must be a finite number, not nan"),
    (["--cycle-interval-s", "0"], "--cycle-interval-s: 0.0 is out of range: must be > 0"),
    (["--cycle-interval-s", "-1"], "--cycle-interval-s: -1.0 is out of range"),
    (["--request-timeout-s", "0"], "--request-timeout-s: 0.0 is out of range"),
    (["--request-timeout-s", "inf"], "--request-timeout-s: must be a finite number"),
    (["--max-txn-ops", "0"], "--max-txn-ops: 0 is out of range: must be >= 1"),
    (["--ttl-seconds-after-finished", "nan"], "--ttl-seconds-after-finished: must be a finite number"),
    (["--accounting-retention-months", "-1"], "--accounting-retention-months: -1 is out of range: must be >= 0"),
    (["--endpoints", ""], "--endpoints: no endpoint given"),
    (["--endpoints", "ftp://127.0.0.1:2379"], "the scheme must be http or https"),
    (["--endpoints", "http://127.0.0.1:2379/v3"], "has a path"),
    (["--endpoints", "127.0.0.1"], "has no port"),
    (["--listen-url", "127.0.0.1:10251"], "--listen-url: '127.0.0.1:10251' is not a URL; expected http://HOST:PORT"),
    (["--listen-url", "http://127.0.0.1:99999"], "--listen-url: .* is not a valid URL"),
    (["--listen-url", ""], "--listen-url: empty URL"),
    (["--name", ""], "--name: must not be empty"),
    (["--name", "a b"], "--name: 'a b'"),
    (["--key", "/etc/kvraft/pki/scheduler.key"], "--cert and --key go together: --cert is missing"),
    (["--cert", "/nonexistent.crt", "--key", "/nonexistent.key"], "--cert /nonexistent.crt: does not exist"),
])
def test_bad_flags(argv: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_config(argv)


@pytest.mark.parametrize(("text", "match"), [
    ("election-ttl-s: 5\nelection-ttl-s: 6\n", "mapping key 'election-ttl-s' appears twice"),
    ("election-ttl-s: [1]\n", "election-ttl-s: --election-ttl-s: must be an integer, not [1]"),
    ("election-ttl-s: abc\n", "election-ttl-s: --election-ttl-s: must be an integer, not 'abc'"),
    ("cycle-interval-s: .nan\n", "cycle-interval-s: --cycle-interval-s: must be a finite number"),
    ("election: maybe\n", "election: --election: must be true or false, not 'maybe'"),
    ("endpoints: 5\n", "endpoints: --endpoints: must be a comma-separated string or a list of strings, not 5"),
    ("endpoints: {a: 1}\n", "endpoints: --endpoints: must be"),
    ("profile: [a]\n", "profile: --profile: must be a string, not ['a']"),
    ("name: null\n", "--name: must not be empty"),
    ("a: [\n", "--config-file .*: while parsing"),
    ("- a\n", "must be a mapping of settings, not a list"),
])
def test_bad_yaml(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "scheduler.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=re.escape(match) if "*" not in match else match):
        load_config(["--config-file", str(f)])


def test_good_yaml(tmp_path: Path) -> None:
    f = tmp_path / "scheduler.yaml"
    f.write_text("endpoints: [127.0.0.1:2379, 'https://10.0.0.1:2379']\nelection: false\nelection-ttl-s: '15'\n"
                 "cycle-interval-s: 2\nttl-seconds-after-finished: -1\n")
    cfg = load_config(["--config-file", str(f)])
    assert (cfg.endpoints, cfg.election, cfg.election_ttl_s, cfg.cycle_interval_s, cfg.ttl_seconds_after_finished) == (
        ["127.0.0.1:2379", "https://10.0.0.1:2379"], False, 15, 2.0, -1.0)


def test_main_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--max-txn-ops", "0"]) == 2
    assert capsys.readouterr().err == "kvraft-scheduler: --max-txn-ops: 0 is out of range: must be >= 1\n"


def test_start_problems_are_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as busy, socket.socket() as closed:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections refused
        port, dead = busy.getsockname()[1], closed.getsockname()[1]
        cfg = load_config(["--endpoints", f"127.0.0.1:{dead}", "--listen-url", f"http://127.0.0.1:{port}",
                           "--request-timeout-s", "1"])
        assert asyncio.run(run(cfg)) == 1
        assert re.fullmatch(rf"kvraft-scheduler: --listen-url http://127.0.0.1:{port}: .*address already in use\n",
                            capsys.readouterr().err)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            cfg.listen_url = f"http://127.0.0.1:{s.getsockname()[1]}"
        garbage = tmp_path / "ca.crt"
        garbage.write_text("not a certificate\n")
        cfg.cacert = str(garbage)
        assert asyncio.run(run(cfg)) == 1  # retrying cannot mend it (no kvraft answering is waited for)
        err = capsys.readouterr().err
        assert err.startswith("kvraft-scheduler: --cacert/--cert/--key: ") and err.count("\n") == 1, err


def _health(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_scheduler_started_before_kvraft_waits_for_it(tmp_path: Path) -> None:
    """kube-scheduler waits for its API server; so does kvraft-scheduler (it exited 1, and a
    scheduler started with the members, or before them, stayed down): it retries with a backoff
    and logs each try, /health is 503 meanwhile, and it leads once a member answers."""
    client_port, peer_port, http_port = free_port(), free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    sched_log = tmp_path / "scheduler.log"
    with open(sched_log, "wb") as log:
        sched = subprocess.Popen([sys.executable, "-m", "scheduler.service", "--endpoints", f"127.0.0.1:{client_port}",
                                  "--listen-url", f"http://127.0.0.1:{http_port}", "--election-ttl-s", "2",
                                  "--request-timeout-s", "1", "--log-format", "text"], cwd=ROOT, env=env,
                                 stdout=log, stderr=log)
    member: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: sched_log.read_text().count("kvraft unreachable") >= 2, 60, "two logged tries")
        assert sched.poll() is None, sched_log.read_text()
        code, doc = wait_for(lambda: _try(lambda: _health(http_port)), 30, "/health")
        assert code == 503 and doc["leader"] is False, doc
        member = start_member_at(tmp_path, client_port, peer_port)
        wait_for(lambda: (_try(lambda: _health(http_port)) or (0, {}))[1].get("leader") is True, 60,
                 "the scheduler leading once kvraft answers")
        assert _health(http_port)[0] == 200
        sched.send_signal(signal.SIGTERM)
        assert sched.wait(30) == 0, sched_log.read_text()
    finally:
        for p in (sched, member):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def _try(f: Callable[[], Any]) -> Any:
    with contextlib.suppress(OSError):
        return f()
    return None


def test_a_stop_while_waiting_for_kvraft_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
        cfg = load_config(["--endpoints", f"127.0.0.1:{dead}", "--listen-url", f"http://127.0.0.1:{free_port()}",
                           "--request-timeout-s", "1"])

        async def stop_soon() -> int:
            loop = asyncio.get_running_loop()
            loop.call_later(1.5, os.kill, os.getpid(), signal.SIGTERM)
            return await run(cfg)

        assert asyncio.run(stop_soon()) == 0
    assert capsys.readouterr().err == ""


def test_auto_sync_interval(tmp_path) -> None:
    """clientv3's AutoSyncInterval for the scheduler's client: every minute by default, 0 off."""
    assert load_config([]).auto_sync_interval_s == 60.0
    f = tmp_path / "s.yaml"
    f.write_text("auto-sync-interval-s: 0\n")
    assert load_config(["--config-file", str(f)]).auto_sync_interval_s == 0
    with pytest.raises(ValueError, match="--auto-sync-interval-s: -5.0 is out of range"):
        load_config(["--auto-sync-interval-s", "-5"])
