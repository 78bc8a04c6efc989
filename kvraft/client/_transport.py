"""HTTP transport: endpoints with failover, retries with jitter, auth tokens, encodings.

Threading: one ``Transport`` belongs to one event loop; every method is a coroutine run
on it. Failover rule: a request that never reached a member (connect refused, connect
timeout, or etcd's gateway answering "grpc: the client connection is closing" while its member
stops) moves to the next endpoint for any operation; a request whose answer was lost
(disconnect or read timeout after sending), or that got ``Unavailable`` (no leader, leader
changed), is retried only when the caller marks it ``safe`` (reads and idempotent
operations) or ``numbered`` (put, delete, txn with writes), with full-jitter exponential
backoff, until the request deadline. A member that stops answering (frozen, its host gone
without a reset) is noticed by keepalive probes and heartbeats (``kvraft.client._liveness``,
etcd's ``--keepalive-time`` and ``--keepalive-timeout``): a safe or numbered request on it
moves on at once instead of at its deadline, a stream on it breaks and its watcher resumes
on another member.

A numbered write carries ``Kvraft-Request-Id: <client>:<seq>:<first>`` to members whose
``/version`` lists ``request-ids`` (a yes kept, a no asked again after ``RECHECK_S``): the cluster applies it at most
once and answers a copy with the first copy's answer (``kvraft.apply.sessions``), so a lost
answer is retried like a read, on those members only. ``client`` is random per transport,
``seq`` counts its writes, ``first`` is the lowest seq still waiting for its answer. A
member that cannot take numbers yet refuses with code 9; the write is then sent plain
(unnumbered, not retried after a lost answer) unless a numbered copy may already be in
flight. etcd and older kvraft members get the write plain, as before.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import secrets
import ssl
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import aiohttp

from kvraft.client._codec import JSON_CODEC, MSGPACK_CODEC, Codec, codec_for
from kvraft.client._liveness import HEADER as KEEPALIVE_HEADER
from kvraft.client._liveness import Liveness, MemberSilent
from kvraft.client.errors import (
    EndpointError,
    FailedPreconditionError,
    InvalidArgumentError,
    ProtocolError,
    ResourceExhaustedError,
    ServerError,
    UnauthenticatedError,
    UnavailableError,
    error_from_status,
)
from kvraft.tlsname import NamedContext

__all__ = ["ClientStatistics", "RetryPolicy", "TLSConfig", "Transport", "normalize_endpoint"]


@dataclass(frozen=True)
class ClientStatistics:
    """Counters since the client was created (``Client.statistics()``)."""

    endpoint: str
    requests: int
    retries: int
    failovers: int
    logins: int
    streams: int
    silent: int = 0
    """Times a member was found silent (a keepalive probe unanswered, or a stream's heartbeats
    missed)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for safe operations: attempt ``n`` sleeps ``uniform(0, min(max, base*2**n))``."""

    base_delay_s: float = 0.05
    max_delay_s: float = 1.0
    max_attempts: int = 20

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * (2**attempt)))


@dataclass(frozen=True)
class TLSConfig:
    """Client TLS: trust ``ca_file`` (else the system store), present ``cert_file`` and
    ``key_file`` when the server checks client certificates. ``insecure_skip_verify``
    disables server verification (testing only). Endpoints without a scheme use https."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    server_name: str | None = None
    """Verify every member's certificate as this name instead of the endpoint's host
    (etcdctl's secure DNS discovery: the certificates name the SRV domain)."""

    @classmethod
    def from_flags(
        cls, cacert: str | None = None, cert: str | None = None, key: str | None = None, insecure: bool = False
    ) -> TLSConfig | None:
        """etcdctl's ``--cacert --cert --key --insecure-skip-tls-verify`` as a ``TLSConfig``,
        or None when none is given (plain http unless an endpoint says ``https://``)."""
        if not (cacert or cert or key or insecure):
            return None
        if bool(cert) != bool(key):
            raise ValueError("--cert and --key go together")
        return cls(cacert or None, cert or None, key or None, insecure)

    def context(self) -> ssl.SSLContext:
        context: ssl.SSLContext
        if self.server_name:
            named = NamedContext(ssl.PROTOCOL_TLS_CLIENT)
            named.server_name = self.server_name
            if self.ca_file:
                named.load_verify_locations(cafile=self.ca_file)
            else:
                named.load_default_certs()
            context = named
        else:
            context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def normalize_endpoint(endpoint: str, scheme: str = "http") -> str:
    """``host:port`` -> ``http://host:port`` (etcdctl accepts both spellings)."""
    endpoint = endpoint.strip().rstrip("/")
    if "://" not in endpoint:
        endpoint = f"{scheme}://{endpoint}"
    return endpoint


