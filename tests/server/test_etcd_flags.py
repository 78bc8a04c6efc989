"""Every flag ``etcd --help`` lists (the installed etcd 3.4) is a kvraft flag, and a member
started with all of them at etcd's own defaults serves: an etcd unit's command line starts a
kvraft member. The flags for features kvraft does not have (v2 discovery, the v2 proxy,
v2v3) are taken at their "off" defaults and refused otherwise, with
the way to do it instead."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvraft.server.config import ConfigError, parse_config
from kvraft.server.local import b64, free_port, post
from tests.server.helpers import wait_until

needs_etcd = pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd 3.4 (apt-get install etcd-server)")


def etcd_defaults() -> dict[str, str]:
    """``--flag`` -> the default ``etcd --help`` prints for it (quotes removed)."""
    text = subprocess.run(["etcd", "--help"], capture_output=True, text=True, timeout=30).stdout
    found = {}
    for flag, value in re.findall(r"^\s+(--[a-z0-9-]+) (.*)$", text, flags=re.MULTILINE):
        found[flag] = value.strip().strip("'")
    return found


def kvraft_flags() -> set[str]:
    text = subprocess.run([sys.executable, "-m", "kvraft.server.main", "--help"], capture_output=True, text=True,
                          timeout=60).stdout
    return set(re.findall(r"(--[a-z0-9-]+)", text))


@needs_etcd
def test_kvraft_knows_every_flag_etcd_has() -> None:
    missing = sorted(set(etcd_defaults()) - kvraft_flags())
    assert not missing, f"etcd flags kvraft does not take: {missing}"


@needs_etcd
def test_a_member_started_with_all_of_etcds_flags_at_their_defaults_serves(tmp_path: Path) -> None:
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    values = etcd_defaults()
    values.update({  # what cannot be etcd's literal default here
        "--name": "m0", "--data-dir": str(tmp_path / "m0.etcd"),
        "--listen-client-urls": client, "--advertise-client-urls": client,
        "--listen-peer-urls": peer, "--initial-advertise-peer-urls": peer,
        "--initial-cluster": f"m0={peer}", "--max-concurrent-streams": "4294967295",  # (printed math.MaxUint32)
    })
    argv = [f"{flag}={value}" for flag, value in values.items()]
    log = tmp_path / "member.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "kvraft.server.main", *argv], stdout=out, stderr=out)
    try:
        def served() -> bool:
            assert process.poll() is None, log.read_text()
            code, _body = post(client, "/v3/kv/put", {"key": b64("k"), "value": b64("v")}, timeout_s=2.0)
            return code == 200

        wait_until(served, 60, what="the member to serve")
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize(("flag", "message"), [
    ("--discovery=https://discovery.etcd.io/abc", "does not bootstrap through a v2 discovery service"),
    ("--discovery-srv-name=prod", "--discovery-srv-name needs --discovery-srv"),
    ("--discovery-proxy=http://127.0.0.1:3128", "--discovery-proxy: kvraft does not bootstrap"),
    ("--discovery-fallback=retry", "--discovery-fallback: unexpected value 'retry'"),
    ("--proxy=on", "kvraft has no v2 proxy mode"),
    ("--proxy=readonly", "kvraft has no v2 proxy mode"),
    ("--proxy=sometimes", "--proxy: unexpected value 'sometimes'"),
    ("--proxy-read-timeout=-1", "--proxy-read-timeout must not be negative"),
    ("--experimental-enable-v2v3=/v2", "no v2 API to emulate"),
])
def test_features_kvraft_does_not_have_are_refused_with_what_to_do(tmp_path: Path, flag: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config([flag, "--data-dir", str(tmp_path / "d")])


def test_their_off_values_are_taken(tmp_path: Path) -> None:
    config = parse_config(["--proxy=off", "--discovery=", "--discovery-srv=", "--discovery-fallback=exit",
                           "--experimental-enable-v2v3=", "--proxy-dial-timeout=2000", "--data-dir", str(tmp_path / "d")])
    assert (config.proxy, config.discovery_fallback, config.proxy_dial_timeout) == ("off", "exit", 2000)
