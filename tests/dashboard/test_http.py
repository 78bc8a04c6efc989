"""The dashboard's HTTP surface in-process (aiohttp's test server, no kvraft): what a client
that is not the page sends (unknown routes, wrong methods and bodies, HEAD, streams dropped
at once) gets a clear answer and leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from scheduler.dashboard.app import COOKIE, Dashboard, DashboardConfig, make_app

PAGE = {"X-Requested-With": "kvraft-dashboard"}


@pytest.fixture
async def dash() -> AsyncIterator[tuple[TestClient[Any, Any], Dashboard]]:
    """The dashboard's app without its start (no kvraft to reach) or stop."""
    app, d = make_app(DashboardConfig(endpoints=["http://127.0.0.1:1"], allow_writes=True))
    app.on_startup.clear()
    app.on_cleanup.clear()
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client, d
    finally:
        await client.close()
        await d.client.close()


async def test_api_routes_that_do_not_exist_or_take_another_method_answer_json(
        dash: tuple[TestClient[Any, Any], Dashboard]) -> None:
    """Were aiohttp's plain-text ``404: Not Found`` / ``405: Method Not Allowed``; the API's
    errors are ``{"error": ...}`` (docs/dashboard.md), and a 405 keeps its Allow header."""
    client, _ = dash
    for method, path, status in (("GET", "/api/nope", 404), ("GET", "/api/jobs/", 404),
                                 ("POST", "/api/jobs/x/bogus", 404), ("PUT", "/api/login", 405),
                                 ("DELETE", "/api/jobs/x", 405), ("GET", "/api/logout", 405)):
        resp = await client.request(method, path)
        assert resp.status == status, (method, path, resp.status)
        assert resp.content_type == "application/json", (method, path, await resp.text())
        assert (await resp.json())["error"], (method, path)
        if status == 405:
            assert resp.headers["Allow"], (method, path)
    resp = await client.put("/api/login")
    assert resp.headers["Allow"] == "POST"
    resp = await client.post("/api/login", data=b"{" * (2 << 20), headers=PAGE)
    assert resp.status == 413 and "exceeded" in (await resp.json())["error"]


@pytest.mark.parametrize("path", ["/api/login", "/api/logout"])
async def test_login_and_logout_need_the_pages_header(dash: tuple[TestClient[Any, Any], Dashboard], path: str) -> None:
    """A form on another site could log the browser in (into the attacker's account: a JSON
    body passes as text/plain) or out; only the page sets ``X-Requested-With``."""
    client, d = dash
    d.auth = True
    body = json.dumps({"user": "ops", "password": "x"})
    resp = await client.post(path, data=body, headers={"Content-Type": "text/plain"})
    assert resp.status == 403 and (await resp.json())["error"] == "missing X-Requested-With"
    assert COOKIE not in resp.cookies


async def test_login_fields_that_are_not_strings_are_a_400(dash: tuple[TestClient[Any, Any], Dashboard]) -> None:
    """``{"user": null}`` logged in as the user "None" (``str()`` of anything); now a 400."""
    client, d = dash
    d.auth = True
    for body in ({"user": None, "password": "x"}, {"user": ["ops"], "password": "x"}, {"user": 7},
                 {"user": "ops", "password": None}, {"user": "ops", "password": 1}):
        resp = await client.post("/api/login", json=body, headers=PAGE)
        assert resp.status == 400, (body, resp.status)
        assert "must be strings" in (await resp.json())["error"], body


async def test_head_of_the_event_stream_is_405_not_an_endless_body(
        dash: tuple[TestClient[Any, Any], Dashboard]) -> None:
    """HEAD /api/stream wrote the snapshot and every diff after its headers (a HEAD answer
    has no body: a keep-alive client read them as the next response)."""
    client, _ = dash
    resp = await client.head("/api/stream")
    assert resp.status == 405 and resp.headers["Allow"] == "GET"


async def test_a_page_gone_before_the_stream_headers_leaves_no_traceback_or_subscriber() -> None:
    """A page closed right after its request: prepare() raised ClientConnectionResetError out
    of the handler (aiohttp logged 'Error handling request' with a traceback)."""
    from aiohttp.http_writer import StreamWriter

    d = Dashboard(DashboardConfig(endpoints=["http://127.0.0.1:1"]))
    protocol = mock.Mock(transport=mock.Mock(is_closing=lambda: True))
    loop = asyncio.get_running_loop()
    req = make_mocked_request("GET", "/api/stream", writer=StreamWriter(protocol, loop), protocol=protocol,
                              transport=protocol.transport)
    resp = await d.stream(req)
    assert resp is not None and not d.live.subscribers
    await d.client.close()



