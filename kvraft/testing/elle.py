"""An Elle-style checker for list-append transaction histories.

After Kingsbury & Alvaro, *Elle: Inferring Isolation Anomalies from Experimental Observations*
(VLDB 2020). Each key holds a list of ints; a transaction (``Txn``) is a sequence of micro-ops
(``Mop``): ``append`` one element to a key, or ``r`` read a key's whole list. Every appended
element is unique per key, so a read names exactly which appends it saw, and in which order.

Model. A txn's status is ``ok`` (committed; its reads are what it saw), ``fail`` (took no
effect) or ``info`` (unknown: its appends may have happened, its reads are unknown, ``ret`` is
None). An info txn any of whose appends was observed is taken as committed. The optional
``final`` map (a linearizable read of each key after the run) is one more observation of each
key; it has no node in the graph.

Element checks (no graph needed):

==================  ===========================================================================
incompatible-order  two reads of a key of which neither is a prefix of the other
duplicate-elements  one element twice in a read (an append applied twice)
garbage-read        an element no txn appended to that key
G1a                 aborted read: an element appended by a failed txn
G1b                 intermediate read: a read ends in a txn's append that was not its last to k
internal            a txn that does not see its own appends, whose two reads of a key differ
                    without an append of its own in between, or that reads its later append
lost-append         (with ``final``) a committed append missing from the final read
==================  ===========================================================================

Inference. Reads of a key are prefixes of one list, the version order: the longest read (keys
with incompatible orders or duplicates are left out). Over the committed txns it gives edges:
``ww`` (the writers of consecutive elements), ``wr`` (writer of a read's last element to the
reader), ``rw`` (a reader to the writer of the element just past what it read) and, for strict
serializability, ``rt`` (T1 returned before T2 was invoked; a transitive reduction built by a
sweep over the call and return events). The reads used are the external ones: a txn's first
read of a key, when it came before the txn's own appends to it (the txn's later reads must agree
with it, or they are ``internal`` anomalies).

Every cycle is an anomaly. The strongly connected components of the graph without ``rt``
edges come first (iterative Tarjan); each gives one anomaly, its most damning cycle: ``G0`` if
the ww edges alone close one, else ``G1c`` (ww and wr), else ``G-single`` (exactly one rw: read
skew, lost update), else ``G2`` (several rw: write skew). Then each component of the whole
graph that joins several of those gives a cycle through an ``rt`` edge, named the same with
``-realtime``: a strict-serializability violation that plain serializability allows
(``check(..., realtime=False)`` skips it). Info txns have no return, so no outgoing ``rt``
edges. A cycle is the shortest (BFS) through the few start nodes or edges tried, spelled out
hop by hop with its keys; a component may hold more cycles than the one reported.

Out of scope: predicate reads and other data types (only whole-list reads of single keys),
weaker models' own anomalies (no snapshot-isolation or session-order inference), info txns'
unseen appends (taken as never applied) and fail txns (taken as without effect). ``final`` is
taken to be read after every txn ended: a committed append missing from it is lost.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Anomaly", "Mop", "Txn", "check", "problems", "txn_from_dict", "txn_to_dict"]

WW, WR, RW, RT = 1, 2, 4, 8
_ALL = WW | WR | RW | RT
_NAME = {WW: "ww", WR: "wr", RW: "rw", RT: "rt"}
_LEGEND = {
    WW: "A -ww k-> B: B appended to k after A",
    WR: "A -wr k-> B: B read A's append to k",
    RW: "A -rw k-> B: A read k without B's append, so came first",
    RT: "A -rt-> B: A returned before B was invoked",
}
_HINT = {
    "G0": "the txns' appends are ordered differently on different keys",
    "G1c": "each txn saw the effects of the one before it around the cycle",
    "G-single": "one txn missed an append the others order before it (read skew, lost update)",
    "G2": "several txns each missed another's append (write skew)",
}
_TRIES = 8  # start nodes tried for a shortest cycle
_RW_TRIES = 32  # rw edges tried for a G-single cycle

Adj = dict[int, dict[int, int]]
Elems = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Mop:
    f: str  # "append" or "r"
    key: str
    value: int | Elems | None


@dataclass(frozen=True, slots=True)
class Txn:
    id: int
    client: int
    call: float
    ret: float | None
    status: str  # "ok", "fail" or "info"
    mops: tuple[Mop, ...]


@dataclass(frozen=True, slots=True)
class Anomaly:
    type: str
    txns: tuple[int, ...]
    text: str


def txn_from_dict(doc: dict[str, Any]) -> Txn:
    mops = []
    for f, key, value in doc["mops"]:
        if f == "r":
            v: int | Elems | None = None if value is None else tuple(map(int, value))
        elif f == "append":
            v = int(value)
        else:
            raise ValueError(f"unknown micro-op {f!r}")
        mops.append(Mop(str(f), str(key), v))
    ret, status = doc.get("ret"), str(doc["status"])
    call, ret = float(doc["call"]), None if ret is None else float(ret)
    return Txn(int(doc["id"]), int(doc["client"]), call, ret, status, tuple(mops))


def txn_to_dict(txn: Txn) -> dict[str, Any]:
    mops = [[m.f, m.key, list(m.value) if isinstance(m.value, tuple) else m.value] for m in txn.mops]
    t = txn
    return dict(id=t.id, client=t.client, call=t.call, ret=t.ret, status=t.status, mops=mops)


def check(
    txns: Sequence[Txn], final: dict[str, list[int]] | None = None, *, realtime: bool = True
) -> list[Anomaly]:
    """Every anomaly found in the history; ``realtime=False`` checks plain serializability."""
    c = _Checker(txns, final)
    c.internal()
    c.reads()
    if final is not None:
        c.lost(final)
    c.cycles(realtime)
    return c.out


def problems(txns: Sequence[Txn], final: dict[str, list[int]] | None = None) -> list[str]:
    """The anomalies' texts, at most 50, and a count line when there are more."""
    found = check(txns, final)
    texts = [a.text for a in found[:50]]
    if len(found) > 50:
        by = Counter(a.type for a in found[50:])
        kinds = ", ".join(f"{n} {t}" for t, n in by.most_common())
        texts.append(f"... and {len(found) - 50} more ({kinds}); {len(found)} anomalies in all")
    return texts


