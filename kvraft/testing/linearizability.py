"""A linearizability checker for key-value histories (Wing & Gong / Lowe, as in porcupine).

The search (Horn & Kroening, *Faster linearizability checking via P-compositionality*):

1. The history of one partition becomes a time-ordered, doubly linked list of call and
   return events; each call knows its return.
2. Depth-first search over linearization orders: scan from the head for a call whose
   operation the model accepts now; take it (push (call, old state), mark it in a bitmask,
   lift its call and return out of the list) and rescan from the head.
3. Reaching a return whose call is not linearized means no candidate works: backtrack (pop,
   restore the state, unlift) and continue the scan after the popped call. Backtracking from
   an empty stack means "not linearizable"; an empty list means "linearizable".
4. Every visited (bitmask, state) pair is memoized; a candidate leading to a visited pair is
   skipped.
5. P-compositionality: the history is split per key and each key is checked on its own. The
   per-key searches run interleaved (round-robin, in slices of steps) so one hard key cannot
   starve the refutation of another; checking stops at the first illegal key.

Operations whose outcome is unknown (a client timed out, a server crashed) have
``ret = None``: they stay open until the end of the history, and their output is
``UNKNOWN``, which the model accepts whatever the state. Such an operation may take effect at
any point after its call, or never (linearized last, it changes nothing anyone observed).

The budget is counted in search steps (deterministic); a wall-clock ``timeout_s`` may be
given as well. Running out gives ``Verdict.UNKNOWN``.
"""

from __future__ import annotations

import enum
import gc
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "UNKNOWN",
    "CheckResult",
    "KvInput",
    "Operation",
    "PartitionResult",
    "Verdict",
    "check_operations",
    "kv_partition",
    "kv_step",
    "parse_jepsen_log",
]


class _Unknown:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self) -> str:
        return "UNKNOWN"  # unpickles as the module's singleton (compared with ``is``)


UNKNOWN: Any = _Unknown()
"""The output of an operation whose outcome nobody saw (accepted in any state)."""