async def test_the_state_inlined_in_the_page_cannot_end_its_script(dash: tuple[TestClient[Any, Any], Dashboard]) -> None:
    """A string anyone may write to the registry (a node record's gpu_type) holding
    ``<!--<script>`` put the HTML tokenizer in its double-escaped state: the state's block then
    swallowed the page's script and the page drew nothing. ``<`` is sent as ``\\u003c``."""
    import json
    import re

    client, d = dash
    d.live.items = {"rack/r": {"name": "r", "type": "<!--<script>", "note": "</script><b>"}}
    d.live.seq += 1
    d.live.informer.synced.set()
    page = await (await client.get("/")).text()
    block = re.search(r'<script type="application/json" id="first-state">(.*?)</script>', page, re.S)
    assert block is not None
    assert "<" not in block.group(1)
    assert json.loads(block.group(1))["snapshot"] == d.live.items
    assert page.count("<script") == 2  # the state, then the page's own script


@pytest.mark.parametrize("path", ["/api/jobs/a%2Fb/cancel", "/api/jobs/a%2Fb/suspend", "/api/jobs/a%2F..%2Fb/requeue",
                                  "/api/nodes/n%2F..%2Fx/cordon", "/api/nodes/n%2Fx/uncordon"])
async def test_a_name_no_job_or_node_can_have_is_a_400(dash: tuple[TestClient[Any, Any], Dashboard], path: str) -> None:
    """A job or node name with a '/' (sent as %2F; '..' too, by a client that does not
    normalize paths) was a ValueError out of the key helpers: a 500 and a traceback in the log."""
    client, d = dash
    resp = await client.post(path, headers={"X-Requested-With": "kvraft-dashboard"})
    assert resp.status == 400, (path, resp.status, await resp.text())
    assert "must be non-empty and contain no '/'" in (await resp.json())["error"]
    req = make_mocked_request("POST", "/api/jobs/%2e%2e/cancel", headers={"X-Requested-With": "kvraft-dashboard"},
                              match_info={"job": ".."})
    with pytest.raises(web.HTTPBadRequest):
        await d.cancel(req)


async def test_a_scheduler_url_that_answers_no_metrics_is_a_failed_scrape() -> None:
    """A --scheduler-url answering 404 (a typo'd port: another daemon) counted as a scrape
    (queue depth 0, kvraft_dashboard_scheduler_scrape_ok 1); a body that is not UTF-8 ended
    the poll task for good (UnicodeDecodeError), so the item never changed again."""
    from scheduler.dashboard.live import LiveState

    hits: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path.startswith("/nf"):
            return web.Response(status=404, text="404: Not Found")
        return web.Response(body=b"# \xff\xfe\nkvraft_scheduler_leader 0\n", content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    server = TestServer(app)
    await server.start_server()
    live = LiveState(None, scheduler_urls=[str(server.make_url("/nf")), str(server.make_url("/bad"))], poll_s=0.01)
    task = asyncio.get_running_loop().create_task(live._poll_scheduler())
    try:
        async with asyncio.timeout(30):
            while hits.count("/bad/metrics") < 3:  # still polling after a body that is not UTF-8
                assert not task.done(), task.exception()
                await asyncio.sleep(0.01)
        assert live.metrics == {"kvraft_scheduler_leader": 0.0}  # the second URL's, not the 404's nothing
    finally:
        task.cancel()
        await server.close()


async def test_the_goodbye_reaches_a_page_whose_queue_is_full() -> None:
    """At shutdown every stream gets ``{"bye": true}`` and ends; a page that had fallen 256
    messages behind got the whole state in its place, so its stream went on until aiohttp's
    shutdown timeout cancelled it."""
    from scheduler.dashboard.live import LiveState

    live = LiveState(None)
    q, _ = live.subscribe()
    for seq in range(q.maxsize):
        live.publish({"seq": seq, "set": {}, "del": []})
    live.publish({"bye": True})
    got = [q.get_nowait() for _ in range(q.qsize())]
    assert got[-1] == {"bye": True}


@pytest.mark.parametrize("tail", ["0", "-1", "-5", "abc", "1.5", ""])
async def test_a_log_tail_below_one_is_a_400(dash: tuple[TestClient[Any, Any], Dashboard], tail: str) -> None:
    """tail=0 and tail=-1 (kubectl's 'all') were taken as tail=1: one line, silently."""
    client, _ = dash
    resp = await client.get(f"/api/jobs/x/logs?tail={tail}")
    assert resp.status == 400, (tail, resp.status, await resp.text())
    assert (await resp.json())["error"] == f"tail must be an integer from 1 to 5000 (more is 5000), not {tail!r}"


class _Refused:
    """A session's kvraft client whose user kvraft no longer takes (deleted, new password)."""

    def __init__(self) -> None:
        self.gets = 0
        self.closed = False

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        from kvraft.client import InvalidArgumentError

        self.gets += 1
        raise InvalidArgumentError("etcdserver: authentication failed, invalid user ID or password")

    async def close(self) -> None:
        self.closed = True


async def test_a_session_whose_user_kvraft_refuses_now_ends_its_stream(
        dash: tuple[TestClient[Any, Any], Dashboard]) -> None:
    """A user deleted in kvraft (or whose password changed) went on watching the whole
    cluster on an open page for the session's 12 h: the stream checks the session's user with
    kvraft at most once a minute and ends with a logout event when it is refused."""
    import time

    from scheduler.dashboard.app import COOKIE, Session

    client, d = dash
    d.auth = True
    refused = _Refused()
    d.sessions["tok"] = Session("ops", refused, True, time.time() + 3600)  # type: ignore[arg-type]
    resp = await client.get("/api/stream", cookies={COOKIE: "tok"})
    assert resp.status == 200
    assert (await resp.content.readline()).startswith(b"data: ")  # the first state: checked a moment ago
    await resp.content.readline()
    d.sessions["tok"].checked = time.time() - 3600  # as a minute later
    d.live.publish({"seq": 1, "revision": 1, "set": {}, "del": []})
    async with asyncio.timeout(30):
        rest = await resp.content.read()
    assert rest == b"event: logout\ndata: {}\n\n" and refused.gets == 1
    assert "tok" not in d.sessions
    await d.stop(None)  # type: ignore[arg-type]
    assert refused.closed


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/jobs/x/cancel"), ("POST", "/api/jobs/x/requeue"),
                                              ("POST", "/api/nodes/n/cordon")])
