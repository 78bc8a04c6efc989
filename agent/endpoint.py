"""The agent's HTTP endpoint (aiohttp): ``/health``, ``/metrics``, task list, logs, exec.

- ``GET /health``: 200 ``{"status": "ok", ...}`` once registered under a live lease and not
  fenced, else 503 with ``status`` ``unregistered`` or ``fenced`` (``fenced``, ``fences`` and
  ``lease_age_s`` are always there).
- ``GET /metrics``: Prometheus text format (``agent.metrics``; docs/observability.md).
- ``GET /tasks``: every attempt the runtime holds (JSON).
- ``GET /logs/{job}/{task}?attempt=N&tail=100&follow=1&timestamps=1&stream=stdout``: the task's
  log (latest attempt by default; ``previous=1`` the one before it, kubelet's previous), from
  the rotated CRI files, from ``since_seconds`` ago or ``since_time`` (RFC 3339) on when given; ``follow`` streams new lines
  until the attempt has ended and its log is drained, surviving rotation (the reader follows
  the rotated file to its end, then the file written after it, however many rotations it fell
  behind), and ends when the client goes. A
  ``tail`` below -1, an ``attempt`` not >= 1 or a ``stream`` other than stdout/stderr is a
  400; an attempt the task never had, a 404; HEAD, a 405.
- ``GET /stats/{job}/{task}``: cgroup counters of the running attempt.
- ``POST /exec/{job}/{task}`` ``{"argv": [...], "timeout_s": 30}``: run a command in the task's
  container (``runc exec``) or environment (process runtime); answers exit code and output.

Handlers parse, call one agent or runtime method, and encode; no logic lives here.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import math
import os
import ssl
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry

from agent.agent import Agent
from agent.endpoint_auth import EndpointAuth
from agent.keys import assignments_prefix, split_assignment_key
from agent.logs import line_time, parse_line
from agent.metrics import agent_registry
from agent.reconcile import AttemptState
from agent.spec import SpecError, check_text
from kvraft.client import TLSConfig
from kvraft.client.observe import metrics_response

__all__ = ["AGENT_KEY", "make_app", "serve"]

AGENT_KEY = web.AppKey("agent", Agent)
REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)


STOPPING_KEY = web.AppKey("stopping", asyncio.Event)
"""Set on the app's ``on_shutdown`` (the agent stops): log follows end at their next look. aiohttp
waits for every request being served (60 s) before it closes, and a follow of a live task
never ends by itself: an agent stopped with ``jobctl logs -f`` open took a minute to exit."""


async def _stopping(app: web.Application) -> None:
    app[STOPPING_KEY].set()


AUTH_KEY = web.AppKey("endpoint_auth", EndpointAuth)
OPEN = ("/health", "/metrics")


@web.middleware
async def _authorized(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route but ``OPEN`` asks ``agent.endpoint_auth`` first (with kvraft's auth on)."""
    if request.path not in OPEN and request.match_info.route.resource is not None:
        job = request.match_info.get("job")
        await request.app[AUTH_KEY].require(request, job, write=request.path.startswith("/exec/"))
    return await handler(request)


def make_app(agent: Agent) -> web.Application:
    app = web.Application(middlewares=[_authorized])
    app[AGENT_KEY] = agent
    c = agent.config
    app[AUTH_KEY] = EndpointAuth(agent.client, list(c.endpoints), agent.name,
                                 TLSConfig.from_flags(c.cacert, c.cert, c.key, c.insecure_skip_tls_verify),
                                 c.request_timeout_s, has_identity=bool(c.user or c.cert))
    app[REGISTRY_KEY] = agent_registry(agent)
    app[STOPPING_KEY] = asyncio.Event()
    app.on_shutdown.append(_stopping)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/tasks", tasks)
    app.router.add_get("/logs/{job}/{task}", logs, allow_head=False)  # a HEAD answer has no body
    app.router.add_get("/stats/{job}/{task}", stats)
    app.router.add_post("/exec/{job}/{task}", exec_)
    return app