@dataclass(frozen=True, slots=True)
class KvInput:
    """``op`` is ``"get"``, ``"put"`` or ``"cas"``. A get outputs the value (None when the
    key is absent); a put outputs None; a cas outputs True (swapped) or False."""

    op: str
    key: str
    value: Any = None  # put: the new value; cas: the new value
    expect: Any = None  # cas: the value compared against


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation. ``call`` and ``ret`` are comparable timestamps (any unit; only
    the order matters); ``ret is None`` means the operation never returned."""

    client: int
    input: Any
    call: float
    output: Any = UNKNOWN
    ret: float | None = None


class Verdict(enum.Enum):
    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class PartitionResult:
    key: Hashable
    verdict: Verdict
    ops: int
    steps: int
    # for ILLEGAL: the longest partial linearization found (ops in the order taken) and the
    # operations that were pending right after it, none of which could be taken next.
    partial: tuple[Operation, ...] = ()
    stuck: tuple[Operation, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    partitions: tuple[PartitionResult, ...] = field(default=())
    steps: int = 0

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def explain(self) -> str:
        """A short human-readable account of the first illegal partition (or the verdict)."""
        bad = [p for p in self.partitions if p.verdict is Verdict.ILLEGAL]
        if not bad:
            undecided = [p.key for p in self.partitions if p.verdict is Verdict.UNKNOWN]
            if undecided:
                return f"unknown: search budget exhausted on keys {undecided!r}"
            return f"{self.verdict.value}: {len(self.partitions)} partitions, {self.steps} steps"
        p = bad[0]
        lines = [
            f"illegal: key {p.key!r} ({p.ops} ops); longest linearizable prefix "
            f"({len(p.partial)} ops):"
        ]
        lines += [f"  ok    {_describe(op)}" for op in p.partial[-12:]]
        lines += ["  then none of these can come next:"]
        lines += [f"  stuck {_describe(op)}" for op in p.stuck[:12]]
        return "\n".join(lines)


def _describe(op: Operation) -> str:
    ret = "never" if op.ret is None else f"{op.ret:g}"
    return f"client {op.client} [{op.call:g}, {ret}] {op.input!r} -> {op.output!r}"


# -- the key-value register model --------------------------------------------------------


def kv_step(state: Any, inp: KvInput, out: Any) -> tuple[bool, Any]:
    """The model of one key: ``state`` is its value (None when absent)."""
    op = inp.op
    if op == "get":
        return (out is UNKNOWN or out == state), state
    if op == "put":
        return True, inp.value
    if op == "cas":
        if out is UNKNOWN:
            return True, (inp.value if state == inp.expect else state)
        if out:
            return state == inp.expect, inp.value
        return state != inp.expect, state
    raise ValueError(f"unknown op {op!r}")


def _kv_code(op: Operation) -> int:
    # 0 get, 1 put, 2 cas that swapped, 3 cas that did not, 4 cas with unknown outcome,
    # 5 get with unknown output
    kind = op.input.op
    if kind == "get":
        return 5 if op.output is UNKNOWN else 0
    if kind == "put":
        return 1
    if kind == "cas":
        return 4 if op.output is UNKNOWN else (2 if op.output else 3)
    raise ValueError(f"unknown op {kind!r}")


def kv_partition(op: Operation) -> Hashable:
    key: Hashable = op.input.key
    return key


# -- the search -----------------------------------------------------------------------------

Step = Callable[[Any, Any, Any], tuple[bool, Any]]


def _search(
    ops: Sequence[Operation], step: Step, init: Any, result_box: list[Any]
) -> Iterator[int]:
    """Generator: yields the number of steps taken so far every 4096 steps; when done, puts
    (verdict, steps, partial, stuck) into ``result_box``."""
    n = len(ops)
    # events: (time, kind, op index); kind 0 = call, 1 = return; calls first on ties
    # (touching operations count as concurrent). Unreturned ops return after everything.
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        events.append((float("inf") if op.ret is None else op.ret, 1, i))
    events.sort()
    m = len(events)
    # node 0 is the head sentinel; event k is node k + 1
    nxt = list(range(1, m + 2))
    nxt[m] = 0
    prv = list(range(-1, m))
    op_of = [0] * (m + 1)
    match = [0] * (m + 1)  # call node -> its return node
    call_node = [0] * n
    for k, (_t, kind, i) in enumerate(events):
        op_of[k + 1] = i
        if kind == 0:
            call_node[i] = k + 1
        else:
            match[call_node[i]] = k + 1
    # per node: what to do when the scan meets it. code -1: a return; 0..5: the kv model
    # inlined (see kv_step; a = value, b = expected value or the get's output); 9: generic
    fast = step is kv_step and all(isinstance(op.input, KvInput) for op in ops)
    # Key-value reductions (see _observed): values nobody observed are one value, BOTTOM;
    # "lazy" writes (never returned, value unobserved) of one class are interchangeable,
    # so they are taken in call order only.
    observed = _observed(ops) if fast else set()
    code = [-1] * (m + 1)
    after = [0] * (m + 1)  # lazy call node -> the previous call node of its class (0: none)
    taken = [False] * (m + 1)
    arg_a: list[Any] = [None] * (m + 1)
    arg_b: list[Any] = [None] * (m + 1)
    bit = [0] * (m + 1)
    last_of_class: dict[Any, int] = {}
    for i in sorted(range(n), key=lambda j: call_node[j]):
        op, node = ops[i], call_node[i]
        bit[node] = 1 << i
        if fast:
            inp = op.input
            code[node] = _kv_code(op)
            written = inp.value if inp.value in observed else _BOTTOM
            arg_a[node] = written
            arg_b[node] = op.output if inp.op == "get" else inp.expect
            if op.ret is None and inp.op in ("put", "cas") and written is _BOTTOM:
                cls = ("put",) if inp.op == "put" else ("cas", inp.expect)
                after[node] = last_of_class.get(cls, 0)
                last_of_class[cls] = node
        else:
            code[node] = 9
            arg_a[node], arg_b[node] = op.input, op.output
    if fast and init not in observed:
        init = _BOTTOM
    taken[0] = True

    state = init
    linearized = 0
    memo: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = []
    best: list[int] = []
    depth = best_depth = 0
    steps = 0
    budget = 4096
    entry = nxt[0]
    while nxt[0]:
        budget -= 1
        if not budget:
            steps += 4096
            budget = 4096
            yield steps
        c = code[entry]
        if c >= 0:
            if not taken[after[entry]]:
                entry = nxt[entry]
                continue
            if c == 0:
                ok, new_state = arg_b[entry] == state, state
            elif c == 1:
                ok, new_state = True, arg_a[entry]
            elif c == 2:
                ok, new_state = state == arg_b[entry], arg_a[entry]
            elif c == 3:
                ok, new_state = state != arg_b[entry], state
            elif c == 4:
                ok, new_state = True, (arg_a[entry] if state == arg_b[entry] else state)
            elif c == 5:
                ok, new_state = True, state
            else:
                ok, new_state = step(state, arg_a[entry], arg_b[entry])
            if ok:
                new_lin = linearized | bit[entry]
                key = (new_lin, new_state)
                if key not in memo:
                    memo.add(key)
                    stack.append((entry, state))
                    state = new_state
                    linearized = new_lin
                    taken[entry] = True
                    # lift the call and its return
                    r = match[entry]
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    p, q = prv[r], nxt[r]
                    nxt[p] = q
                    prv[q] = p
                    depth += 1
                    if depth > best_depth:
                        best_depth = depth
                        best = [e for e, _ in stack]
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:
            if not stack:
                steps += 4096 - budget
                partial = tuple(ops[op_of[e]] for e in best)
                stuck = _pending_after(ops, {op_of[e] for e in best})
                result_box[:] = [Verdict.ILLEGAL, steps, partial, stuck]
                return
            entry, state = stack.pop()
            depth -= 1
            linearized ^= bit[entry]
            taken[entry] = False
            # unlift: the return first, then the call (reverse order of lifting)
            r = match[entry]
            p, q = prv[r], nxt[r]
            nxt[p] = r
            prv[q] = r
            p, q = prv[entry], nxt[entry]
            nxt[p] = entry
            prv[q] = entry
            entry = nxt[entry]
    steps += 4096 - budget
    result_box[:] = [Verdict.OK, steps, (), ()]


class _Bottom:
    __slots__ = ()

    def __repr__(self) -> str:
        return "BOTTOM"


_BOTTOM: Any = _Bottom()


def _observed(ops: Sequence[Operation]) -> set[Any]:
    """The values some operation can tell apart: outputs of gets and expectations of cases.

    Two reductions rest on it, both exact for the key-value model. (1) Every other value
    behaves alike in every state (no get can return it, every cas compares unequal to it), so
    the search keeps one value, BOTTOM, for all of them: fewer states to memoize. (2) A put
    that never returned and writes such a value can only ever set the state to BOTTOM, and
    it stays available from its call to the end; so does a cas that never returned and
    writes such a value (it sets BOTTOM when the state is its expected value). Two such
    writes of one class (puts; or cases expecting the same value) are interchangeable once
    both are called, so any linearization can be rewritten to use the earliest-called ones
    of each class in call order: the search takes them in that order only."""
    observed: set[Any] = set()
    for op in ops:
        inp = op.input
        if inp.op == "get" and op.output is not UNKNOWN:
            observed.add(op.output)
        elif inp.op == "cas":
            observed.add(inp.expect)
    return observed


def _pending_after(ops: Sequence[Operation], taken: set[int]) -> tuple[Operation, ...]:
    """The not-yet-linearized operations that were callable right after the longest
    partial linearization: those called before the earliest return among the untaken."""
    rest = [(op, i) for i, op in enumerate(ops) if i not in taken]
    if not rest:
        return ()
    first_ret = min((op.ret if op.ret is not None else float("inf")) for op, _ in rest)
    return tuple(op for op, _ in sorted(rest, key=lambda t: t[0].call) if op.call <= first_ret)


def check_operations(
    ops: Iterable[Operation],
    *,
    step: Step = kv_step,
    init: Any = None,
    partition: Callable[[Operation], Hashable] | None = kv_partition,
    max_steps: int | None = 5_000_000,
    timeout_s: float | None = None,
) -> CheckResult:
    """Check a history. ``partition`` splits it into independent sub-histories (per key by
    default; None checks it whole). ``max_steps`` bounds the total search steps over all
    partitions (deterministic); ``timeout_s`` bounds wall time. Either exhausted gives
    ``Verdict.UNKNOWN`` unless some partition was already found illegal."""
    # the memo holds millions of small tuples: cyclic GC passes over them only cost time
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _check(ops, step, init, partition, max_steps, timeout_s)
    finally:
        if was_enabled:
            gc.enable()


def _check(
    ops: Iterable[Operation],
    step: Step,
    init: Any,
    partition: Callable[[Operation], Hashable] | None,
    max_steps: int | None,
    timeout_s: float | None,
) -> CheckResult:
    groups: dict[Hashable, list[Operation]] = {}
    for op in ops:
        groups.setdefault(partition(op) if partition else None, []).append(op)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    running: list[tuple[Hashable, list[Operation], Iterator[int], list[Any]]] = []
    for key, group in groups.items():
        box: list[Any] = []
        running.append((key, group, _search(group, step, init, box), box))
    done: list[PartitionResult] = []
    total_steps = 0
    last_seen = {id(box): 0 for _k, _g, _gen, box in running}
    while running:
        still: list[tuple[Hashable, list[Operation], Iterator[int], list[Any]]] = []
        for key, group, gen, box in running:
            try:
                s = next(gen)
                total_steps += s - last_seen[id(box)]
                last_seen[id(box)] = s
                still.append((key, group, gen, box))
                continue
            except StopIteration:
                pass
            verdict, s, partial, stuck = box
            total_steps += s - last_seen[id(box)]
            done.append(PartitionResult(key, verdict, len(group), s, partial, stuck))
            if verdict is Verdict.ILLEGAL:
                return CheckResult(Verdict.ILLEGAL, tuple(done), total_steps)
        running = still
        out_of_steps = max_steps is not None and total_steps >= max_steps
        out_of_time = deadline is not None and time.monotonic() >= deadline
        if running and (out_of_steps or out_of_time):
            for key, group, _gen, box in running:
                done.append(PartitionResult(key, Verdict.UNKNOWN, len(group), last_seen[id(box)]))
            return CheckResult(Verdict.UNKNOWN, tuple(done), total_steps)
    return CheckResult(Verdict.OK, tuple(done), total_steps)


# -- Jepsen etcd register logs ------------------------------------------------------------


def _parse_value(tok: str) -> Any:
    return None if tok == "nil" else int(tok)


def parse_jepsen_log(text: str, key: str = "x") -> list[Operation]:
    """Parse a Jepsen etcd register log (``INFO jepsen.util - <process> <type> <f> <value>``)
    into operations on one key, as porcupine's ``parseJepsenLog`` does: ``:invoke`` is a
    call; ``:ok`` a return with its value; ``:fail :cas`` a definite failure; ``:fail :read``
    (timed out) a return with an unknown output; ``:info`` leaves the operation open to the
    end. Times are line numbers."""
    pending: dict[int, tuple[int, KvInput]] = {}
    ops: list[Operation] = []
    for lineno, line in enumerate(text.splitlines()):
        parts = line.split()
        if len(parts) < 6 or parts[1] != "jepsen.util":
            continue
        proc, typ, f = int(parts[3]), parts[4], parts[5]
        rest = " ".join(parts[6:])
        if typ == ":invoke":
            if f == ":read":
                inp = KvInput("get", key)
            elif f == ":write":
                inp = KvInput("put", key, _parse_value(rest))
            elif f == ":cas":
                old, new = rest.strip("[]").split()
                inp = KvInput("cas", key, _parse_value(new), _parse_value(old))
            else:
                raise ValueError(f"line {lineno + 1}: unknown function {f}")
            pending[proc] = (lineno, inp)
            continue
        call, inp = pending.pop(proc)
        if typ == ":ok":
            out: Any = (
                _parse_value(rest) if inp.op == "get" else (True if inp.op == "cas" else None)
            )
            ops.append(Operation(proc, inp, call, out, lineno))
        elif typ == ":fail":
            # a failed cas is a definite "did not swap"; any other failure did not happen
            # (a timed-out read has no effect), so it is left out
            if inp.op == "cas":
                ops.append(Operation(proc, inp, call, False, lineno))
        elif typ == ":info":
            ops.append(Operation(proc, inp, call, UNKNOWN, None))
        else:
            raise ValueError(f"line {lineno + 1}: unknown type {typ}")
    for proc, (call, inp) in pending.items():
        ops.append(Operation(proc, inp, call, UNKNOWN, None))
    return ops