class _LostAnswer(Exception):
    """The request may have reached the server but no answer came back."""


class Transport:
    def __init__(
        self,
        endpoints: list[str],
        *,
        encoding: str = "auto",
        dial_timeout_s: float = 2.0,
        request_timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        user: str | None = None,
        password: str | None = None,
        rng: random.Random | None = None,
        tls: TLSConfig | None = None,
        token: str | None = None,
        request_ids: bool = True,
        keepalive_time_s: float | None = 1.0,
        keepalive_timeout_s: float = 2.0,
        max_send_bytes: int = 0,
        max_recv_bytes: int = 0,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        if encoding not in ("auto", "json", "msgpack"):
            raise ValueError(f"encoding must be auto, json or msgpack, not {encoding!r}")
        if max_send_bytes < 0 or max_recv_bytes < 0:
            raise ValueError("message size limits must not be negative (0: none)")
        if max_recv_bytes and max_send_bytes > max_recv_bytes:  # (clientv3's rule)
            raise ValueError(f"gRPC message recv limit ({max_recv_bytes} bytes) must be greater than send limit "
                             f"({max_send_bytes} bytes)")
        self.max_send_bytes = max_send_bytes
        self.max_recv_bytes = max_recv_bytes
        """clientv3's ``MaxCallSendMsgSize``/``MaxCallRecvMsgSize`` (0: no limit), on the bytes
        of a request's and an answer's body as kvraft encodes them (JSON or msgpack), where
        gRPC counts protobuf bytes: ResourceExhausted with gRPC's text beyond them."""
        self.tls = tls
        self._scheme = "https" if tls is not None else "http"
        self.endpoints = [normalize_endpoint(e, self._scheme) for e in endpoints]
        self.encoding = encoding
        self.dial_timeout_s = dial_timeout_s
        self.request_timeout_s = request_timeout_s
        self.retry = retry or RetryPolicy()
        self.user = user
        self.password = password
        self.token: str | None = token or None  # a given token (scoped) is used as it is
        self.codec: Codec = MSGPACK_CODEC if encoding == "msgpack" else JSON_CODEC
        self.prefix = "/v3"
        self.server_version: dict[str, Any] = {}
        self._release: tuple[int, ...] = ()  # (the server's etcd major.minor, from ``/version``)
        self._opened = False  # open() succeeded, close() not called since
        self._rng = rng or random.Random()
        self._pinned = 0
        self._counts = {"requests": 0, "retries": 0, "failovers": 0, "logins": 0, "streams": 0}
        self._session: aiohttp.ClientSession | None = None
        self._auth_lock = asyncio.Lock()
        self.client_id = secrets.randbits(64) or 1
        """This transport's number for the cluster's at-most-once table (never from ``rng``:
        two clients seeded alike must not share it)."""
        self.request_ids = request_ids
        """Number writes for members that take it (False: every write plain, as to etcd)."""
        self._next_seq = 1
        self._waiting: set[int] = set()
        self._takes_ids: dict[str, tuple[bool, float]] = {}
        """Per endpoint: whether its ``/version`` lists ``request-ids``, and when it said so (a
        no is asked again after ``RECHECK_S``: the member may have been upgraded since)."""
        self.liveness = Liveness(self._ask_version, time_s=keepalive_time_s, timeout_s=keepalive_timeout_s)
        """Keepalive: probes and heartbeats (``kvraft.client._liveness``)."""

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to first."""
        return self.endpoints[self._pinned]

    async def open(self) -> None:
        """Create the session, find a live endpoint, pick the encoding, log in if asked."""
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.tls.context() if self.tls is not None else True)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(sock_connect=self.dial_timeout_s)
            )
        self.server_version = await self._discover()
        if self.user is not None:
            try:
                await self.authenticate()
            except FailedPreconditionError as exc:
                # clientv3's dial: auth is off, so go on without a token (a later request
                # that needs one logs in then: "user name is empty")
                if "authentication is not enabled" not in exc.message:
                    raise
        self._opened = True

    @property
    def is_open(self) -> bool:
        return self._opened

    async def close(self) -> None:
        self._opened = False
        if self._session is not None:
            await self._session.close()
            self._session = None

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(self.endpoint, **self._counts, silent=self.liveness.silent)

    def normalized(self, endpoints: list[str]) -> list[str]:
        """``endpoints`` as this transport writes them (a scheme on each)."""
        return [normalize_endpoint(e, self._scheme) for e in endpoints]

    def set_endpoints(self, endpoints: list[str]) -> None:
        """New endpoint list; the current endpoint stays pinned if it is in it."""
        current = self.endpoint
        self.endpoints = self.normalized(endpoints)
        self._pinned = self.endpoints.index(current) if current in self.endpoints else 0

    def skip_current(self) -> None:
        """Move the pin to the next endpoint (the current one answered "no leader")."""
        self._skip(self.endpoint)

    def _skip(self, endpoint: str) -> None:
        if endpoint in self.endpoints and self.endpoints[self._pinned] == endpoint:
            self._pinned = (self._pinned + 1) % len(self.endpoints)

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._pinned + i) % n for i in range(n)]

    def _targets(self, endpoint: str | None) -> list[str]:
        """Where a request goes: ``endpoint`` alone when given, else every endpoint, the
        pinned one first."""
        if endpoint is not None:
            return [normalize_endpoint(endpoint, self._scheme)]
        return [self.endpoints[i] for i in self._order()]

    async def _discover(self) -> dict[str, Any]:
        """Ask the endpoints' ``/version`` in order, staggered (happy eyeballs, RFC 8305): the
        next one is asked when the one before failed, or has not answered within
        ``DISCOVER_STAGGER_S``; the first good answer wins and the others are dropped. A live
        first endpoint answers in milliseconds and is pinned, as before; a frozen one costs
        ``DISCOVER_STAGGER_S``, not its timeout (gRPC clients dial every endpoint at once)."""
        errors: list[str] = []
        tls = True  # every endpoint failed in its TLS handshake
        order = self._order()
        asking: dict[asyncio.Task[Any], int] = {}
        loop = asyncio.get_running_loop()
        try:
            while order or asking:
                if order:
                    index = order.pop(0)
                    asking[loop.create_task(self.get_json(self.endpoints[index], "/version"))] = index
                done, _ = await asyncio.wait(asking, timeout=DISCOVER_STAGGER_S if order else None,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: asking[t]):  # (two at once: the earlier in order)
                    index = asking.pop(task)
                    try:
                        doc = task.result()
                    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                        errors.append(f"{self.endpoints[index]}: {_describe(exc)}")
                        tls = tls and isinstance(exc, aiohttp.ClientSSLError)
                        continue
                    tls = False
                    if not isinstance(doc, dict):  # something else listens there (an empty or non-object answer)
                        errors.append(f"{self.endpoints[index]}: /version answered {json.dumps(doc)[:80]}, "
                                      "not an etcd or kvraft member's version")
                        continue
                    return self._discovered(index, doc)
        finally:
            for task in asking:
                task.cancel()
        raise EndpointError("context deadline exceeded (no endpoint answered: " + "; ".join(errors) + ")",
                            tls=tls and bool(errors))

    def _discovered(self, index: int, doc: dict[str, Any]) -> dict[str, Any]:
        self._pinned = index
        self._takes_ids[self.endpoints[index]] = (_lists_request_ids(doc), time.monotonic())
        if self.encoding == "auto":
            self.codec = MSGPACK_CODEC if "kvraft" in doc else JSON_CODEC
        version = str(doc.get("etcdserver", "3.4.0"))
        self._release = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        self.prefix = "/v3" if self._release >= (3, 4) else "/v3beta"
        return dict(doc)

    @property
    def takes_35_fields(self) -> bool:
        """Whether the server found at ``open`` takes request fields etcd 3.5 added (etcd
        3.4's gateway refuses a field it does not know): kvraft does, and etcd from 3.5."""
        return "kvraft" in self.server_version or self._release >= (3, 5)

    async def get_json(self, endpoint: str, path: str) -> Any:
        """A plain ``GET`` (``/version``, ``/health``) against one endpoint, while it answers
        keepalive probes."""
        session = self._require_session()
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s, sock_connect=self.dial_timeout_s)
        headers = {"Authorization": self.token} if self.token else {}  # a scoped token gets past

        async def get() -> Any:
            async with session.get(endpoint + path, timeout=timeout, headers=headers) as response:  # cert checks
                return await response.json(content_type=None)

        try:
            return await self.liveness.wait(endpoint, get())
        except MemberSilent as exc:
            raise TimeoutError(str(exc)) from None

    async def _ask_version(self, endpoint: str) -> None:
        """A keepalive probe: any answer to ``GET /version`` (the caller bounds the wait)."""
        async with self._require_session().get(endpoint + "/version") as response:
            await response.read()

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("client is not open; use 'async with Client(...)' or await client.open()")
        return self._session

    def _headers(self, auth: bool) -> dict[str, str]:
        headers = {"Content-Type": self.codec.content_type, "Accept": self.codec.content_type}
        if auth and self.token:
            headers["Authorization"] = self.token
        return headers

    async def authenticate(self) -> None:
        """Get a fresh token for ``user``/``password`` (also called on token expiry)."""
        async with self._auth_lock:
            self._counts["logins"] += 1
            body = {"name": self.user or "", "password": self.password or ""}
            doc = await self.unary("/auth/authenticate", body, safe=True, auth=False)
            self.token = str(doc.get("token") or "") or None

    async def unary(
        self,
        path: str,
        body: dict[str, Any],
        *,
        safe: bool,
        auth: bool = True,
        endpoint: str | None = None,
        timeout_s: float | None = None,
        numbered: bool = False,
    ) -> dict[str, Any]:
        """POST ``prefix + path`` and decode the answer, with failover and retries.

        ``endpoint`` pins the request to one member (endpoint status, defrag): no failover.
        ``numbered``: a write that members taking request ids apply at most once (above).
        """
        seq = 0
        if numbered and not safe and self.request_ids:
            seq = self._next_seq
            self._next_seq += 1
            self._waiting.add(seq)
        try:
            try:
                return await self._unary(path, body, safe=safe, auth=auth, endpoint=endpoint, timeout_s=timeout_s,
                                         seq=seq)
            except UnauthenticatedError:
                if not auth or self.user is None:
                    raise
            except InvalidArgumentError as exc:
                if not auth or self.user is None or "user name is empty" not in exc.message:
                    raise
            await self.authenticate()  # token expired or revoked: log in again, retry once
            return await self._unary(path, body, safe=safe, auth=auth, endpoint=endpoint, timeout_s=timeout_s, seq=seq)
        finally:
            self._waiting.discard(seq)

    async def _numbered_to(self, target: str, remaining_s: float, errors: list[str]) -> bool | None:
        """Whether ``target`` takes request ids (its ``/version``: a yes is kept, a no asked
        again after ``RECHECK_S``); None when it could not be asked (the reason added to
        ``errors``): nothing was sent there."""
        known, asked = self._takes_ids.get(target, (None, 0.0))
        if known is None or (not known and time.monotonic() - asked > RECHECK_S):
            session = self._require_session()
            timeout = aiohttp.ClientTimeout(total=remaining_s, sock_connect=min(self.dial_timeout_s, remaining_s))
            try:
                async with session.get(target + "/version", timeout=timeout) as response:
                    doc = await response.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                errors.append(f"{target}: {_describe(exc)}")
                return None
            known = _lists_request_ids(doc)
            self._takes_ids[target] = (known, time.monotonic())
        return known

    async def _unary(
        self,
        path: str,
        body: dict[str, Any],
        *,
        safe: bool,
        auth: bool,
        endpoint: str | None,
        timeout_s: float | None,
        seq: int = 0,
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        total_s = self.request_timeout_s if timeout_s is None else timeout_s
        deadline = loop.time() + total_s
        data = self.codec.dumps(body)
        if self.max_send_bytes and len(data) > self.max_send_bytes:
            raise ResourceExhaustedError(f"trying to send message larger than max ({len(data)} vs. "
                                         f"{self.max_send_bytes})", code=8)
        errors: list[str] = []
        attempt = 0
        self._counts["requests"] += 1
        in_doubt = False  # a numbered copy may have reached a member: never send it plain now
        while True:
            for target in self._targets(endpoint):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                headers: dict[str, str] = {}
                if seq:
                    takes = await self._numbered_to(target, remaining, errors)
                    if takes is None or (in_doubt and not takes):  # (a plain copy could apply twice)
                        continue
                    if takes:
                        headers[HEADER] = f"{self.client_id:x}:{seq}:{min(self._waiting)}"
                try:
                    if safe or headers:  # an answer lost to a silent member may be asked again
                        doc = await self.liveness.wait(
                            target, self._post(target, path, data, auth, deadline - loop.time(), headers))
                    else:  # (plain writes wait: only their own answer can settle them)
                        doc = await self._post(target, path, data, auth, deadline - loop.time(), headers)
                except MemberSilent as exc:
                    in_doubt = in_doubt or bool(headers)
                    errors.append(str(exc))
                    self._skip(target)
                    continue
                except _LostAnswer as exc:
                    if not safe and not headers:
                        self._skip(target)  # the caller's retry (if it decides one) goes elsewhere
                        raise EndpointError(f"{target}: {exc} (the request may have been applied)") from None
                    in_doubt = in_doubt or bool(headers)
                    errors.append(f"{target}: {exc}")
                    continue
                except (TimeoutError, aiohttp.ClientConnectorError) as exc:
                    errors.append(f"{target}: {_describe(exc)}")
                    continue
                except FailedPreconditionError as exc:
                    if not headers or REQUEST_IDS_OFF not in exc.message:
                        raise
                    if in_doubt:  # another member may still take it numbered
                        errors.append(f"{target}: {exc.message}")
                        continue
                    seq = 0  # no copy went out: send it plain, once, as to an older member
                    doc = await self._unary(path, body, safe=safe, auth=auth, endpoint=target,
                                            timeout_s=deadline - loop.time())
                except UnavailableError as exc:
                    if (not safe and not headers) or endpoint is not None:
                        raise
                    in_doubt = in_doubt or bool(headers)
                    errors.append(f"{target}: {exc.message}")
                    continue
                except ServerError as exc:
                    if exc.message != GATEWAY_CLOSING or endpoint is not None:
                        raise
                    errors.append(f"{target}: {exc.message}")
                    continue
                if target in self.endpoints and endpoint is None:
                    if self.endpoints.index(target) != self._pinned:
                        self._counts["failovers"] += 1
                    self._pinned = self.endpoints.index(target)
                return doc
            remaining = deadline - loop.time()
            if remaining <= 0 or attempt >= self.retry.max_attempts:
                applied = " (the request may have been applied)" if in_doubt else ""
                raise EndpointError("context deadline exceeded (" + "; ".join(errors[-3:]) + ")" + applied)
            await asyncio.sleep(min(remaining, self.retry.delay_s(attempt, self._rng)))
            attempt += 1
            self._counts["retries"] += 1

    async def _post(self, endpoint: str, path: str, data: bytes, auth: bool, timeout_s: float,
                    extra: dict[str, str] | None = None) -> dict[str, Any]:
        session = self._require_session()
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(self.dial_timeout_s, timeout_s))
        url = endpoint + self.prefix + path
        headers = self._headers(auth) if not extra else {**self._headers(auth), **extra}
        try:
            async with session.post(url, data=data, headers=headers, timeout=timeout) as response:
                payload = await response.read()
                content_type = response.headers.get("Content-Type", "")
                status = response.status
            if self.max_recv_bytes and len(payload) > self.max_recv_bytes:
                raise ResourceExhaustedError(f"grpc: received message larger than max ({len(payload)} vs. "
                                             f"{self.max_recv_bytes})", code=8)
        except aiohttp.ClientConnectorError:
            raise
        except TimeoutError:
            raise _LostAnswer("request timed out waiting for the answer") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
            raise _LostAnswer(_describe(exc)) from None
        return _decode(url, status, content_type, payload)

    async def stream(
        self, path: str, body: dict[str, Any], *, auth: bool = True, endpoint: str | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """POST a streaming request and yield each ``result`` message as it arrives.

        Connects to the first endpoint that accepts the connection. The iterator ends when
        the server closes the stream; a lost connection raises ``EndpointError``.
        """
        session = self._require_session()
        data = self.codec.dumps(body)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.dial_timeout_s, sock_read=None)
        headers = self._headers(auth)
        if self.liveness.time_s is not None:
            headers[KEEPALIVE_HEADER] = f"{self.liveness.time_s:g}"
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        for target in self._targets(endpoint):
            url = target + self.prefix + path
            try:
                response = await self.liveness.wait(target, session.post(url, data=data, headers=headers,
                                                                         timeout=timeout))
            except (TimeoutError, aiohttp.ClientConnectorError, MemberSilent) as exc:
                errors.append(f"{target}: {_describe(exc)}")
                if isinstance(exc, MemberSilent):
                    self._skip(target)
                continue
            self._stream_opened(target)
            async with response:
                if response.status != 200:
                    payload = await response.read()
                    _decode(url, response.status, response.headers.get("Content-Type", ""), payload)
                    raise ProtocolError(f"{url}: HTTP {response.status}")
                decoder = codec_for(response.headers.get("Content-Type", "")).stream_decoder()
                heartbeat_s = _granted(response.headers.get(KEEPALIVE_HEADER))
                last = loop.time()  # (the stream's own last bytes: its answer's headers)
                try:
                    while chunk := await self.liveness.read(target, response.content.readany, last, heartbeat_s):
                        last = loop.time()
                        for message in decoder.feed(chunk):
                            yield _stream_result(url, message)
                except MemberSilent as exc:
                    self._skip(target)
                    raise EndpointError(f"{target}: stream lost: {exc}") from None
                except (aiohttp.ClientPayloadError, aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
                    raise EndpointError(f"{target}: stream lost: {_describe(exc)}") from None
            return
        raise EndpointError("context deadline exceeded (" + "; ".join(errors) + ")")

    def _stream_opened(self, target: str) -> None:
        """A stream or WebSocket is open on ``target``: later requests go there first."""
        if target in self.endpoints:
            self._pinned = self.endpoints.index(target)
        self._counts["streams"] += 1

    async def websocket(self, path: str, *, endpoint: str | None = None) -> aiohttp.ClientWebSocketResponse:
        """Open a WebSocket to ``prefix + path`` (JSON text messages; etcd's gateway and
        kvraft both serve ``/v3/watch`` this way) on the first endpoint that accepts it."""
        session = self._require_session()
        headers = {"Authorization": self.token} if self.token else {}
        errors: list[str] = []
        # pings after 2 x keepalive_timeout idle, a pong awaited keepalive_timeout (aiohttp waits
        # half the interval); kvraft and etcd's grpc-websocket-proxy both answer them
        heartbeat = 2 * self.liveness.timeout_s if self.liveness.time_s is not None else None
        for target in self._targets(endpoint):
            try:
                ws = await self.liveness.wait(target, session.ws_connect(
                    target + self.prefix + path, headers=headers, heartbeat=heartbeat,
                    timeout=aiohttp.ClientWSTimeout(ws_close=self.request_timeout_s)))
            except (TimeoutError, aiohttp.ClientConnectorError, aiohttp.WSServerHandshakeError, MemberSilent) as exc:
                errors.append(f"{target}: {_describe(exc)}")
                if isinstance(exc, MemberSilent):
                    self._skip(target)
                continue
            self._stream_opened(target)
            return ws
        raise EndpointError("context deadline exceeded (" + "; ".join(errors) + ")")


HEADER = "Kvraft-Request-Id"
DISCOVER_STAGGER_S = 0.25
"""How long ``open()`` waits for an endpoint's ``/version`` before it asks the next one too."""
RECHECK_S = 60.0
"""How long an endpoint that did not list ``request-ids`` is believed (an older kvraft upgraded
in place lists it after its restart; etcd never does)."""
GATEWAY_CLOSING = "grpc: the client connection is closing"
"""etcd's JSON gateway while its member stops (its gRPC connection to the member is closing):
the request never reached the member, so any request, a write too, goes to the next
endpoint (before session 56 a rolling restart of etcd failed ~290 puts per member stopped)."""
REQUEST_IDS_OFF = "request ids are not available"
"""The part of a member's code-9 refusal that says it proposed nothing (``kvraft.apply.sessions``)."""


def _granted(value: str | None) -> float | None:
    """The heartbeat interval a stream's member granted (``Kvraft-Keepalive``), if any."""
    try:
        granted = float(value) if value else None
    except ValueError:
        return None
    return granted if granted is not None and 0 < granted < math.inf else None


def _lists_request_ids(doc: Any) -> bool:
    return isinstance(doc, dict) and "request-ids" in (doc.get("kvraft_features") or ())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _decode(url: str, status: int, content_type: str, payload: bytes) -> dict[str, Any]:
    try:
        doc = codec_for(content_type).loads(payload)
    except ValueError:
        text = payload.decode("utf-8", errors="replace").strip()
        if status == 404:
            raise ServerError(f"{url}: not supported by this server (HTTP 404 {text})", code=12) from None
        raise ProtocolError(f"{url}: HTTP {status}: {text[:200]}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"{url}: HTTP {status}: answer is not an object")
    if status != 200 or ("code" in doc and ("message" in doc or "error" in doc) and "header" not in doc):
        message = doc.get("message") or doc.get("error") or f"HTTP {status}"
        raise error_from_status(int(doc.get("code") or 2), str(message))
    return doc


def _stream_result(url: str, message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise ProtocolError(f"{url}: stream message is not an object")
    if "error" in message:
        error = message["error"]
        if isinstance(error, dict):
            code = int(error.get("grpc_code") or error.get("code") or 2)
            raise error_from_status(code, str(error.get("message") or ""))
        raise error_from_status(int(message.get("code") or 2), str(message.get("message") or error))
    result = message.get("result", message)
    if not isinstance(result, dict):
        raise ProtocolError(f"{url}: stream result is not an object")
    return result
