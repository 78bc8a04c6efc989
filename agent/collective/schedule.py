"""PURE ring schedules: chunk boundaries, segments, step plans and the node hierarchy.

Nothing here does I/O; the ring executor (``ring.py``) walks these plans over its links.

Ring allreduce on ``n`` ranks (Baidu / Horovod / NCCL): the buffer is cut into ``n``
chunks. In reduce-scatter step ``s`` rank ``r`` sends chunk ``(r - s) % n`` to its right
neighbour and receives chunk ``(r - s - 1) % n`` from its left neighbour, adding it in. After
``n - 1`` steps rank ``r`` owns the fully reduced chunk ``(r + 1) % n``. Allgather step ``s``
sends chunk ``(r + 1 - s) % n`` and receives chunk ``(r - s) % n`` into place. The chunk
received in one step is the chunk sent in the next, which is what lets the executor pipeline
segment by segment. Example, n = 3, rank 0::

    reduce-scatter  step 0: send 0 recv 2    step 1: send 2 recv 1   -> owns chunk 1
    allgather       step 0: send 1 recv 0    step 1: send 0 recv 2
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Hierarchy",
    "RingStep",
    "chain_role",
    "chunk_bounds",
    "hierarchy",
    "ring_allgather_steps",
    "ring_allreduce_steps",
    "segment_bounds",
]


def chunk_bounds(count: int, parts: int) -> list[tuple[int, int]]:
    """Split ``count`` elements into ``parts`` contiguous ranges whose sizes differ by <= 1."""
    if parts < 1:
        raise ValueError("parts must be >= 1")
    base, extra = divmod(count, parts)
    out: list[tuple[int, int]] = []
    lo = 0
    for i in range(parts):
        hi = lo + base + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def segment_bounds(lo: int, hi: int, segment_elems: int, segments: int | None = None) -> list[tuple[int, int]]:
    """Cut ``[lo, hi)`` into pipeline segments of at most ``segment_elems`` elements.

    With ``segments`` given, cut into exactly that many (some may be empty), so that every
    chunk of a ring has the same number of segments and both ends agree on message sizes.
    """
    if segment_elems < 1:
        raise ValueError("segment_elems must be >= 1")
    if segments is None:
        segments = max(1, -(-(hi - lo) // segment_elems))
    return [(lo + a, lo + b) for a, b in chunk_bounds(hi - lo, segments)]


@dataclass(frozen=True, slots=True)
class RingStep:
    phase: str  # "reduce-scatter" | "allgather"
    send_chunk: int
    recv_chunk: int


def ring_allreduce_steps(rank: int, size: int) -> list[RingStep]:
    steps = [RingStep("reduce-scatter", (rank - s) % size, (rank - s - 1) % size) for s in range(size - 1)]
    steps += [RingStep("allgather", (rank + 1 - s) % size, (rank - s) % size) for s in range(size - 1)]
    return steps


def ring_allgather_steps(rank: int, size: int) -> list[RingStep]:
    """Allgather of one block per rank: step s sends block (r - s) and receives (r - s - 1)."""
    return [RingStep("allgather", (rank - s) % size, (rank - s - 1) % size) for s in range(size - 1)]


def chain_role(rank: int, size: int, root: int, kind: str) -> tuple[bool, bool]:
    """(receives_from_left, sends_to_right) of ``rank`` in a pipelined chain along the ring.

    ``kind="reduce"`` flows root+1 -> root+2 -> ... -> root (each hop adds its own data);
    ``kind="broadcast"`` flows root -> root+1 -> ... -> root-1. Both use only ring links.
    """
    if size == 1:
        return (False, False)
    pos = (rank - root) % size  # 0 is the root
    if kind == "reduce":
        return (pos != 1, pos != 0)
    if kind == "broadcast":
        return (pos != 0, pos != size - 1)
    raise ValueError(f"unknown chain kind {kind!r}")


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """Two-level grouping of ranks derived from their placement (node of each rank)."""

    nodes: tuple[str, ...]  # node names in order of first appearance
    node_index: tuple[int, ...]  # per rank
    local_rank: tuple[int, ...]  # per rank: index among the ranks of its node
    local_size: tuple[int, ...]  # per rank
    leaders: tuple[int, ...]  # global rank of local_rank 0 on each node

    @property
    def useful(self) -> bool:
        """True when there is more than one node and at least one node has several ranks."""
        return 1 < len(self.nodes) < len(self.node_index)


def hierarchy(node_of_rank: list[str] | tuple[str, ...]) -> Hierarchy:
    nodes: list[str] = []
    index: dict[str, int] = {}
    counts: dict[str, int] = {}
    node_index: list[int] = []
    local_rank: list[int] = []
    leaders: list[int] = []
    for rank, node in enumerate(node_of_rank):
        if node not in index:
            index[node] = len(nodes)
            nodes.append(node)
            counts[node] = 0
            leaders.append(rank)
        node_index.append(index[node])
        local_rank.append(counts[node])
        counts[node] += 1
    local_size = [counts[n] for n in node_of_rank]
    return Hierarchy(tuple(nodes), tuple(node_index), tuple(local_rank), tuple(local_size), tuple(leaders))