async def test_a_call_of_a_session_kvraft_refuses_now_is_a_401_that_ends_it(
        dash: tuple[TestClient[Any, Any], Dashboard], method: str, path: str) -> None:
    """Was a 502 'kvraft: etcdserver: authentication failed', as if kvraft were down, and the
    session stayed; now 401 (the page shows its login form) and the session is gone."""
    import time

    from scheduler.dashboard.app import COOKIE, Session

    client, d = dash
    d.auth = True
    refused = _Refused()

    class Txn:
        def then(self, *ops: Any) -> Txn:
            return self

        async def commit(self) -> Any:
            await refused.get()

    refused.txn = Txn  # type: ignore[attr-defined]
    d.sessions["tok"] = Session("ops", refused, True, time.time() + 3600)  # type: ignore[arg-type]
    resp = await client.request(method, path, cookies={COOKIE: "tok"}, headers={"X-Requested-With": "kvraft-dashboard"})
    assert resp.status == 401, (path, resp.status, await resp.text())
    assert (await resp.json())["error"].startswith("session ended: etcdserver: authentication failed")
    assert "tok" not in d.sessions


async def test_the_sessions_gauge_counts_only_sessions_that_have_not_expired(
        dash: tuple[TestClient[Any, Any], Dashboard]) -> None:
    """An expired session stays in memory until its cookie comes back (a closed browser never
    sends it): kvraft_dashboard_sessions counted those too, up to 1,000, for ever."""
    import time

    from prometheus_client.parser import text_string_to_metric_families

    from scheduler.dashboard.app import Session

    client, d = dash
    d.sessions["old"] = Session("alice", _Refused(), False, time.time() - 1)  # type: ignore[arg-type]
    d.sessions["new"] = Session("bob", _Refused(), False, time.time() + 3600)  # type: ignore[arg-type]
    text = await (await client.get("/metrics")).text()
    (family,) = (f for f in text_string_to_metric_families(text) if f.name == "kvraft_dashboard_sessions")
    assert [s.value for s in family.samples] == [1.0]


async def test_the_page_may_not_be_framed_by_another_site(dash: tuple[TestClient[Any, Any], Dashboard]) -> None:
    """Any site could show the page in an invisible frame and have a visitor click its cancel
    or cordon buttons (clickjacking: --allow-writes without auth needs no cookie)."""
    client, _ = dash
    resp = await client.get("/")
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Content-Security-Policy"] == "frame-ancestors 'none'"


async def test_a_progress_record_too_large_is_neither_kept_nor_pushed() -> None:
    """A job's ranks may write /jobs/<job>/progress (their scoped token): 1,000 records of
    1.5 MB each were kept in the dashboard's memory and each one pushed to every open page."""
    from scheduler.dashboard.live import MAX_RECORD_BYTES, LiveState

    live = LiveState(None)
    q, _ = live.subscribe()
    live._progress("/jobs/j/progress", b'{"epoch": 1, "loss": 0.5}')
    live._progress("/jobs/j/progress", b'{"epoch": 2, "pad": "' + b"x" * MAX_RECORD_BYTES + b'"}')
    assert live.progress["j"] == [{"epoch": 1, "loss": 0.5}]
    assert [q.get_nowait() for _ in range(q.qsize())] == [{"progress": {"job": "j", "record": {"epoch": 1, "loss": 0.5}}}]


async def test_a_jobs_progress_records_are_forgotten_when_its_key_is_deleted() -> None:
    """The records of every job ever seen stayed in memory for the dashboard's life (up to
    1,000 each), though the scheduler deletes /jobs/<job>/ when it collects a finished job."""
    from scheduler.dashboard.live import LiveState

    live = LiveState(None)
    live._progress("/jobs/j/progress", b'{"epoch": 1, "loss": 0.5}')
    live._progress("/jobs/k/progress", b'{"epoch": 1, "loss": 0.4}')
    live._progress("/jobs/j/checkpoint", b"", put=False)  # another key of the job: kept
    assert set(live.progress) == {"j", "k"}
    live._progress("/jobs/j/progress", b"", put=False)
    assert set(live.progress) == {"k"}
