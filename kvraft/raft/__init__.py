"""The Raft consensus core: pure, deterministic, driven through ``RawNode`` and ``Ready``.

Start at ``rawnode.RawNode`` and the Ready contract in ``types.Ready``; the design is in
docs/design/raft.md.
"""

from kvraft.raft.config import RaftConfig, ReadOnlyOption
from kvraft.raft.errors import ConfChangeError, NotLeaderError, ProposalDroppedError, RaftError
from kvraft.raft.events import RaftEvent
from kvraft.raft.memory_storage import MemoryLogStorage
from kvraft.raft.progress import ProgressState
from kvraft.raft.rawnode import ProgressStatus, RawNode, Status
from kvraft.raft.storage import (
    CompactedError,
    LogStorage,
    SnapshotOutOfDateError,
    StorageError,
    UnavailableError,
    WritableLogStorage,
)
from kvraft.raft.types import (
    NONE,
    ConfChange,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    StateRole,
)

__all__ = [
    "NONE",
    "CompactedError",
    "ConfChange",
    "ConfChangeError",
    "ConfChangeTransition",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "LogStorage",
    "MemoryLogStorage",
    "Message",
    "MessageType",
    "NotLeaderError",
    "ProgressState",
    "ProgressStatus",
    "ProposalDroppedError",
    "RaftConfig",
    "RaftError",
    "RaftEvent",
    "RawNode",
    "ReadOnlyOption",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotOutOfDateError",
    "SoftState",
    "StateRole",
    "Status",
    "StorageError",
    "UnavailableError",
    "WritableLogStorage",
]