async def serve(agent: Agent, listen_url: str) -> web.AppRunner:
    host_port = listen_url.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    runner = web.AppRunner(make_app(agent), access_log=None)
    await runner.setup()
    try:
        context = serving_context(listen_url, agent.config)
    except BaseException:
        await runner.cleanup()
        raise
    await web.TCPSite(runner, host or "127.0.0.1", int(port), ssl_context=context).start()
    return runner


def serving_context(listen_url: str, config: Any) -> ssl.SSLContext | None:
    """An https ``--listen-url``: ``--tls-cert-file`` and ``--tls-private-key-file`` (kubelet's
    flags), TLS 1.2 or later; None for http."""
    if not listen_url.startswith("https://"):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert_file, config.tls_private_key_file)
    return context


async def health(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    st = agent.statistics()
    ok = st.registered and not st.fenced
    doc = {"status": "fenced" if st.fenced else "ok" if ok else "unregistered", "node": agent.name,
           "lease_id": agent.lease_id, "runtime": agent.runtime.name, "desired": st.desired, "fenced": st.fenced,
           "fences": st.fences, "lease_age_s": round(st.lease_age_s, 3)}
    return web.json_response(doc, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    return metrics_response(request.app[REGISTRY_KEY], request)


async def tasks(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    out = []
    for o in await agent.runtime.observe():
        out.append({"task": o.key, "attempt": o.attempt, "revision": o.revision, "state": o.state.value,
                    "started_at": o.started_at_s or None, "stop_requested": o.stop_requested,
                    "exit": None if o.exit is None else {"exit_code": o.exit.exit_code, "signal": o.exit.signal,
                                                         "oom_killed": o.exit.oom_killed, "reason": o.exit.reason}})
    return web.json_response(sorted(out, key=lambda d: (d["task"], d["attempt"])))


def _int_param(request: web.Request, name: str, default: int, minimum: int, what: str) -> int:
    """An integer query parameter; 400 naming it when it is not one (kubelet's API says so too)."""
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise web.HTTPBadRequest(text=f"{name}: must be an integer {what}, not {text!r}\n")
    return value


_TRUE = ("1", "t", "T", "TRUE", "true", "True", "yes")  # Go's strconv.ParseBool (kubelet's), and yes/no
_FALSE = ("", "0", "f", "F", "FALSE", "false", "False", "no")


def _bool_param(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "")
    if text not in _TRUE + _FALSE:
        raise web.HTTPBadRequest(text=f"{name}: must be true or false, not {text!r}\n")
    return text in _TRUE


def _attempt(request: web.Request, previous: bool = False) -> tuple[str, int]:
    agent = request.app[AGENT_KEY]
    key = f"{request.match_info['job']}/{request.match_info['task']}"
    if split_assignment_key(agent.name, assignments_prefix(agent.name) + key) is None:
        # no task has such a name ('..' would name a directory outside the agent's tasks)
        raise web.HTTPNotFound(text=f"no task {key} on node {agent.name}\n")
    attempts = sorted({o.attempt for o in agent.observed if o.key == key})
    if hasattr(agent.runtime, "attempts"):
        attempts = sorted(set(attempts) | set(agent.runtime.attempts(key)))
    if not attempts:
        raise web.HTTPNotFound(text=f"no task {key} on node {agent.name}\n")
    if previous:  # kubelet's previous: the attempt before the latest
        if "attempt" in request.query:
            raise web.HTTPBadRequest(text="give attempt or previous, not both\n")
        if len(attempts) < 2:
            raise web.HTTPNotFound(text=f"previous terminated attempt of task {key} on node {agent.name} not found\n")
        return key, attempts[-2]
    attempt = _int_param(request, "attempt", attempts[-1], 1, ">= 1")
    if attempt not in attempts:
        raise web.HTTPNotFound(text=f"no attempt {attempt} of task {key} on node {agent.name} "
                                    f"(attempts: {', '.join(map(str, attempts))})\n")
    return key, attempt


def _since(request: web.Request) -> float | None:
    """``since_seconds`` (>= 1) or ``since_time`` (RFC 3339), kubelet's sinceSeconds and
    sinceTime: only lines logged at or after it; at most one of them."""
    seconds, when = request.query.get("since_seconds"), request.query.get("since_time")
    if seconds is not None and when is not None:
        raise web.HTTPBadRequest(text="at most one of since_seconds or since_time may be specified\n")
    if seconds is not None:
        return time.time() - _int_param(request, "since_seconds", 0, 1, ">= 1")
    if when is None:
        return None
    try:
        t = datetime.fromisoformat(when)
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        raise web.HTTPBadRequest(text=f"since_time: must be an RFC 3339 time such as 2006-01-02T15:04:05Z, not {when!r}\n")
    return t.timestamp()


def _after(lines: list[bytes], since: float) -> list[bytes]:
    """The lines logged at or after ``since``: the files are in time order, so a bisection
    (a line whose time does not read sorts first)."""
    return lines[bisect.bisect_left(lines, since, key=lambda ln: line_time(ln) or 0.0):]


def _format(line: bytes, timestamps: bool, stream: str) -> bytes | None:
    parsed = parse_line(line)
    if parsed is None:
        return line + b"\n"
    ts, src, partial, text = parsed
    if stream and src != stream:
        return None
    return (ts + b" " if timestamps else b"") + text + (b"" if partial else b"\n")


async def logs(request: web.Request) -> web.StreamResponse:
    agent = request.app[AGENT_KEY]
    key, attempt = _attempt(request, _bool_param(request, "previous"))
    tail = _int_param(request, "tail", -1, -1, ">= -1 (-1: all)")
    since = _since(request)
    follow = _bool_param(request, "follow")
    timestamps = _bool_param(request, "timestamps")
    stream = request.query.get("stream", "")
    if stream not in ("", "stdout", "stderr"):
        raise web.HTTPBadRequest(text=f"stream: must be stdout or stderr, not {stream!r}\n")
    files = agent.runtime.log_files(key, attempt)
    if not files and any(o.key == key and o.attempt == attempt and o.state is AttemptState.STARTING
                         for o in await agent.runtime.observe()):  # kubectl: "is waiting to start"
        raise web.HTTPNotFound(text=f"task {key} attempt {attempt} is waiting to start: no output yet\n")
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    try:
        await resp.prepare(request)
        # the rotated files can be tens of MB: read them off the event loop, which also renews
        # the node lease
        lines, read_to = await asyncio.to_thread(_read_lines, files, tail if tail >= 0 and since is None else None)
        if since is not None:
            lines = _after(lines, since)
        if tail >= 0:
            lines = lines[-tail:] if tail else []
        for ln in lines:
            out = _format(ln, timestamps, stream)
            if out is not None:
                await resp.write(out)
        if follow and files:
            await _follow(request, key, attempt, files[-1], read_to, resp, timestamps, stream, since)
        await resp.write_eof()
    except ConnectionResetError:  # the client went away (jobctl logs -f ended, or before the headers)
        pass
    return resp


def _read_lines(files: list[Path], need: int | None = None) -> tuple[list[bytes], tuple[int, int]]:
    """The files' lines, and where a follow goes on: ``(inode, offset)`` of the last file's
    end of its last whole line (a line being written is left for the follow to finish).
    With ``need`` (a tail), the files are read newest first and the older ones only while
    fewer lines than that are in hand: ``tail=10`` of a task with 5 rotated 10 MiB files read
    all 50 MiB."""
    chunks: list[list[bytes]] = []
    read_to = (0, 0)
    have = 0
    for n in range(len(files) - 1, -1, -1):
        if need is not None and have >= need and n < len(files) - 1:
            break
        with contextlib.suppress(OSError), open(files[n], "rb") as f:
            data = f.read()
            if n == len(files) - 1:
                whole = data.rfind(b"\n") + 1
                read_to, data = (os.fstat(f.fileno()).st_ino, whole), data[:whole]
            chunks.append(data.splitlines())
            have += len(chunks[-1])
    return [ln for chunk in reversed(chunks) for ln in chunk], read_to


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return -1


def _after_inode(files: list[Path], inode: int) -> Path | None:
    """The log file written after the one with ``inode`` (``files`` oldest first); None while
    that one is still the newest. When it is gone (rotated out), every file left is newer: the
    oldest of them."""
    inodes = [_inode(p) for p in files]
    if inode in inodes:
        i = inodes.index(inode)
        return files[i + 1] if i + 1 < len(files) else None
    return files[0] if files else None


async def _follow(request: web.Request, key: str, attempt: int, path: Path, read_to: tuple[int, int],
                  resp: web.StreamResponse, timestamps: bool, stream: str, since: float | None = None) -> None:
    """Stream lines appended after the initial read (``read_to``: the inode and offset it
    ended at), file after file in the order they were written: a follow that falls behind
    two rotations (a busy task, a slow client) reads the middle file too, where it jumped to
    the newest one and skipped it. Ends when the attempt has ended and its log is drained, or
    when the client has gone (a write notices that, but a quiet task writes nothing: checked
    at each idle poll)."""
    agent = request.app[AGENT_KEY]
    files = agent.runtime.log_files(key, attempt)
    inodes = [_inode(p) for p in files]
    if read_to[0] in inodes:  # where the read ended, wherever rotation has moved that file
        first, offset = files[inodes.index(read_to[0])], read_to[1]
    else:  # rotated out since: every file left is newer
        first, offset = (files[0] if files else path), 0
    f = open(first, "rb")  # noqa: SIM115 - closed below
    try:
        inode = os.fstat(f.fileno()).st_ino
        f.seek(offset if inode == read_to[0] else 0)  # (replaced between the listing and the open)
        buf = b""
        ended_polls = 0
        stopping = request.app[STOPPING_KEY]
        while not stopping.is_set():  # (the agent stops: the follow ends, its response whole)
            chunk = f.read(65536)
            if chunk:
                buf += chunk
                *done, buf = buf.split(b"\n")
                for ln in done:
                    if since is not None and (line_time(ln) or 0.0) < since:  # a since_time still ahead
                        continue
                    out = _format(ln, timestamps, stream)
                    if out is not None:
                        await resp.write(out)
                continue
            following = _after_inode(agent.runtime.log_files(key, attempt), inode)
            if following is not None:  # rotated: this file is complete; go on with the next one
                with contextlib.suppress(OSError):
                    nxt = open(following, "rb")  # noqa: SIM115
                    f.close()
                    f = nxt
                    inode = os.fstat(f.fileno()).st_ino
                    continue
            if request.transport is None or request.transport.is_closing():
                return  # the client went away (jobctl logs -f ended)
            live = any(o.key == key and o.attempt == attempt and o.live for o in await agent.runtime.observe())
            ended_polls = 0 if live else ended_polls + 1
            if ended_polls >= 2:
                return
            await asyncio.sleep(0.2)
    finally:
        f.close()


async def stats(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    key, attempt = _attempt(request)
    return web.json_response({"task": key, "attempt": attempt, **await agent.runtime.stats(key, attempt)})


async def exec_(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    key, attempt = _attempt(request)
    try:
        body: Any = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be JSON {\"argv\": [...]}\n")
    argv = body.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise web.HTTPBadRequest(text="argv must be a non-empty list of strings\n")
    try:
        check_text(argv, "argv")  # a NUL or a lone surrogate: no exec takes it
    except SpecError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    timeout_s = body.get("timeout_s", 30)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s < math.inf:
        raise web.HTTPBadRequest(text=f"timeout_s: must be a number > 0, not {timeout_s!r}\n")
    result = await agent.runtime.exec(key, attempt, argv, float(timeout_s))
    return web.json_response({"task": key, "attempt": attempt, "exit_code": result.exit_code,
                              "stdout": result.stdout.decode(errors="replace"),
                              "stderr": result.stderr.decode(errors="replace"),
                              "stdout_b64": base64.b64encode(result.stdout).decode()})
