"""Watch, leases and auth wired into one member (``Features.attach(node)``).

- Apply chain becomes ``Auth(Lease(Quota(Backend)))``; the store checks lease IDs against
  the lessor; client writes are tagged with the caller (``AuthedOp``) so the Auth applier
  checks them at apply time.
- The watch hub is fed by the MVCC commit listener (on the apply stage, never blocking).
- Leases: keepalives are renewed by the leader's lessor in memory, a follower forwards them
  (``lease_renew.KeepaliveRouter``). The lease loop: when this member leads (and has
  applied everything committed before its term) its lessor is promoted, every lease
  extended by the election timeout; then it proposes revocations of expired leases and
  batched checkpoints of remaining TTLs (renewed leases at once, the others every 10 s).
- Auth services: token resolution (``Authorization: <token>`` or ``Bearer <token>``),
  authenticate (rate-limited, bcrypt in a worker thread, simple tokens replicated through
  Raft so every member knows them), password hashing for user add / change, and kvraft's
  scoped tokens (a user's permissions narrowed to one range and bound to a lease; the
  grant, with the SHA-256 of the secret, goes through Raft, so every member knows it and it
  survives restarts).

The caller of a request is carried in the ``CALLER`` context variable, set by the API
middleware for the request's task.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import random
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvraft.aio import cancel_and_wait
from kvraft.apply.errors import error_from_code
from kvraft.apply.feature_appliers import AuthApplier, LeaseApplier, load_auth, load_leases
from kvraft.apply.feature_ops import (
    AuthOp,
    LeaseCheckpointOp,
    LeaseExpireOp,
    LeaseGrantOp,
    LeaseRevokeOp,
    authed,
)
from kvraft.auth import (
    AuthError,
    JWTTokens,
    Permission,
    RateLimiter,
    SimpleTokens,
    TokenProvider,
    check_password,
    hash_password,
    scoped_caller,
)
from kvraft.auth import errors as auth_errors
from kvraft.durations import parse_go_duration_s
from kvraft.lease import Lessor
from kvraft.raft.types import StateRole
from kvraft.server.lease_renew import CHECKPOINT_TIMEOUT_S, KeepaliveRouter
from kvraft.watch import WatchHub
from kvraft.watch.mvcc import attach_hub

__all__ = ["CALLER", "SCOPED_TOKEN_PREFIX", "Caller", "Features", "parse_duration_s"]

log = logging.getLogger("kvraft.features")

SCOPED_TOKEN_PREFIX = "kvraft-scoped."
"""A scoped token (kvraft's): ``kvraft-scoped.<grant id>.<secret>`` (kvraft.auth.store)."""
LEASE_LOOP_S = 0.1
CHECKPOINT_INTERVAL_S = 10.0
EXPIRE_CONFIRM_S = 2.0
"""The longest the leader waits for a quorum to confirm it before proposing expirations."""


@dataclass(frozen=True, slots=True)
class Caller:
    user: str
    revision: int


CALLER: ContextVar[Caller | None] = ContextVar("kvraft_caller", default=None)


def parse_duration_s(text: str) -> float:
    """Go-style durations as etcd's flags take them (``10m``, ``1h``, ``500ms``, ``1m30s``),
    or a plain number of seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return parse_go_duration_s(text)


def _token_of(header: str) -> str:
    """The token of an ``Authorization`` header: raw or ``Bearer <token>``."""
    return header[7:].strip() if header[:7].lower() == "bearer " else header.strip()


def _token_provider(spec: str, ttl_s: float) -> tuple[TokenProvider, SimpleTokens | None]:
    kind, _, rest = spec.partition(",")
    if kind in ("", "simple"):
        simple = SimpleTokens(ttl_s=ttl_s)
        return simple, simple
    if kind != "jwt":
        raise ValueError(f"--auth-token: unknown token type {kind!r}")
    opts = dict(item.split("=", 1) for item in rest.split(",") if "=" in item)
    method = opts.get("sign-method", "HS256")
    priv = Path(opts["priv-key"]).read_bytes()
    pub = Path(opts["pub-key"]).read_bytes() if "pub-key" in opts else None
    ttl = parse_duration_s(opts["ttl"]) if "ttl" in opts else ttl_s
    return JWTTokens(priv, pub, algorithm=method, ttl_s=ttl), None


class Features:
    def __init__(self, node: Any) -> None:
        config = node.config
        self.node = node
        self.store = node.state.store
        self.bcrypt_cost = config.bcrypt_cost
        min_ttl = max(1, math.ceil(1.5 * config.election_timeout / 1000))
        self.lessor = Lessor(min_ttl_s=min_ttl)
        self.lessor.restore(load_leases(self.store), time.monotonic())
        self.promote_extend_s = config.election_timeout / 1000
        self.keepalives = KeepaliveRouter(node, self.lessor)
        self.tokens, self.simple = _token_provider(config.auth_token, float(config.auth_token_ttl))
        self.limiter = RateLimiter()
        self.store.lease_check = lambda lease_id: lease_id in self.lessor.leases
        progress_s = parse_duration_s(config.watch_progress_notify_interval)
        self.hub, self.history = attach_hub(
            self.store,
            lambda h, cur, comp: WatchHub(h, cur, comp, progress_interval_s=progress_s,
                                          fragment_bytes=config.max_request_bytes),
        )
        self.lease_applier = node.state.wrap_chain(
            lambda chain: LeaseApplier(chain, self.store, self.lessor, time.monotonic)
        )
        self.auth_applier = node.state.wrap_chain(
            lambda chain: AuthApplier(
                chain, self.store, load_auth(self.store),
                on_simple_token=self._register_simple, on_user_changed=self.tokens.invalidate_user,
            )
        )
        node.wrap_proposal = self.wrap_proposal
        node.state.after_restore.append(self._after_restore)
        node_metrics = node.metrics
        node.metrics = lambda: [*node_metrics(), *self.metrics()]
        node.lessor = self.lessor  # its counters, for /metrics (kvraft.server.metrics)
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[Any]] = set()
        self._checkpoints_in_flight = 0
        self._checkpoint_soon = False
        self.keepalives.on_parked = self._renewals_parked

    @property
    def auth(self) -> Any:
        return self.auth_applier.state

    # -- lifetime -------------------------------------------------------------------------
    def start(self) -> None:
        self.hub.start()
        self._tasks = [asyncio.get_running_loop().create_task(self._lease_loop(), name="lease-loop")]

    async def stop(self) -> None:
        self.keepalives.close()
        await cancel_and_wait(*self._tasks, *self._pending)
        await self.hub.stop()

    def _after_restore(self) -> None:
        """A Raft snapshot replaced the store: reload the lease and auth records (deadlines
        restart from the checkpointed remaining TTLs) and move the hub to the store's
        revision (its watchers catch up from the restored history)."""
        self.lessor.restore(load_leases(self.store), time.monotonic())
        self.auth_applier.state = load_auth(self.store)
        self.hub.advance(self.store.rev)

    def metrics(self) -> list[tuple[str, str, str, float]]:
        hub = self.hub.statistics()
        return [
            ("kvraft_watch_streams", "gauge", "Open watch streams.", hub.streams),
            ("kvraft_watch_synced_watchers", "gauge", "Watchers fed directly.", hub.synced),
            ("kvraft_watch_unsynced_watchers", "gauge", "Watchers catching up from history.", hub.unsynced),
            ("kvraft_watch_victim_watchers", "gauge", "Watchers whose stream was full.", hub.victims),
            ("kvraft_watch_victims_total", "counter", "Times a watcher's stream was full.", hub.victims_total),
            ("kvraft_watch_responses_sent_total", "counter", "Watch responses sent.", hub.responses_sent),
            ("kvraft_watch_events_sent_total", "counter", "Events sent to watchers.", hub.events_sent),
            ("kvraft_watch_events_pending", "gauge", "Events queued for watchers, not sent yet.", hub.events_pending),
            ("kvraft_watch_prev_kv_reads_total", "counter", "Events sent to prev_kv watchers whose previous "
             "value etcd would read (counted in etcd_mvcc_range_total, as etcd does).", hub.prev_kv_reads),
            ("kvraft_lease_leases", "gauge", "Leases held.", len(self.lessor.leases)),
            ("kvraft_lease_primary", "gauge", "1 while this member expires leases.", int(self.lessor.primary)),
            ("kvraft_lease_renewed_here_total", "counter", "Keepalives renewed by this member's lessor.",
             self.keepalives.stats.renewed_here + self.keepalives.stats.served_for_peers),
            ("kvraft_lease_forwarded_total", "counter", "Keepalives forwarded to the leader.",
             self.keepalives.stats.forwarded),
            ("kvraft_lease_forward_timeouts_total", "counter",
             "Forwarded keepalives unanswered for 2 s (asked again).", self.keepalives.stats.forward_timeouts),
            ("kvraft_lease_keepalive_retries_total", "counter",
             "Keepalive attempts that found no leader or lessor and waited.", self.keepalives.stats.retries),
            ("kvraft_lease_keepalives_total", "counter", "Keepalives answered by this member.",
             self.keepalives.stats.renews),
            ("kvraft_lease_keepalive_seconds_total", "counter", "Time this member took to answer them.",
             self.keepalives.stats.renew_seconds),
            ("kvraft_auth_enabled", "gauge", "1 while auth is enabled.", int(self.auth.enabled)),
            ("etcd_debugging_auth_revision", "gauge", "The current revision of auth store.", self.auth.revision),
        ]

    # -- auth -----------------------------------------------------------------------------
    def _register_simple(self, token: str, user: str) -> None:
        if self.simple is not None:
            self.simple.register(token, user, time.monotonic())

    def wrap_proposal(self, op: Any) -> Any:
        caller = CALLER.get()
        return op if caller is None else authed(caller.user, caller.revision, op)

    def resolve(self, header: str | None, cert_user: str | None = None) -> Caller | None:
        """The caller a request's ``Authorization`` header names; without a token, the user
        its verified client certificate's CN names (``cert_user``, etcd's AuthInfoFromTLS:
        only under ``--client-cert-auth``); None if auth is off or there is neither. A bad
        token raises "invalid auth token" (code 16); a token wins over the certificate."""
        if not self.auth.enabled:
            return None
        if header is None:
            return Caller(cert_user, self.auth.revision) if cert_user else None
        token = _token_of(header)
        if token.startswith(SCOPED_TOKEN_PREFIX):
            return self._resolve_scoped(token)
        now = time.monotonic() if self.simple is not None else time.time()
        info = self.tokens.info(token, now)
        if info is None:
            raise error_from_code(16, auth_errors.invalid_token().message)
        return Caller(info.username, info.revision or self.auth.revision)

    def _resolve_scoped(self, token: str) -> Caller:
        """``kvraft-scoped.<grant id>.<secret>``: valid while its grant is in the replicated
        auth state (the grant ends with its lease) and the secret hashes to its digest."""
        grant_id, _, secret = token[len(SCOPED_TOKEN_PREFIX):].partition(".")
        grant = self.auth.scoped_lookup(grant_id)
        if grant is None or not hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), grant.digest):
            raise error_from_code(16, auth_errors.invalid_token().message)
        return Caller(scoped_caller(grant_id), self.auth.revision)

    def has_scoped_prefix(self, header: str | None) -> bool:
        """Does ``header`` carry something shaped as a scoped token (with auth on)?
        (``--client-cert-auth`` answers a request without a certificate only with one that
        resolves.)"""
        return bool(header) and self.auth.enabled and _token_of(header or "").startswith(SCOPED_TOKEN_PREFIX)

    async def scoped_grant(self, name: str, scope: Permission, lease: int) -> str:
        """Grant the caller's own ``scope`` under ``name``, bound to ``lease``; the token."""
        if not self.auth.enabled:
            raise error_from_code(9, auth_errors.auth_not_enabled().message)
        if not name:
            raise error_from_code(3, auth_errors.scoped_name_empty().message)
        user, _ = self.caller_or_empty()
        grant_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(24)
        digest = hashlib.sha256(secret.encode()).digest()
        await self.propose_auth("scoped_grant", [grant_id, digest, user, name, scope.perm_type, scope.key,
                                                 scope.range_end, lease])
        return f"{SCOPED_TOKEN_PREFIX}{grant_id}.{secret}"

    async def scoped_revoke(self, name: str) -> int:
        user, _ = self.caller_or_empty()
        return await self.propose_auth("scoped_revoke", [user, name])

    def checked(self, fn: Any, *args: Any) -> Any:
        """Run an ``AuthState`` call, turning ``AuthError`` into the EtcdError answered."""
        try:
            return fn(*args)
        except AuthError as exc:
            raise error_from_code(exc.code, exc.message) from None

    check = checked

    def check_lease_access(self, keys: list[bytes]) -> None:
        """TimeToLive / Revoke with auth on: root, or WRITE on every attached key."""
        state = self.auth
        if not state.enabled:
            return
        user, revision = self.caller_or_empty()
        self.check(state.check_user, user, 0)
        if state.is_root(user):
            return
        for key in keys:
            self.check(state.check_range, user, 0, key, b"", True)

    def check_election_read(self, name: bytes) -> None:
        """Leader / Observe read ``<name>/``: READ on that prefix with auth on."""
        if not self.auth.enabled:
            return
        from kvraft.server.api.locking import prefix_end

        user, revision = self.caller_or_empty()
        prefix = name + b"/"
        self.checked(self.auth.check_range, user, revision, prefix, prefix_end(prefix), False)

    def caller_or_empty(self) -> tuple[str, int]:
        caller = CALLER.get()
        return (caller.user, caller.revision) if caller is not None else ("", 0)

    async def authenticate(self, name: str, password: str) -> str:
        try:
            if not self.auth.enabled:
                raise auth_errors.auth_not_enabled()
            if not self.limiter.allow(name, time.monotonic()):
                raise auth_errors.too_many_requests()
            user = self.auth.users.get(name)
            if user is not None and user.no_password:
                raise auth_errors.no_password_user()
            digest = user.password_hash if user is not None else None
            ok = await asyncio.get_running_loop().run_in_executor(None, check_password, password, digest)
            if not ok:
                raise auth_errors.auth_failed()
        except AuthError as exc:
            raise error_from_code(exc.code, exc.message) from None
        if self.simple is None:
            return self.tokens.assign(name, self.auth.revision, time.time())
        token = self.simple.new_token()
        await self.node.driver.propose(AuthOp("assign_simple", [token, name]))
        return token

    async def hash(self, password: str) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(None, hash_password, password, self.bcrypt_cost)

    async def propose_auth(self, action: str, args: list[Any], once: Any = None) -> int:
        """``once``: the client's ``Kvraft-Request-Id``: a copy of a user or role change sent
        again after a lost answer gets the first copy's answer ("user name already exists"
        no more) and changes nothing (``kvraft.apply.sessions``)."""
        op = self.node.numbered(self.wrap_proposal(AuthOp(action, args)), once)
        # (every proposal is held to --max-request-bytes, as etcd's raft requests are)
        revision: int = await self.node.driver.propose(op, max_bytes=self.node.config.max_request_bytes)
        return revision

    # -- leases ---------------------------------------------------------------------------
    async def propose_lease(self, op: Any, once: Any = None) -> Any:
        return await self.node.driver.propose(self.node.numbered(self.wrap_proposal(op), once))

    async def grant(self, lease_id: int, ttl: int, once: Any = None) -> Any:
        """``once``: the client's ``Kvraft-Request-Id``: a copy sent again after a lost answer
        gets the first grant (its ID) instead of a second lease (``kvraft.apply.sessions``)."""
        if lease_id:
            return await self.propose_lease(LeaseGrantOp(lease_id, ttl), once)
        return await self.propose_lease(LeaseGrantOp(random.getrandbits(62) + 1, ttl), once)

    async def revoke(self, lease_id: int, once: Any = None) -> int:
        """``once``: a copy sent again after a lost answer gets the first revoke's revision, not
        "lease not found"."""
        revision: int = await self.propose_lease(LeaseRevokeOp(lease_id), once)  # LeaseApplier's result
        return revision

    async def renew(self, lease_id: int) -> Any:
        """A keepalive, renewed by the leader's lessor in memory (forwarded there from a
        follower); no log entry (the lease loop checkpoints the new remaining TTL)."""
        return await self.keepalives.renew(lease_id)

    def _spawn(self, op: Any) -> None:
        # (decided by this leader's lessor: never proposed again through the next leader)
        task = asyncio.get_running_loop().create_task(self.node.driver.propose(op, timeout_s=5.0, repropose=False))
        self._pending.add(task)
        task.add_done_callback(self._proposed)
        if isinstance(op, LeaseExpireOp):
            task.add_done_callback(self._expiry_done)

    def _expiry_done(self, task: asyncio.Task[Any]) -> None:
        """etcd counts an expired lease once its revocation succeeded."""
        if not task.cancelled() and task.exception() is None:
            self.lessor.expired_revoked += 1

    def _proposed(self, task: asyncio.Task[Any]) -> None:
        """A ``_spawn``ed proposal is done: forget it and retrieve its exception, so asyncio
        does not log it (a failed expiry is proposed again when the lessor names the lease
        again)."""
        self._pending.discard(task)
        if not task.cancelled():
            task.exception()

    def _checkpoint(self, now: float) -> None:
        """Propose the checkpoints due (``Lessor.checkpoints_due``); the keepalives parked
        on the renewals it carries are answered when it commits."""
        due = self.lessor.checkpoints_due(now, CHECKPOINT_INTERVAL_S)
        waiters = self.keepalives.checkpoint_proposed([lid for lid, _ in due])
        if not due:
            return
        self._checkpoints_in_flight += 1
        task = asyncio.get_running_loop().create_task(
            self.node.driver.propose(LeaseCheckpointOp([[lid, left] for lid, left in due]),
                                     timeout_s=CHECKPOINT_TIMEOUT_S if waiters else 5.0, repropose=False)
        )
        self._pending.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._pending.discard(t)
            self._checkpoints_in_flight -= 1
            KeepaliveRouter.settle(waiters, not t.cancelled() and t.exception() is None)
            if self.keepalives.parked():
                self._renewals_parked()

        task.add_done_callback(done)

    def _renewals_parked(self) -> None:
        """A keepalive waits for its checkpoint: propose one at the end of this event-loop
        turn if none is in flight, else when the one in flight ends (group-commit style:
        one commit's wait at low load, bigger checkpoints rather than more at high load;
        the lease loop's turn every 100 ms stays the fallback)."""
        if self._checkpoint_soon or self._checkpoints_in_flight:
            return
        self._checkpoint_soon = True
        asyncio.get_running_loop().call_soon(self._checkpoint_now)

    def _checkpoint_now(self) -> None:
        self._checkpoint_soon = False
        if self.lessor.primary and self.node.driver.role == StateRole.LEADER:
            self._checkpoint(time.monotonic())

    async def _expire(self, lease_ids: list[int]) -> None:
        """Propose the revocation of leases past their deadline once a quorum confirms
        that this member still leads (etcd's ``revokeExpiredLeases`` after
        etcd-io/etcd#15247): a leader deposed without knowing it yet, whose deadlines miss
        the keepalives the new leader renewed, must not revoke those leases (its proposal,
        queued while no leader is known, would be forwarded to the new leader and
        committed). Not confirmed: the lessor names them again after its retry delay."""
        try:
            await self.node.driver.read_barrier(timeout_s=EXPIRE_CONFIRM_S)
        except Exception as exc:  # no quorum (or no longer leading)
            log.debug("lease expiry waits for a confirmed leadership: %r", exc)
            return
        if self.node.driver.role != StateRole.LEADER or not self.lessor.primary:
            return
        for lease_id in lease_ids:
            if lease_id in self.lessor.leases:
                self._spawn(LeaseExpireOp(lease_id))

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(LEASE_LOOP_S)
            now = time.monotonic()
            leading = self.node.driver.role == StateRole.LEADER
            if leading and not self.lessor.primary:
                # the old leader's last checkpoints must be applied first (etcd too waits
                # for the applied index before the new leader's lessor serves)
                try:
                    await self.node.driver.read_barrier(timeout_s=5.0)
                except Exception as exc:  # no quorum yet: try again next turn
                    log.debug("lease promotion waits: %r", exc)
                    continue
                if self.node.driver.role != StateRole.LEADER:
                    continue
                self.lessor.promote(time.monotonic(), self.promote_extend_s)
                self.keepalives.poke()
                log.info("lessor promoted: %d leases extended by %.1f s", len(self.lessor.leases),
                         self.promote_extend_s)
                continue
            if not leading and self.lessor.primary:
                self.lessor.demote()
            self.keepalives.poke()
            if not self.lessor.primary:
                continue
            expired = self.lessor.expired(now)
            if expired:
                task = asyncio.get_running_loop().create_task(self._expire(expired))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            self._checkpoint(now)
