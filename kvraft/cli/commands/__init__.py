"""One module per etcdctl noun; each has ``register(subparsers, parent)``."""

from __future__ import annotations

__all__ = ["MODULES"]

MODULES = (
    "kv", "txn", "watch", "compaction", "lease", "member", "endpoint", "snapshot", "defrag",
    "alarm", "move_leader", "auth", "user", "role", "lock", "elect", "check", "version", "mirror", "completion",
)
