"""Each attempt's kvraft identity: a scoped token the agent grants its ranks (docs/design/auth.md,
"Scoped tokens").

The agent's own permissions narrowed to ``/jobs/<job>/`` (launch rendezvous, progress,
checkpoints), named ``<node>/<task>#<attempt>``, bound to the node lease (a fenced or dead
agent's tokens end with it) and revoked at the attempt's Cleanup or Remove. The ranks act with
it, never with the agent's identity. Only an agent that logs in (``--user``) grants any.
"""

from __future__ import annotations

import contextlib
import logging

from kvraft.client import Client, ClientError, prefix_range_end

__all__ = ["JobTokens"]

log = logging.getLogger("kvraft.agent")


class JobTokens:
    def __init__(self, client: Client, node: str, logs_in: bool) -> None:
        self.client = client
        self.node = node
        self.logs_in = logs_in
        self.granted = 0
        self.failures = 0  # starts whose token kvraft refused (auth on): their ranks are refused too

    def name(self, key: str, attempt: int) -> str:
        return f"{self.node}/{key}#{attempt}"

    async def grant(self, job: str, key: str, attempt: int, lease_id: int) -> str:
        """The attempt's token; "" when the agent logs in as nobody, has no lease yet, kvraft's
        auth is off, or kvraft refuses (logged)."""
        if not self.logs_in or not lease_id:
            return ""
        prefix = f"/jobs/{job}/".encode()
        try:
            token: str = await self.client.scoped_token_grant(self.name(key, attempt), prefix,
                                                              prefix_range_end(prefix), lease=lease_id)
        except ClientError as exc:
            if "authentication is not enabled" not in str(exc):
                self.failures += 1
                log.warning("no scoped token for the task; its ranks cannot reach kvraft",
                            extra={"fields": {"task": key, "attempt": attempt, "error": str(exc)}})
            return ""
        self.granted += 1
        return token

    async def revoke(self, key: str, attempt: int) -> None:
        """The attempt ended: its token goes (idempotent; best effort, as the lease ends it
        anyway if this agent never gets through)."""
        if not self.logs_in:
            return
        with contextlib.suppress(ClientError):
            await self.client.scoped_token_revoke(self.name(key, attempt))
