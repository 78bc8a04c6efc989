"""PURE: the pressure thresholds behind the node conditions, in kubelet's ``--eviction-hard`` syntax.

    kvraft-agent --eviction-hard 'nodefs.available<1Gi,nodefs.inodesFree<1%'

A node under pressure is not Ready: the scheduler places nothing on it (kubelet's
``MemoryPressure``, ``DiskPressure`` and ``PIDPressure``). The signals are kubelet's:

=====================  =====================================  =======================
signal                 what is measured                       default (kubelet's)
=====================  =====================================  =======================
``memory.available``   ``MemAvailable``                       ``100Mi``
``nodefs.available``   free space of the agent's data dir's   ``10%``
                       filesystem (for unprivileged users)
``nodefs.inodesFree``  free inodes of that filesystem         ``5%``
``pid.available``      ``pid_max`` less the processes          ``10%``
=====================  =====================================  =======================

A threshold is a percentage of the total or a quantity: bytes with Kubernetes' suffixes
(``Ki``, ``Mi``, ``Gi``, ``Ti``, ``k``, ``M``, ``G``, ``T``) for the first two, a count for the
others. ``0`` or ``0%`` turns a signal off. Signals not named keep their default (kubelet
replaces the whole set; keeping the rest is the safer reading for one flag).

Why it is a setting: 10% of a large filesystem shared with other work is a lot of space
(25 GiB of a 252 GiB disk): on such a development machine the node went NotReady while its
own data needed little, and ``kvraft-local`` (like kind, which turns kubelet's thresholds
off) sets ``nodefs.available<1Gi,nodefs.inodesFree<1%``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CONDITION_OF", "DEFAULT_EVICTION_HARD", "SIGNALS", "Threshold", "parse_eviction_hard", "pressures"]

SIGNALS = ("memory.available", "nodefs.available", "nodefs.inodesFree", "pid.available")
CONDITION_OF = {"memory.available": "MemoryPressure", "nodefs.available": "DiskPressure",
                "nodefs.inodesFree": "DiskPressure", "pid.available": "PIDPressure"}
_BYTES = ("memory.available", "nodefs.available")
DEFAULT_EVICTION_HARD = "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,pid.available<10%"

_SUFFIX = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")


@dataclass(frozen=True, slots=True)
class Threshold:
    """Pressure when the signal's available amount is below ``amount`` (a count or bytes), or
    below ``percent`` of the total when that is set."""

    signal: str
    amount: float = 0.0
    percent: float | None = None

    def limit(self, total: float) -> float:
        return total * self.percent / 100.0 if self.percent is not None else self.amount

    def text(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}%"
        return _human(self.amount) if self.signal in _BYTES else f"{self.amount:g}"


def parse_eviction_hard(text: str) -> dict[str, Threshold]:
    """The thresholds in force: kubelet's defaults, overridden by ``text``
    (``signal<quantity`` items, comma-separated). ``ValueError`` names what is wrong."""
    out = {t.signal: t for t in (_item(i) for i in DEFAULT_EVICTION_HARD.split(","))}
    seen: set[str] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        t = _item(item)
        if t.signal in seen:
            raise ValueError(f"--eviction-hard: {t.signal} given twice")
        seen.add(t.signal)
        out[t.signal] = t
    return out


def _item(item: str) -> Threshold:
    signal, sep, value = item.partition("<")
    signal, value = signal.strip(), value.strip()
    if not sep:
        raise ValueError(f"--eviction-hard: {item!r} is not signal<quantity (e.g. nodefs.available<10%)")
    if signal not in SIGNALS:
        raise ValueError(f"--eviction-hard: unknown signal {signal!r}; known: {', '.join(SIGNALS)}")
    if value.endswith("%"):
        try:
            percent = float(value[:-1])
        except ValueError:
            percent = -1.0
        if not 0.0 <= percent <= 100.0:
            raise ValueError(f"--eviction-hard: {signal}: {value!r} is not a percentage from 0% to 100%")
        return Threshold(signal, percent=percent)
    m = _QUANTITY.match(value)
    if m is None or (m.group(2) and signal not in _BYTES):
        kind = "a byte quantity (e.g. 1Gi, 500Mi)" if signal in _BYTES else "a count"
        raise ValueError(f"--eviction-hard: {signal}: {value!r} is not {kind} or a percentage")
    return Threshold(signal, amount=float(m.group(1)) * _SUFFIX[m.group(2) or ""])


def pressures(measures: dict[str, tuple[float, float]],
              thresholds: dict[str, Threshold]) -> dict[str, tuple[str, str]]:
    """The conditions under pressure, each with what crossed (``nodefs.available < 10%``: stable,
    for the node's condition) and the figures (``nodefs.available 24.1Gi (9.7%) < 10%``, for
    the log). ``measures``: signal -> (available, total); a signal not measured (or whose total
    is 0) is no pressure."""
    out: dict[str, tuple[str, str]] = {}
    for signal in SIGNALS:
        t, m = thresholds.get(signal), measures.get(signal)
        if t is None or m is None or m[1] <= 0:
            continue
        available, total = m
        if available < t.limit(total):
            shown = _human(available) if signal in _BYTES else f"{available:g}"
            stable, detail = f"{signal} < {t.text()}", f"{signal} {shown} ({100.0 * available / total:.1f}%) < {t.text()}"
            condition = CONDITION_OF[signal]
            if condition in out:
                stable, detail = f"{out[condition][0]}; {stable}", f"{out[condition][1]}; {detail}"
            out[condition] = (stable, detail)
    return out


def _human(n: float) -> str:
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        if n >= _SUFFIX[suffix]:
            return f"{n / _SUFFIX[suffix]:.1f}{suffix}"
    return f"{n:g}"
