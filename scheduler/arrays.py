"""PURE: job arrays, Slurm's ``sbatch --array=0-15%4`` (Kubernetes' Indexed Job).

A job with ``array: "0-15%4"`` is a template: ``jobctl submit`` stores one job per index,
named ``<name>_<index>`` (Slurm shows ``1234_7``), each with the same spec and ::

    array: {job: sweep, index: 7, count: 16, parallelism: 4}

in its stored form (``parallelism`` None: no limit), submitted a microsecond apart in index
order (so a queue that breaks ties by submission time takes them by index, with or without
a limit). The scheduler runs at most
``parallelism`` elements of an array at once, lowest index first: ``eligible`` names the
pending elements the core may see; the others stay Pending with Slurm's reason
``JobArrayTaskLimit`` and hold nothing (the core never hears of them, as of a job waiting for
its dependencies). Each task of element i gets ``KVRAFT_ARRAY_JOB``, ``KVRAFT_ARRAY_INDEX``
(i) and ``KVRAFT_ARRAY_COUNT``; a ``checkpoint_dir`` becomes ``<checkpoint_dir>/<i>``, so the
elements never share checkpoints.

The index syntax is Slurm's: a comma-separated list of ``N``, ``N-M`` and ``N-M:STEP``, then
an optional ``%P``: ``"0-15%4"``, ``"1,3,5-9"``, ``"0-99:10"``. Indices are 0..MAX_INDEX, at
most MAX_ELEMENTS of them, each once.

Example: ``sweep`` with ``"0-3%2"``: sweep_0 and sweep_1 run; sweep_2 and sweep_3 wait
(JobArrayTaskLimit, "at most 2 of sweep's 4 elements run at a time, lower indices first"); sweep_1 ends -> sweep_2 is eligible, sweep_3 still waits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_ELEMENTS", "MAX_INDEX", "THROTTLED", "ArraySpec", "element_name", "eligible", "env", "expand",
           "folded_name", "member", "parse", "phase", "record_ok", "throttle_message"]

MAX_INDEX = 9999
SUBMIT_STEP_S = 1e-6
MAX_ELEMENTS = 1000  # Slurm's MaxArraySize default is 1001 (indices 0..1000)
THROTTLED = "JobArrayTaskLimit"  # the pending reason of an element kept back by its array's limit (Slurm's)
_PART = re.compile(r"([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?\Z")  # ASCII digits: \d takes "٣"


@dataclass(frozen=True, slots=True)
class ArraySpec:
    indices: tuple[int, ...]  # sorted
    parallelism: int | None


def parse(text: str) -> ArraySpec:
    """``"0-15%4"`` -> ``ArraySpec((0, ..., 15), 4)``; ``ValueError`` saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError('must be a list of indices such as "0-15", "1,3,5-9" or "0-99:10", with an optional %LIMIT')
    body, _, limit = text.strip().partition("%")
    parallelism = None
    if _:
        if re.fullmatch("[0-9]+", limit) is None or int(limit) < 1:  # ("²".isdigit(), and int() refuses it)
            raise ValueError(f"%{limit}: the limit of elements running at once must be a whole number >= 1")
        parallelism = int(limit)
    seen: set[int] = set()
    for part in body.split(","):
        m = _PART.match(part.strip())
        if m is None:
            raise ValueError(f"{part.strip()!r}: expected N, N-M or N-M:STEP")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        step = int(m.group(3)) if m.group(3) is not None else 1
        if hi < lo:
            raise ValueError(f"{part.strip()!r}: the range ends before it starts")
        if step < 1:
            raise ValueError(f"{part.strip()!r}: the step must be >= 1")
        if hi > MAX_INDEX:
            raise ValueError(f"{part.strip()!r}: indices go up to {MAX_INDEX}")
        for i in range(lo, hi + 1, step):
            if i in seen:
                raise ValueError(f"index {i} appears twice")
            seen.add(i)
            if len(seen) > MAX_ELEMENTS:
                raise ValueError(f"more than {MAX_ELEMENTS} elements")
    return ArraySpec(tuple(sorted(seen)), parallelism)


def element_name(job: str, index: int) -> str:
    return f"{job}_{index}"


