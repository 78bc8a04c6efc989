"""Jepsen's partition shapes over a cluster's members, drawn from a seeded ``random.Random``
(pure: the ``flapping-partitions`` scenario and ``python -m kvraft.bench net-faults`` apply
them with ``NetFaults.cut``)."""

from __future__ import annotations

import random

__all__ = ["SHAPES", "SYMMETRIC_SHAPES", "random_shape"]

SHAPES = ("halves", "isolate", "bridge", "random-links")
SYMMETRIC_SHAPES = SHAPES[:3]


def random_shape(rng: random.Random, names: list[str], kinds: tuple[str, ...] = SHAPES) -> tuple[str, list[tuple[str, str]]]:
    """One of Jepsen's partition shapes over ``names``, as (description, one-way cuts), of one
    of ``kinds``: ``halves``, ``isolate`` (one member), ``bridge`` (two halves that only the
    middle member reaches both of) and ``random-links`` (each one-way link cut with
    probability 0.3). All but the last cut both ways."""
    shuffled = rng.sample(names, len(names))
    kind = rng.choice(kinds)
    if kind == "random-links":
        links = [(a, b) for a in names for b in names if a != b and rng.random() < 0.3]
        return kind, links
    if kind == "isolate":
        sides = [shuffled[:1], shuffled[1:]]
    elif kind == "halves":
        sides = [shuffled[: len(names) // 2], shuffled[len(names) // 2 :]]
    else:  # bridge: two halves that only the middle member reaches both of
        middle = len(names) // 2
        left, bridge, right = shuffled[:middle], shuffled[middle], shuffled[middle + 1 :]
        links = [(a, b) for a in left for b in right] + [(b, a) for a in left for b in right]
        return f"bridge through {bridge}", links
    links = [(a, b) for a in sides[0] for b in sides[1]] + [(b, a) for a in sides[0] for b in sides[1]]
    return f"{kind} {','.join(sorted(sides[0]))} | {','.join(sorted(sides[1]))}", links
