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
from scheduler.jobs import normalize_job


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


def test_a_log_tail_asks_the_agent_with_a_token_of_the_pages_user(tmp_path: Path) -> None:
    """With auth on, the agent's /logs needs a kvraft token that may read the job
    (agent.endpoint_auth): the dashboard sends one of the logged-in user's, scoped to the job,
    and revokes it after."""
    import http.server
    import threading

    cluster = LocalCluster(1, tmp_path / "kv", extra_args=["--heartbeat-interval", "50", "--election-timeout", "500"])
    cluster.start(timeout_s=90)
    p = Procs(tmp_path, endpoints(cluster))
    asked: list[str] = []

    class Agent(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.headers.get("Authorization", ""))
            body = b"epoch 1 loss 0.5\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    agent = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=agent.serve_forever, daemon=True).start()
    try:
        with SyncClient(p.endpoints, request_timeout_s=15.0) as c:
            for user, pw in (("root", "rootpw"), ("dash", "dashpw"), ("ann", "annpw")):
                c.user_add(user, pw)
            c.role_add("root")
            c.user_grant_role("root", "root")
            c.role_add("reader")
            c.role_grant_permission("reader", "READ", "/", "\0")
            for user in ("dash", "ann"):
                c.user_grant_role(user, "reader")
            job = normalize_job({"name": "lj", "tenant": "t", "priority": 0, "tasks": [
                {"name": "w", "replicas": 1, "command": ["sleep", "1"], "resources": {"gpus": 1}}]}, submitted_at=1.0)
            c.put("/registry/jobs/lj", json.dumps(job).encode())  # (as jobctl submit stores it)
            c.put("/registry/jobstatus/lj", json.dumps({"phase": "Running", "placement": [
                {"node": "n1", "rack": "r", "gpus": [0], "task": "w-0"}]}).encode())
            c.put("/registry/nodes/n1", json.dumps({"name": "n1", "agent": {
                "url": f"http://127.0.0.1:{agent.server_address[1]}"}}).encode())
            c.auth_enable()
        url = start_dashboard(p, "dash", "--user", "dash", "--password", "dashpw")
        login = urllib.request.Request(url + "api/login", data=json.dumps({"user": "ann", "password": "annpw"}).encode(),
                                       headers={"Content-Type": "application/json", "X-Requested-With": "kvraft-dashboard"})
        with urllib.request.urlopen(login, timeout=30) as r:
            cookie = r.headers["Set-Cookie"].split(";")[0]
        deadline = time.monotonic() + 30
        while True:
            request = urllib.request.Request(url + "api/jobs/lj/logs?tail=5", headers={"Cookie": cookie})
            try:
                with urllib.request.urlopen(request, timeout=30) as r:
                    assert "epoch 1 loss 0.5" in json.loads(r.read())["text"]
                    break
            except urllib.error.HTTPError as exc:  # the job not in the dashboard's view yet
                assert exc.code == 404 and time.monotonic() < deadline, (exc.code, exc.read())
                time.sleep(0.3)
        assert asked and asked[-1].startswith("Bearer kvraft-scoped."), asked
        with SyncClient(p.endpoints, user="root", password="rootpw") as c:
            assert [t.name for t in c.scoped_token_list()] == []  # revoked after the request
    finally:
        agent.shutdown()
        p.stop_all()
        cluster.stop()
