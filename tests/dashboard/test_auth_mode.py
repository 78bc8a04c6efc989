"""kvraft's auth turned on after the dashboard started: the dashboard follows the mode (it
read it once at start and kept serving everyone without a login)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from dash_harness import Procs, start_dashboard
from harness import endpoints

from kvraft.client import SyncClient
from kvraft.server.local import LocalCluster


def _session(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url + "api/session", timeout=30) as r:
        return json.loads(r.read())


def test_auth_enabled_after_the_dashboard_started_asks_for_a_login(tmp_path: Path) -> None:
    cluster = LocalCluster(1, tmp_path / "kv", extra_args=["--heartbeat-interval", "50", "--election-timeout", "500"])
    cluster.start(timeout_s=90)
    p = Procs(tmp_path, endpoints(cluster))
    try:
        with SyncClient(p.endpoints, request_timeout_s=15.0) as c:
            for user, pw in (("root", "rootpw"), ("dash", "dashpw")):
                c.user_add(user, pw)
            c.role_add("root")
            c.user_grant_role("root", "root")
            c.role_add("reader")
            c.role_grant_permission("reader", "READ", "/", "\0")
            c.user_grant_role("dash", "reader")
        url = start_dashboard(p, "dash", "--user", "dash", "--password", "dashpw")  # --poll-s 1
        assert _session(url)["auth"] is False
        with SyncClient(p.endpoints, request_timeout_s=15.0) as c:
            c.auth_enable()
        deadline = time.monotonic() + 30
        while _session(url)["auth"] is not True:
            assert time.monotonic() < deadline, "the dashboard never noticed auth on"
            time.sleep(0.2)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + "api/stream", timeout=30)
        assert err.value.code == 401
    finally:
        p.stop_all()
        cluster.stop()
