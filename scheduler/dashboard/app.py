"""``kvraft-dashboard``: the live page (aiohttp), fed by kvraft watches, pushed over SSE.

Routes:

- ``GET /``, ``/static/{app.js,app.css}``: the page (package data, no build step);
- ``GET /api/session``: ``{"auth", "user", "can_write"}``; ``POST /api/login`` (JSON
  ``{"user", "password"}``, kvraft's authenticate) sets an HttpOnly, SameSite=Strict session
  cookie; ``POST /api/logout``; every POST needs the page's ``X-Requested-With`` header;
- ``GET /api/stream``: Server-Sent Events; the first message is the whole state
  (``snapshot``), then diffs (``set``/``del`` of items) and trainer ``progress`` records;
- ``GET /api/jobs/{job}``: a job's panel (timeline, placement, loss/accuracy per epoch);
- ``GET /api/jobs/{job}/logs?task=T&tail=N``: the task's log tail through its agent's endpoint;
- ``POST /api/jobs/{job}/cancel``, ``POST /api/jobs/{job}/suspend|resume`` (``jobctl suspend`` /
  ``resume``), ``POST /api/jobs/{job}/requeue`` (stop the current run and
  queue it again, as ``jobctl requeue``), ``POST /api/nodes/{node}/cordon|uncordon``: only for a
  user allowed to write (with auth: the user's kvraft rights; without: ``--allow-writes``).
- ``GET /health``; ``GET /metrics`` (Prometheus text, ``scheduler.dashboard.metrics``).

With kvraft auth on, every ``/api/`` route but session and login needs a logged-in session;
that session's kvraft calls (job panel, logs lookup, cancel, suspend, requeue, cordon) use the user's token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from agent.endpoint_auth import caller_token
from kvraft.client import (
    Client,
    ClientError,
    Compare,
    EndpointError,
    InvalidArgumentError,
    Op,
    PermissionDeniedError,
    TLSConfig,
    UnauthenticatedError,
    UnavailableError,
)
from kvraft.client.observe import metrics_response
from scheduler import evictions, keys
from scheduler.dashboard import model
from scheduler.dashboard.live import LiveState
from scheduler.dashboard.metrics import dashboard_registry

__all__ = ["COOKIE", "DashboardConfig", "Session", "make_app"]

log = logging.getLogger("kvraft.dashboard")

COOKIE = "kvraft_dashboard"
SESSION_TTL_S = 12 * 3600
SESSION_CHECK_S = 60.0  # how often an open page's session is checked with kvraft
MAX_SESSIONS = 1000
NO_FRAMES = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}  # no clickjacking


@dataclass
class DashboardConfig:
    endpoints: list[str]
    tls: TLSConfig | None = None
    user: str | None = None  # the dashboard's own identity (reads /registry/ and /jobs/)
    password: str | None = None
    allow_writes: bool = False  # without kvraft auth: show cancel / cordon
    scheduler_urls: list[str] = field(default_factory=list)
    poll_s: float = 1.5
    request_timeout_s: float = 10.0
    usage_poll_s: float = 60.0  # this month's accounting records (/accounting/) read this often
    auto_sync_interval_s: float = 60.0  # the dashboard's own client takes the members' client URLs this often


@dataclass
class Session:
    user: str
    client: Client
    can_write: bool
    expires: float
    checked: float = field(default_factory=time.time)  # when kvraft last took the user


async def can_write(client: Client) -> bool:
    """Whether the client's user may write jobs and cordons: a txn that never takes its
    branch still has every op's permission checked (as etcd does)."""
    probe = keys.CORDONS + "~dashboard-probe"
    try:
        await client.txn().if_(Compare.version(probe, "<", 0)).then(
            Op.put(keys.JOBS + "~dashboard-probe", b""), Op.put(probe, b"")).commit()
    except PermissionDeniedError:
        return False
    return True