def folded_name(job: str, indices: Iterable[int], parallelism: int | None) -> str:
    """Slurm's name for several elements of one array (squeue's pending line):
    ``sweep_[5-7,9,12-15%4]``, runs of consecutive indices as ranges."""
    ranges: list[list[int]] = []
    for i in sorted(set(indices)):
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    body = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)
    return f"{job}_[{body}{'' if parallelism is None else f'%{parallelism}'}]"


def expand(template: Mapping[str, Any], text: str) -> list[dict[str, Any]]:
    """The stored elements of the stored job ``template`` (``jobs.normalize_job``'s form) whose
    user spec said ``array: text`` (valid: ``parse`` accepted it), in index order."""
    spec = parse(text)
    out = []
    for index in spec.indices:
        doc = dict(template)
        doc["name"] = element_name(template["name"], index)
        doc["array"] = {"job": template["name"], "index": index, "count": len(spec.indices),
                        "parallelism": spec.parallelism}
        # submitted in index order, a microsecond apart: queues that break ties by submission
        # time then run them by index, not by name (sweep_10 sorts before sweep_2)
        doc["submitted_at"] = float(template.get("submitted_at") or 0.0) + SUBMIT_STEP_S * index
        if template.get("checkpoint_dir"):
            doc["checkpoint_dir"] = f"{template['checkpoint_dir'].rstrip('/')}/{index}"
        out.append(doc)
    return out


def record_ok(record: Any, name: str) -> bool:
    """Whether a stored job's ``array`` record has its form and matches the job's name."""
    if not isinstance(record, Mapping) or set(record) != {"job", "index", "count", "parallelism"}:
        return False
    job, index, count, limit = record["job"], record["index"], record["count"], record["parallelism"]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (index, count))
    return (ints and isinstance(job, str) and 0 <= index <= MAX_INDEX and 1 <= count <= MAX_ELEMENTS
            and (limit is None or (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1))
            and name == element_name(job, index))


def member(spec: Any) -> Mapping[str, Any] | None:
    """The ``array`` record of a stored element (``{job, index, count, parallelism}``), or None
    (another job, or a value that is no job at all)."""
    got = spec.get("array") if isinstance(spec, Mapping) else None
    return got if isinstance(got, Mapping) else None


def env(spec: Mapping[str, Any]) -> dict[str, str]:
    """What every task of an element gets in its environment (nothing for other jobs)."""
    a = member(spec)
    if a is None:
        return {}
    return {"KVRAFT_ARRAY_JOB": str(a["job"]), "KVRAFT_ARRAY_INDEX": str(a["index"]),
            "KVRAFT_ARRAY_COUNT": str(a["count"])}


def eligible(members: Iterable[tuple[int, str, str]], parallelism: int | None) -> set[str]:
    """The elements the core may see. ``members``: ``(index, name, state)`` of every stored
    element of one array, ``state`` one of ``running`` (bound: it counts against the limit),
    ``pending`` (waiting for the scheduler), ``held`` (suspended) or ``done`` (finished or
    cancelled): the last two neither count nor get a turn. The pending
    ones with the lowest indices, as many as the limit leaves room for."""
    rows = sorted(members)
    if parallelism is None:
        return {name for _, name, state in rows if state == "pending"}
    room = parallelism - sum(1 for _, _, state in rows if state == "running")
    out: set[str] = set()
    for _, name, state in rows:
        if room <= 0:
            break
        if state == "pending":
            out.add(name)
            room -= 1
    return out


def phase(phases: Iterable[str], running: bool) -> str:
    """The phase of a whole array from its elements': Succeeded when all did; once all ended,
    Failed if one failed, else Cancelled; before, Running (``running``: one is bound) or
    Pending."""
    seen = set(phases)
    if seen - {"Succeeded", "Failed", "Cancelled"}:
        return "Running" if running else "Pending"
    return next((p for p in ("Failed", "Cancelled") if p in seen), "Succeeded")


def throttle_message(record: Mapping[str, Any]) -> str:
    """The pending reason of an element kept back by its array's limit. It does not say how
    many run now: it would change for every held element, a status write each, whenever one
    starts or ends."""
    return (f"at most {record['parallelism']} of {record['job']}'s {record['count']} elements run at a time, "
            f"lower indices first")
