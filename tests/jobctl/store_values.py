"""The shapes of kvraft client answers, for the fake stores of tests/jobctl (the informer's
async one, jobctl's synchronous one): a key-value, a watch event, a response header."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["KV", "Ev", "Header", "Resp"]


@dataclass
class KV:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass
class Ev:
    type: str
    kv: KV


@dataclass
class Header:
    revision: int


@dataclass
class Resp:
    header: Header
    kvs: list[KV] = field(default_factory=list)
    events: list[Ev] = field(default_factory=list)
