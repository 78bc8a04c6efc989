"""The simulated members' state machine: a tiny key-value store with put, get and cas.

Commands travel in log entries as deterministic bytes::

    put|<request id>|<key>|<value>
    cas|<request id>|<key>|<expected value or "">|<new value>

Keys and values are short ASCII words without ``|``, ``=`` or newlines; the empty string in
a cas means "the key is absent". Gets are not logged: they are served by ReadIndex.

The reference model the history is checked against is ``kv_step`` in
``kvraft.testing.linearizability`` (one register per key); ``KvStateMachine`` is what the
members run, and their digests must agree wherever they applied the same prefix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["Command", "KvStateMachine", "decode_command", "encode_command"]


@dataclass(frozen=True, slots=True)
class Command:
    op: str  # "put" or "cas"
    req: int  # unique request id (the client operation)
    key: str
    value: str
    expect: str | None = None  # cas only; None = the key must be absent


def encode_command(cmd: Command) -> bytes:
    if cmd.op == "put":
        return f"put|{cmd.req}|{cmd.key}|{cmd.value}".encode()
    if cmd.op == "cas":
        return f"cas|{cmd.req}|{cmd.key}|{cmd.expect or ''}|{cmd.value}".encode()
    raise ValueError(f"unknown command {cmd.op!r}")


def decode_command(data: bytes) -> Command:
    parts = data.decode().split("|")
    if parts[0] == "put" and len(parts) == 4:
        return Command("put", int(parts[1]), parts[2], parts[3])
    if parts[0] == "cas" and len(parts) == 5:
        return Command("cas", int(parts[1]), parts[2], parts[4], parts[3] or None)
    raise ValueError(f"not a command: {data!r}")


class KvStateMachine:
    """One member's applied state. ``apply`` returns the command's result: None for a put,
    True/False for a cas (swapped or not)."""

    __slots__ = ("data", "applied_requests")

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.applied_requests = 0

    def apply(self, cmd: Command) -> bool | None:
        self.applied_requests += 1
        if cmd.op == "put":
            self.data[cmd.key] = cmd.value
            return None
        if self.data.get(cmd.key) == cmd.expect:
            self.data[cmd.key] = cmd.value
            return True
        return False

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def snapshot(self) -> bytes:
        """Deterministic bytes: ``key=value`` lines in key order."""
        return "".join(f"{k}={v}\n" for k, v in sorted(self.data.items())).encode()

    @classmethod
    def restore(cls, blob: bytes) -> KvStateMachine:
        sm = cls()
        for line in blob.decode().splitlines():
            k, _, v = line.partition("=")
            sm.data[k] = v
        return sm

    def digest(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()[:16]
