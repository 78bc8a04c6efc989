"""With kvraft auth on, the dashboard asks for a login (kvraft's authenticate), keeps the
session in an HttpOnly, SameSite=Strict cookie, and shows cancel/cordon only to writers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dash_harness import Procs, start_dashboard
from harness import endpoints

from kvraft.client import SyncClient
from kvraft.server.local import LocalCluster

FETCH_JS = """async ([path, method]) => {
  const r = await fetch(path, {method, headers: {"X-Requested-With": "kvraft-dashboard"}});
  return [r.status, await r.json()];
}"""


@pytest.fixture
def auth_procs(cluster3: LocalCluster, tmp_path: Path) -> Iterator[Procs]:
    eps = endpoints(cluster3)
    with SyncClient(eps, request_timeout_s=15.0) as c:
        c.put("/registry/nodes/n0", json.dumps({"name": "n0", "gpus": 2, "rack": "rack-a", "healthy": True}).encode())
        c.put("/registry/leases/n0", b"{}")
        for user, pw in (("root", "rootpw"), ("dash", "dashpw"), ("viewer", "viewpw"), ("ops", "opspw")):
            c.user_add(user, pw)
        for role in ("root", "reader", "writer"):
            c.role_add(role)
        c.user_grant_role("root", "root")
        c.role_grant_permission("reader", "READ", "/registry/", "/registry0")
        c.role_grant_permission("reader", "READ", "/jobs/", "/jobs0")
        c.role_grant_permission("writer", "READWRITE", "/registry/", "/registry0")
        for user in ("dash", "viewer", "ops"):
            c.user_grant_role(user, "reader")
        c.user_grant_role("ops", "writer")
        c.auth_enable()
    p = Procs(tmp_path, eps)
    try:
        yield p
    finally:
        p.stop_all()


def login(page: Any, user: str, password: str) -> None:
    page.fill("#login-form input[name=user]", user)
    page.fill("#login-form input[name=password]", password)
    page.click("#login-form button[type=submit]")


def test_login_required_and_rights_follow_the_user(auth_procs: Procs, page: Any) -> None:
    url = start_dashboard(auth_procs, "dash", "--user", "dash", "--password", "dashpw")
    page.goto(url)
    page.wait_for_selector("#login-form", state="visible")
    assert page.locator("#main").is_hidden()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + "api/stream", timeout=30)
    assert err.value.code == 401
    with urllib.request.urlopen(url, timeout=30) as r:  # the page carries no state without a session
        assert b'id="first-state"' not in r.read()
    # a wrong password is refused with kvraft's message
    login(page, "viewer", "wrong")
    page.wait_for_function("document.getElementById('login-error').textContent.includes('login failed')")
    assert page.locator("#main").is_hidden()
    # a reader sees the cluster, read-only
    login(page, "viewer", "viewpw")
    page.wait_for_selector('.node[data-node="n0"]')
    assert "viewer (read-only)" in page.inner_text("#user")
    cookie = next(c for c in page.context.cookies() if c["name"] == "kvraft_dashboard")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    status, body = page.evaluate(FETCH_JS, ["/api/nodes/n0/cordon", "POST"])
    assert status == 403 and "viewer may not write" in body["error"]
    # log out: the login form again; a writer may cordon, and the page shows it live
    page.click("#logout")
    page.wait_for_selector("#login-form", state="visible")
    login(page, "ops", "opspw")
    page.wait_for_selector('.node[data-node="n0"]')
    assert "read-only" not in page.inner_text("#user")
    status, body = page.evaluate(FETCH_JS, ["/api/nodes/n0/cordon", "POST"])
    assert status == 200, body
    page.wait_for_selector('.node.cordoned[data-node="n0"]')
    with SyncClient(auth_procs.endpoints, user="root", password="rootpw") as c:
        assert c.get("/registry/cordons/n0").kvs