class Dashboard:
    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.client = self._client(config.endpoints, config.user, config.password, config.auto_sync_interval_s)
        self.live = LiveState(self.client, scheduler_urls=config.scheduler_urls, poll_s=config.poll_s,
                              usage_poll_s=config.usage_poll_s)
        self.auth = False
        self._auth_watch: asyncio.Task[None] | None = None
        self.sessions: dict[str, Session] = {}
        self.http: aiohttp.ClientSession | None = None
        self._agent_tls: ssl.SSLContext | bool | None = None
        self._closing: set[asyncio.Task[None]] = set()  # expired sessions' clients (the loop keeps weak refs)

    def _client(self, endpoints: list[str], user: str | None, password: str | None,
                auto_sync_interval_s: float = 0.0) -> Client:
        return Client(endpoints, user=user, password=password, tls=self.config.tls,
                      request_timeout_s=self.config.request_timeout_s, auto_sync_interval_s=auto_sync_interval_s)

    async def start(self, app: web.Application) -> None:
        if not self.client.is_open:  # main() opened it already, waiting for kvraft
            await self.client.open()
        self.auth = (await self.client.auth_status()).enabled
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        await self.live.start()
        self._auth_watch = asyncio.get_running_loop().create_task(self._follow_auth_mode())

    async def _follow_auth_mode(self) -> None:
        """kvraft's auth turned on or off after the dashboard started: every ``poll_s`` (with
        the member status) the mode is read again. It was read once at start: a dashboard
        started before ``auth enable`` kept serving the cluster, and with --allow-writes
        cancels and cordons under its own identity, to anyone without a login."""
        while True:
            await asyncio.sleep(self.config.poll_s)
            try:
                enabled = (await self.client.auth_status()).enabled
            except ClientError:
                continue  # kvraft unreachable: the mode stays as last seen
            if enabled != self.auth:
                log.warning("kvraft auth is now %s: %s", "on" if enabled else "off",
                            "a login is required" if enabled else "no login is asked for")
                self.auth = enabled  # an open stream without a session ends at its next message

    async def close_streams(self, app: web.Application) -> None:
        self.live.publish({"bye": True})

    async def stop(self, app: web.Application) -> None:
        if self._auth_watch is not None:
            self._auth_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._auth_watch
        await self.live.stop()
        if self._closing:
            await asyncio.wait(set(self._closing))
        for s in list(self.sessions.values()):
            await s.client.close()
        self.sessions.clear()
        if self.http is not None:
            await self.http.close()
        await self.client.close()

    @property
    def agent_tls(self) -> ssl.SSLContext | bool:
        """For an https agent: the dashboard's --cacert (the cluster's CA, as a rule), else the
        system's CAs; made at the first log tail (a CA file that does not load is kvraft's
        error at start, reported there)."""
        if self._agent_tls is None:
            self._agent_tls = self.config.tls.context() if self.config.tls is not None else True
        return self._agent_tls

    # --- sessions ----------------------------------------------------------------------------
    def session(self, request: web.Request) -> Session | None:
        token = request.cookies.get(COOKIE)
        s = self.sessions.get(token or "")
        if s is not None and s.expires < time.time():
            self._end(token or "", s)
            return None
        return s

    def _end(self, token: str, s: Session) -> None:
        if self.sessions.pop(token, None) is None:  # ended already (by another of its pages)
            return
        closing = asyncio.get_running_loop().create_task(s.client.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def checked(self, request: web.Request) -> Session | None:
        """The session, still taken by kvraft: checked at most every ``SESSION_CHECK_S`` (an
        open page makes no other call), it ends when its user was deleted, its password
        changed or it may no longer read ``/registry/`` (what login checks)."""
        s = self.session(request)
        if s is None or time.time() - s.checked < SESSION_CHECK_S:
            return s
        try:
            await s.client.get(keys.REGISTRY, prefix=True, limit=1, keys_only=True)
        except (InvalidArgumentError, UnauthenticatedError, PermissionDeniedError) as exc:  # a refused login is
            # etcd's InvalidArgument "authentication failed"
            log.info("session ended", extra={"fields": {"user": s.user, "error": str(exc)}})
            self._end(request.cookies.get(COOKIE, ""), s)
            return None
        except ClientError:
            return s  # kvraft unreachable: not the user's doing
        s.checked = time.time()
        return s

    def require(self, request: web.Request) -> Session | None:
        """The session when auth is on (401 without one); None when auth is off."""
        if not self.auth:
            return None
        s = self.session(request)
        if s is None:
            raise web.HTTPUnauthorized(text=json.dumps({"error": "login required"}), content_type="application/json")
        return s

    @staticmethod
    def from_page(request: web.Request) -> None:
        """A POST must carry the page's ``X-Requested-With`` (403 without): a form on another
        site cannot set a header, and a script there may not without CORS, which is never
        granted. So no other site makes a browser log in (into an account of the attacker's
        choosing: a JSON body passes as a text/plain form), log out or write."""
        if request.headers.get("X-Requested-With") != "kvraft-dashboard":
            raise web.HTTPForbidden(text=json.dumps({"error": "missing X-Requested-With"}),
                                    content_type="application/json")

    def writer(self, request: web.Request) -> Client:
        s = self.require(request)
        self.from_page(request)
        if s is None:
            if not self.config.allow_writes:
                raise web.HTTPForbidden(text=json.dumps({"error": "read-only dashboard (start it with --allow-writes)"}),
                                        content_type="application/json")
            return self.client
        if not s.can_write:
            raise web.HTTPForbidden(text=json.dumps({"error": f"user {s.user} may not write jobs or cordons"}),
                                    content_type="application/json")
        return s.client

    @staticmethod
    def name(request: web.Request, part: str) -> str:
        """The job or node name in the URL; one with a '/' (sent as %2F), '.' or '..' is a 400
        (no job or node has one, and the key helpers refuse it)."""
        try:
            return keys.check_name(request.match_info[part], part)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=json.dumps({"error": str(exc)}), content_type="application/json") from None

    def kvraft_error(self, request: web.Request, exc: ClientError) -> web.Response:
        """A failed kvraft call of a handler: 403 for a permission kvraft denies; 401, and the
        session ended, when kvraft no longer takes the session's user (a refused login is
        etcd's InvalidArgument "authentication failed"); else 502."""
        if isinstance(exc, PermissionDeniedError):
            return web.json_response({"error": str(exc)}, status=403)
        s = self.session(request) if self.auth else None
        if s is not None and (isinstance(exc, UnauthenticatedError) or
                              isinstance(exc, InvalidArgumentError) and "authentication failed" in str(exc)):
            self._end(request.cookies.get(COOKIE, ""), s)
            return web.json_response({"error": f"session ended: {exc}"}, status=401)
        return web.json_response({"error": f"kvraft: {exc}"}, status=502)

    # --- handlers ----------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        body = _page()
        if (not self.auth or self.session(request) is not None) and self.live.informer.synced.is_set():
            # the state rides with the page: it is drawn before the event stream is even open;
            # no "<" in it (JSON's \u003c), so no "</script" or "<!--" ends or hides its block
            state = self.live.snapshot_json().replace(b"<", b"\\u003c")
            body = body.replace(b"<script>\n", b'<script type="application/json" id="first-state">' + state +
                                b"</script>\n<script>\n", 1)
        return web.Response(body=body, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache", "Vary": "Cookie", **NO_FRAMES})

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        types = {"app.js": "application/javascript", "app.css": "text/css"}
        if name not in types:
            raise web.HTTPNotFound()
        return web.Response(body=_asset(name), content_type=types[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def health(self, request: web.Request) -> web.Response:
        ok = self.live.informer.synced.is_set()
        return web.json_response({"status": "ok" if ok else "syncing", "revision": self.live.view.revision},
                                 status=200 if ok else 503)

    async def get_session(self, request: web.Request) -> web.Response:
        s = self.session(request)
        if not self.auth:
            return web.json_response({"auth": False, "user": None, "can_write": self.config.allow_writes})
        return web.json_response({"auth": True, "user": s.user if s else None, "can_write": bool(s and s.can_write)})

    async def login(self, request: web.Request) -> web.Response:
        self.from_page(request)
        try:
            body = await request.json()
            user, password = body["user"], body.get("password", "")
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected JSON {\"user\", \"password\"}"}, status=400)
        if not isinstance(user, str) or not isinstance(password, str):
            return web.json_response({"error": "user and password must be strings"}, status=400)
        if not self.auth:
            return web.json_response({"error": "kvraft auth is not enabled"}, status=400)
        # (a signed-in user's client lives as long as the session and is not synced: it starts
        # from the endpoints the dashboard's own client has synced to)
        client = self._client(self.client.endpoints, user, password)
        try:
            await client.open()  # kvraft's authenticate
        except ClientError as exc:  # a wrong password is etcd's InvalidArgument
            await client.close()
            status = 502 if isinstance(exc, EndpointError | UnavailableError) else 401
            return web.json_response({"error": f"login failed: {exc}"}, status=status)
        try:
            await client.get(keys.REGISTRY, prefix=True, limit=1, keys_only=True)
            writable = await can_write(client)
        except (UnauthenticatedError, PermissionDeniedError) as exc:
            await client.close()
            return web.json_response({"error": f"login failed: user {user} may not read {keys.REGISTRY}: {exc}"},
                                     status=403)
        except ClientError as exc:
            await client.close()
            return web.json_response({"error": f"kvraft: {exc}"}, status=502)
        while len(self.sessions) >= MAX_SESSIONS:
            old = self.sessions.pop(min(self.sessions, key=lambda t: self.sessions[t].expires))
            await old.client.close()
        token = secrets.token_urlsafe(32)
        self.sessions[token] = Session(user, client, writable, time.time() + SESSION_TTL_S)
        resp = web.json_response({"auth": True, "user": user, "can_write": writable})
        resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/", max_age=SESSION_TTL_S,
                        secure=request.secure)
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        self.from_page(request)
        s = self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        if s is not None:
            await s.client.close()
        resp = web.json_response({"ok": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.require(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        try:
            await resp.prepare(request)
        except ConnectionResetError:  # the page closed its connection before the headers went out
            return resp
        q, _ = self.live.subscribe()
        try:
            await resp.write(self.live.snapshot_bytes())
            while True:
                msg: dict[str, Any] | None = None
                try:
                    async with asyncio.timeout(15.0):
                        msg = await q.get()
                except TimeoutError:
                    pass
                if msg is not None and msg.get("bye"):
                    break
                if self.auth and await self.checked(request) is None:
                    await resp.write(b"event: logout\ndata: {}\n\n")
                    break
                await resp.write(b": keep-alive\n\n" if msg is None else _sse(msg))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.live.unsubscribe(q)
        return resp

    async def job(self, request: web.Request) -> web.Response:
        s = self.require(request)
        name = request.match_info["job"]
        client = s.client if s is not None else self.client
        try:
            progress = await self.live.progress_history(client, name)
        except ClientError as exc:
            progress = list(self.live.progress.get(name, []))
            if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
                return web.json_response({"error": str(exc)}, status=403)
        detail = model.job_detail(self.live.view, name, self.live.job_events(name), progress)
        if detail is None:
            return web.json_response({"error": f'job "{name}" not found'}, status=404)
        return web.json_response(detail)

    async def logs(self, request: web.Request) -> web.Response:
        s = self.require(request)
        name = request.match_info["job"]
        text = request.query.get("tail", "100")
        try:
            tail = min(int(text), 5000)
        except ValueError:
            tail = 0
        if tail < 1:  # 0 and -1 (kubectl's "all") were taken as 1
            return web.json_response({"error": f"tail must be an integer from 1 to 5000 (more is 5000), not {text!r}"},
                                     status=400)
        detail = model.job_detail(self.live.view, name, (), ())
        if detail is None:
            return web.json_response({"error": f'job "{name}" not found'}, status=404)
        rows = detail["placement"]
        if not rows:
            return web.json_response({"error": f"job {name} has not run yet ({detail['phase']}: {detail['message']})"},
                                     status=404)
        task = request.query.get("task") or rows[0]["task"]
        row = next((r for r in rows if r["task"] == task), None)
        if row is None:
            return web.json_response({"error": f"job {name} has no task {task!r}"}, status=404)
        client = s.client if s is not None else self.client
        try:
            rec = await client.get(keys.node_key(row["node"]))
        except ClientError as exc:
            return self.kvraft_error(request, exc)
        url: Any = ""
        if rec.kvs:  # anyone may write the record: an agent URL only when it is one
            agent = (model.progress_record(rec.kvs[0].value) or {}).get("agent")
            url = agent.get("url", "") if isinstance(agent, dict) else ""
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return web.json_response({"error": f"node {row['node']} advertises no agent URL"}, status=404)
        assert self.http is not None
        token_name = f"dashboard-logs-{secrets.token_hex(6)}"
        try:  # with auth on, a token of the page's user scoped to the job says who asks (agent.endpoint_auth)
            token = await caller_token(client, name, write=False, name=token_name)
        except ClientError as exc:
            return self.kvraft_error(request, exc)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with self.http.get(f"{url.rstrip('/')}/logs/{name}/{task}", params={"tail": str(tail)},
                                     headers=headers, ssl=self.agent_tls) as r:
                text = (await r.read())[-1_000_000:].decode(errors="replace")
                if r.status != 200:
                    return web.json_response({"error": f"agent on {row['node']}: {r.status} {text.strip()}"}, status=502)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return web.json_response({"error": f"cannot reach the agent of {row['node']} at {url}: {exc}"}, status=502)
        finally:
            if token:
                with contextlib.suppress(ClientError):
                    await client.scoped_token_revoke(token_name)
        return web.json_response({"job": name, "task": task, "node": row["node"], "text": text})

    async def cancel(self, request: web.Request) -> web.Response:
        return await self._mark(request, "cancelled", True, {"cancelled": True})

    async def suspend(self, request: web.Request) -> web.Response:
        """``jobctl suspend`` / ``resume`` from the job panel (the URL's last part says which)."""
        value = request.match_info["verb"] == "suspend"
        return await self._mark(request, "suspend", value, {"suspended": value})

    async def _mark(self, request: web.Request, field: str, value: bool, answer: dict[str, Any]) -> web.Response:
        """Set ``field`` of the job's stored spec to ``value`` (a txn on its mod revision), as
        ``jobctl cancel`` and ``suspend`` / ``resume`` do."""
        client = self.writer(request)
        name = self.name(request, "job")
        key = keys.job_key(name)
        try:
            for _ in range(5):
                resp = await client.get(key)
                if not resp.kvs:
                    return web.json_response({"error": f'job "{name}" not found'}, status=404)
                kv = resp.kvs[0]
                if self.live.view.job_problem(name) is not None:  # anyone may write the key
                    return web.json_response({"error": f"{key} is not a job: {self.live.view.job_problem(name)}"},
                                             status=409)
                try:
                    doc = json.loads(kv.value)
                except ValueError:
                    doc = None
                if not isinstance(doc, dict):
                    return web.json_response({"error": f"{key} is not a job"}, status=409)
                if self.live.view.phase(name) in ("Succeeded", "Failed", "Cancelled"):
                    return web.json_response({"error": f"job {name} already finished"}, status=409)
                if bool(doc.get(field, False)) == value:
                    break
                doc[field] = value
                txn = await client.txn().if_(Compare.mod(key, "=", kv.mod_revision)).then(
                    Op.put(key, json.dumps(doc).encode())).commit()
                if txn.succeeded:
                    break
            else:
                return web.json_response({"error": f"job {name} kept changing; try again"}, status=409)
        except ClientError as exc:
            return self.kvraft_error(request, exc)
        return web.json_response({"job": name, **answer})

    async def requeue(self, request: web.Request) -> web.Response:
        """``jobctl requeue`` from the job panel: ask the scheduler to stop the job's current
        run and queue it again (it resumes from its checkpoint; ``scheduler.evictions``)."""
        client = self.writer(request)
        name = self.name(request, "job")
        who = self.require(request)
        by = f"dashboard (user {who.user})" if who is not None else "dashboard"
        try:
            resp = await client.txn().then(Op.get(keys.job_key(name)), Op.get(keys.binding_key(name)),
                                           Op.get(keys.jobstatus_key(name))).commit()
            spec, bound, status = (list(getattr(r, "kvs", ())) for r in resp.responses)
            prepared = evictions.prepare(name, "requeue", None, by, time.time(),
                                         spec=spec[0].value if spec else None,
                                         binding=(bound[0].value, bound[0].create_revision) if bound else None,
                                         status=status[0].value if status else None)
            if not prepared.found:
                return web.json_response({"error": f'job "{name}" not found'}, status=404)
            if prepared.request is None:
                return web.json_response({"error": prepared.message}, status=409)
            put = await client.txn().if_(Compare.create(keys.binding_key(name), "=", prepared.binding_revision)) \
                .then(Op.put(keys.eviction_key(name), json.dumps(prepared.request).encode())).commit()
            if not put.succeeded:
                return web.json_response({"error": f"job/{name} is no longer running: nothing to requeue"}, status=409)
        except ClientError as exc:
            return self.kvraft_error(request, exc)
        return web.json_response({"job": name, "requeue": True, "message": prepared.message})

    async def cordon(self, request: web.Request) -> web.Response:
        client = self.writer(request)
        node, verb = self.name(request, "node"), request.match_info["verb"]
        try:
            if not (await client.get(keys.node_key(node))).kvs:
                return web.json_response({"error": f'node "{node}" not found'}, status=404)
            if verb == "uncordon":
                await client.delete(keys.cordon_key(node))
            else:
                await client.put(keys.cordon_key(node),
                                 json.dumps({"node": node, "at": time.time(), "by": "dashboard"}).encode())
        except ClientError as exc:
            return self.kvraft_error(request, exc)
        return web.json_response({"node": node, "cordoned": verb == "cordon"})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The API's errors are JSON ``{"error": ...}``: also aiohttp's own (no such route: 404,
    another method: 405 with its Allow header, a body over the size limit: 413), plain text
    otherwise."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400 or exc.content_type == "application/json":
            raise
        detail = (exc.text or exc.reason).removeprefix(f"{exc.status}: ")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response({"error": f"{request.method} {request.path}: {detail}"}, status=exc.status,
                                 headers=headers)


def _sse(msg: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(msg, separators=(",", ":")).encode() + b"\n\n"


_ASSETS: dict[str, bytes] = {}


def _asset(name: str) -> bytes:
    if name not in _ASSETS:
        _ASSETS[name] = resources.files("scheduler.dashboard").joinpath("static", name).read_bytes()
    return _ASSETS[name]


def _page() -> bytes:
    """index.html with app.css and app.js inlined: one request to the first render."""
    if "page" not in _ASSETS:
        html = _asset("index.html")
        html = html.replace(b'<link rel="stylesheet" href="/static/app.css">',
                            b"<style>\n" + _asset("app.css") + b"</style>")
        html = html.replace(b'<script src="/static/app.js"></script>',
                            b"<script>\n" + _asset("app.js").replace(b"</script", b"<\\/script") + b"</script>")
        _ASSETS["page"] = html
    return _ASSETS["page"]


def make_app(config: DashboardConfig) -> tuple[web.Application, Dashboard]:
    d = Dashboard(config)
    app = web.Application(middlewares=[json_errors])
    app.on_startup.append(d.start)
    app.on_shutdown.append(d.close_streams)
    app.on_cleanup.append(d.stop)
    r = app.router
    r.add_get("/", d.index)
    r.add_get("/static/{name}", d.static)
    r.add_get("/health", d.health)
    registry = dashboard_registry(d)

    async def metrics(request: web.Request) -> web.Response:
        return metrics_response(registry, request)

    r.add_get("/metrics", metrics)
    r.add_get("/api/session", d.get_session)
    r.add_post("/api/login", d.login)
    r.add_post("/api/logout", d.logout)
    r.add_get("/api/stream", d.stream, allow_head=False)  # a HEAD answer has no body: this one never ends
    r.add_get("/api/jobs/{job}", d.job)
    r.add_get("/api/jobs/{job}/logs", d.logs)
    r.add_post("/api/jobs/{job}/cancel", d.cancel)
    r.add_post("/api/jobs/{job}/{verb:suspend|resume}", d.suspend)
    r.add_post("/api/jobs/{job}/requeue", d.requeue)
    r.add_post("/api/nodes/{node}/{verb:cordon|uncordon}", d.cordon)
    return app, d