def _abbrev(xs: Sequence[int], at: int | None = None, width: int = 3) -> str:
    """``xs`` as a list; when long, only the elements around index ``at`` (default: the end)."""
    n = len(xs)
    if n <= 2 * width + 2:
        return "[" + ", ".join(map(str, xs)) + "]"
    at = n - 1 if at is None else at
    lo, hi = max(0, at - width), min(n, at + width + 1)
    body = ", ".join(map(str, xs[lo:hi]))
    return f"[{'..., ' if lo else ''}{body}{', ...' if hi < n else ''}] ({n} elements)"


def _saw(reader: int | None) -> str:
    return "the final read gave" if reader is None else f"T{reader} read"


def _succ(adj: Adj, u: int, mask: int, within: set[int] | None) -> Iterator[int]:
    return (v for v, m in adj[u].items() if m & mask and (within is None or v in within))


def _sccs(nodes: Iterable[int], adj: Adj, mask: int, within: set[int] | None) -> list[list[int]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on: set[int] = set()
    out: list[list[int]] = []
    for root in nodes:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        work = [(root, _succ(adj, root, mask, within))]
        while work:
            u, it = work[-1]
            for v in it:
                if v not in index:
                    index[v] = low[v] = len(index)
                    stack.append(v)
                    on.add(v)
                    work.append((v, _succ(adj, v, mask, within)))
                    break
                if v in on:
                    low[u] = min(low[u], index[v])
            else:
                work.pop()
                if work:
                    p = work[-1][0]
                    low[p] = min(low[p], low[u])
                if low[u] == index[u]:
                    comp: list[int] = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == u:
                            break
                    out.append(comp)
    return out


def _path(adj: Adj, within: set[int], mask: int, src: int, dst: int) -> list[int] | None:
    """A shortest path ``[src, ..., dst]`` (a cycle when ``src == dst``), by BFS."""
    parent: dict[int, int] = {}
    seen = {src}
    queue = deque([src])
    while queue:
        u = queue.popleft()
        for v in _succ(adj, u, mask, within):
            if v == dst:
                path = [v, u]
                while path[-1] != src:
                    path.append(parent[path[-1]])
                return path[::-1]
            if v not in seen:
                seen.add(v)
                parent[v] = u
                queue.append(v)
    return None


def _shorter(a: list[int] | None, b: list[int] | None) -> list[int] | None:
    return b if a is None or (b is not None and len(b) < len(a)) else a


class _Checker:
    def __init__(self, txns: Sequence[Txn], final: dict[str, list[int]] | None) -> None:
        self.txns = {t.id: t for t in txns}
        self.out: list[Anomaly] = []
        self.writer: dict[str, dict[int, int]] = {}  # key -> element -> appending txn
        self.appends: dict[tuple[int, str], list[int]] = {}  # (txn, key) -> its appends
        self.observed: dict[str, list[tuple[int | None, Elems]]] = {}
        self.ext: list[tuple[int, str, Elems]] = []  # external reads
        for t in txns:
            touched: set[str] = set()
            for m in t.mops:
                if m.f == "append" and isinstance(m.value, int):
                    self.writer.setdefault(m.key, {}).setdefault(m.value, t.id)
                    self.appends.setdefault((t.id, m.key), []).append(m.value)
                    touched.add(m.key)
                elif m.f == "r" and isinstance(m.value, tuple) and t.status == "ok":
                    self.observed.setdefault(m.key, []).append((t.id, m.value))
                    if m.key not in touched:  # its first read, before its own appends
                        self.ext.append((t.id, m.key, m.value))
                        touched.add(m.key)
        for k, lst in (final or {}).items():
            self.observed.setdefault(k, []).append((None, tuple(lst)))
        self.order: dict[str, Elems] = {}  # version order of each usable key
        self.first_reader: dict[str, dict[int, int | None]] = {}
        self.live_info: set[int] = set()  # info txns whose appends were observed
        self.flagged: set[tuple[str, str, int]] = set()
        self.adj: Adj = {}
        self.keys: dict[tuple[int, int, int], str] = {}

    def add(self, type_: str, txns: Iterable[int | None], text: str) -> None:
        ids = tuple(dict.fromkeys(t for t in txns if t is not None))
        self.out.append(Anomaly(type_, ids, f"{type_}: {text}"))

    def node(self, n: int) -> str:
        t = self.txns[n]
        return f"T{n} (client {t.client}{', info' if t.status == 'info' else ''})"

    def internal(self) -> None:
        for t in self.txns.values():
            if t.status != "ok":
                continue
            base: dict[str, Elems] = {}  # last read of each key
            since: dict[str, list[int]] = {}  # own appends since then
            made: Counter[str] = Counter()
            for m in t.mops:
                k = m.key
                if m.f == "append" and isinstance(m.value, int):
                    since.setdefault(k, []).append(m.value)
                    made[k] += 1
                if m.f != "r" or not isinstance(m.value, tuple):
                    continue
                v, own = m.value, tuple(since.get(k, ()))
                rest = self.appends.get((t.id, k), [])[made[k] :]
                later = set(rest).intersection(v) if rest else set()
                at = f"on key {k}: T{t.id} read {_abbrev(v)}"
                if k in base and v != base[k] + own:
                    what = "its earlier read" + (" and own appends" if own else "")
                    self.add("internal", [t.id], f"{at} but {what} give {_abbrev(base[k] + own)}")
                elif k not in base and own and v[-len(own) :] != own:
                    self.add("internal", [t.id], f"{at}, not ending in its own appends {list(own)}")
                elif later:
                    self.add("internal", [t.id], f"{at}, holding its own later append {min(later)}")
                base[k], since[k] = v, []

    def flag(self, type_: str, k: str, e: int, txns: list[int | None], text: str) -> None:
        if (type_, k, e) not in self.flagged:
            self.flagged.add((type_, k, e))
            self.add(type_, txns, f"on key {k}: {text}")

    def reads(self) -> None:
        for k, obs in self.observed.items():
            obs.sort(key=lambda o: (len(o[1]), o[1]))
            writers, first = self.writer.get(k, {}), self.first_reader.setdefault(k, {})
            prev: Elems = ()
            prev_readers: list[int | None] = [None]
            seen: set[int] = set()
            conflicts: list[tuple[int | None, Elems, int | None, Elems]] = []
            dup = False
            i = 0
            while i < len(obs):
                lst, readers = obs[i][1], [obs[i][0]]
                i += 1
                while i < len(obs) and obs[i][1] == lst:
                    readers.append(obs[i][0])
                    i += 1
                start = len(prev)
                if lst[:start] != prev:
                    conflicts.append((prev_readers[0], prev, readers[0], lst))
                    start, seen = 0, set()
                r = readers[0]
                for pos in range(start, len(lst)):
                    e = lst[pos]
                    if e in seen:
                        dup = True
                        text = f"{_saw(r)} {_abbrev(lst, pos)}, with {e} twice"
                        self.flag("duplicate-elements", k, e, [r, writers.get(e)], text)
                    seen.add(e)
                    first.setdefault(e, r)
                    w = writers.get(e)
                    if w is None:
                        text = f"{_saw(r)} {e}, which no txn appended to {k}"
                        self.flag("garbage-read", k, e, [r], text)
                    elif self.txns[w].status == "fail":
                        text = f"{_saw(r)} {e}, appended by {self.node(w)}, which failed"
                        self.flag("G1a", k, e, [r, w], text)
                    elif self.txns[w].status == "info":
                        self.live_info.add(w)
                w = writers.get(lst[-1]) if lst else None
                if w is not None:
                    self.intermediate(k, lst, w, [x for x in readers if x != w])
                prev, prev_readers = lst, readers
            if conflicts:
                ra, a, rb, b = conflicts[0]
                d = next(j for j, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
                more = f" ({len(conflicts) - 1} more conflicting reads)" if len(conflicts) > 1 else ""
                text = (
                    f"on key {k}: {_saw(ra)} {_abbrev(a, d)} but {_saw(rb)} "
                    f"{_abbrev(b, d)}; they differ at position {d}{more}"
                )
                self.add("incompatible-order", [ra, rb], text)
            elif not dup:
                self.order[k] = prev

    def intermediate(self, k: str, lst: Elems, w: int, readers: list[int | None]) -> None:
        mine = self.appends[(w, k)]
        if readers and len(mine) > 1 and lst[-1] != mine[-1]:
            text = (
                f"{_saw(readers[0])} {_abbrev(lst)}, ending in {lst[-1]}, an intermediate "
                f"append of {self.node(w)} (its last to {k} was {mine[-1]})"
            )
            self.flag("G1b", k, lst[-1], [readers[0], w], text)

    def lost(self, final: dict[str, list[int]]) -> None:
        for k, lst in final.items():
            have, first = set(lst), self.first_reader.get(k, {})
            missing = []
            for e, w in self.writer.get(k, {}).items():
                status = self.txns[w].status
                if e not in have and (status == "ok" or (status == "info" and e in first)):
                    how = "ok" if status == "ok" else f"info, read by T{first[e]}"
                    missing.append((e, w, f"{e} by T{w} ({how})"))
            if missing:
                listed = ", ".join(m[2] for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
                text = (
                    f"on key {k}: the final read ({len(lst)} elements) lacks {len(missing)} "
                    f"committed append(s): {listed}"
                )
                self.add("lost-append", [m[1] for m in missing], text)

    def edge(self, a: int | None, b: int | None, kind: int, key: str = "") -> None:
        if a is not None and b is not None and a != b and a in self.adj and b in self.adj:
            self.adj[a][b] = self.adj[a].get(b, 0) | kind
            self.keys.setdefault((a, b, kind), key)

    def cycles(self, realtime: bool) -> None:
        nodes = [t.id for t in self.txns.values() if t.status == "ok" or t.id in self.live_info]
        self.adj = {n: {} for n in nodes}
        for k, order in self.order.items():
            ws = self.writer.get(k, {})
            for e, f in zip(order, order[1:], strict=False):
                self.edge(ws.get(e), ws.get(f), WW, k)
        for r, k, lst in self.ext:
            if k in self.order:
                order, ws = self.order[k], self.writer.get(k, {})
                if lst:
                    self.edge(ws.get(lst[-1]), r, WR, k)
                if len(order) > len(lst):
                    self.edge(r, ws.get(order[len(lst)]), RW, k)
        if realtime:
            self.realtime_edges(nodes)
        comps = _sccs(nodes, self.adj, WW | WR | RW, None)
        for comp in comps:
            if len(comp) > 1:
                self.explain_scc(set(comp))
        if realtime:
            comp_of = {n: i for i, comp in enumerate(comps) for n in comp}
            for comp in _sccs(nodes, self.adj, _ALL, None):
                if len(comp) > 1:
                    self.explain_realtime(set(comp), comp_of)

    def realtime_edges(self, nodes: list[int]) -> None:
        """A transitive reduction of "returned before invoked", by a sweep over the events."""
        events: list[tuple[float, int, int]] = []
        for n in nodes:
            t = self.txns[n]
            events.append((t.call, 0, n))  # calls sort before returns at the same time
            if t.ret is not None and t.status == "ok":
                events.append((t.ret, 1, n))
        events.sort()
        frontier: dict[int, None] = {}  # returned, not yet known to precede a returned txn
        preds: dict[int, list[int]] = {}
        for _, ev, n in events:
            if ev == 0:
                preds[n] = list(frontier)
                for p in preds[n]:
                    self.edge(p, n, RT)
            else:
                for p in preds[n]:
                    frontier.pop(p, None)
                frontier[n] = None

    def explain_realtime(self, s: set[int], comp_of: dict[int, int]) -> None:
        """A cycle through an edge between two components of the graph without ``rt`` edges."""
        best, tries = None, 0
        for u in sorted(s):
            for v in _succ(self.adj, u, _ALL, s):
                if comp_of[u] != comp_of[v] and tries < _TRIES:
                    tries += 1
                    path = _path(self.adj, s, _ALL, v, u)
                    best = _shorter(best, [u, *path] if path else None)
        if best:
            self.report(best, _ALL)

    def explain_scc(self, s: set[int]) -> None:
        for mask in (WW, WW | WR):
            for sub in _sccs(sorted(s), self.adj, mask, s):
                if len(sub) > 1:
                    self.report(self.shortest(set(sub), mask), mask)
                    return
        best, tries = None, 0
        for u in sorted(s):
            for v, m in self.adj[u].items():
                if m & RW and v in s and tries < _RW_TRIES:
                    tries += 1
                    path = _path(self.adj, s, WW | WR, v, u)
                    best = _shorter(best, [u, *path] if path else None)
        self.report(best or self.shortest(s, WW | WR | RW), WW | WR | RW)

    def shortest(self, s: set[int], mask: int) -> list[int]:
        best = None
        for n in sorted(s)[:_TRIES]:
            best = _shorter(best, _path(self.adj, s, mask, n, n))
        assert best is not None, "a strongly connected component has a cycle"
        return best

    def report(self, cycle: list[int], mask: int) -> None:
        hops = []
        for a, b in zip(cycle, cycle[1:], strict=False):
            m = self.adj[a][b] & mask
            hops.append((a, b, next(k for k in (WW, WR, RW, RT) if m & k)))
        kinds = {k for _, _, k in hops}
        rw = sum(1 for _, _, k in hops if k == RW)
        base = "G2" if rw > 1 else "G-single" if rw == 1 else "G1c" if WR in kinds else "G0"
        spelled = self.node(cycle[0])
        for a, b, k in hops:
            key = self.keys.get((a, b, k), "")
            spelled += f" -{_NAME[k]}{' ' + key if key else ''}-> "
            spelled += f"T{b}" if b == cycle[0] else self.node(b)
        hint = _HINT[base] + ("; no serial order respects real time" if RT in kinds else "")
        legend = "; ".join(_LEGEND[k] for k in (WW, WR, RW, RT) if k in kinds)
        type_ = base + ("-realtime" if RT in kinds else "")
        self.out.append(Anomaly(type_, tuple(cycle[:-1]), f"{type_}: {spelled} ({hint}. {legend})"))
