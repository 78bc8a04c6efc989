"""``buggify(site)``: fault-injection sites that fire only inside a seeded simulation.

After FoundationDB's ``BUGGIFY``: code that wants to be tested under rare conditions asks
``if buggify("simdisk.slow_sync"): ...``. Outside a simulation the answer is always False and
costs one global lookup. Inside ``activated(rng)`` each site is, on its first use, switched
on for the whole run with probability ``site_p``; a switched-on site then fires on each call
with probability ``fire_p``. Every draw comes from the simulation's own ``random.Random``, in
call order, so a seed reproduces exactly which sites fired and when.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["BuggifyState", "activate", "activated", "buggify", "deactivate", "is_active"]


@dataclass(slots=True)
class BuggifyState:
    rng: random.Random
    site_p: float = 0.25
    fire_p: float = 0.25
    sites: dict[str, bool] = field(default_factory=dict)
    fired: dict[str, int] = field(default_factory=dict)


_state: BuggifyState | None = None


def buggify(site: str, fire_p: float | None = None) -> bool:
    """Whether the fault at ``site`` should happen now. Always False unless activated."""
    st = _state
    if st is None:
        return False
    enabled = st.sites.get(site)
    if enabled is None:
        enabled = st.sites[site] = st.rng.random() < st.site_p
    if not enabled:
        return False
    if st.rng.random() < (st.fire_p if fire_p is None else fire_p):
        st.fired[site] = st.fired.get(site, 0) + 1
        return True
    return False


def activate(rng: random.Random, site_p: float = 0.25, fire_p: float = 0.25) -> BuggifyState:
    """Turn buggify on (for one simulation) with its own RNG; returns the live state."""
    global _state
    _state = BuggifyState(rng, site_p, fire_p)
    return _state


def deactivate() -> BuggifyState | None:
    global _state
    st, _state = _state, None
    return st


def is_active() -> bool:
    return _state is not None


@contextmanager
def activated(
    rng: random.Random, site_p: float = 0.25, fire_p: float = 0.25
) -> Iterator[BuggifyState]:
    """``with activated(rng) as st:`` buggify is on inside the block, off after it."""
    global _state
    prev = _state
    st = activate(rng, site_p, fire_p)
    try:
        yield st
    finally:
        _state = prev
