"""What the verbs share: the error type, reading files, and fetching jobs with their status.

Anyone may write the keys jobctl reads, so every value is decoded (``scheduler.decode``,
``scheduler.jobs.check_stored_job``) before it is shown: in a listing, one that does not
decode is skipped with ``warning: skipping <key>: <why>`` on stderr; asked for by name, it
is an error naming the key (exit code 1), never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

from kvraft.client import Op
from scheduler import arrays, decode, keys
from scheduler.jobs import check_stored_job, elastic_run_size

__all__ = ["CliError", "NotFound", "array_elements", "job_view", "json_values", "list_prefix", "stored_status", "key_of", "targets", "placement_rows", "read_input", "skip"]


class CliError(Exception):
    """A user error: printed as ``error: <message>`` on stderr, exit code 1."""


class NotFound(CliError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f'Error from server (NotFound): {kind} "{name}" not found')


def read_input(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path) as f:
            return f.read(), path
    except OSError as exc:
        raise CliError(f"error: the path \"{path}\" cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # (it said only "error: 'utf-8' codec can't decode byte 0xff ...")
        raise CliError(f"error: the path \"{path}\" is not UTF-8 text (byte {exc.object[exc.start]:#x} at offset "
                       f"{exc.start})") from None


def skip(key: str, why: str) -> None:
    """Say on stderr that the object under ``key`` is left out of a listing, and why."""
    print(f"warning: skipping {key}: {why}", file=sys.stderr)


def key_of(kv: Any) -> str | None:
    """The key as text; None (with a warning) when it is not UTF-8."""
    try:
        return decode.key_text(kv.key)
    except decode.Malformed as exc:
        skip(repr(kv.key), str(exc))
        return None


def array_elements(client: Any, name: str) -> tuple[set[str], list[str]]:
    """``(job names starting <name>_, those that are elements of job array <name>, by index)``."""
    taken, members = set(), []
    for kv in client.get(keys.job_key(name) + "_", prefix=True).kvs:
        key = key_of(kv)
        if key is None:
            continue
        taken.add(key[len(keys.JOBS):])
        try:
            record = arrays.member(decode.json_value(kv.value))
        except decode.Malformed:
            continue
        if record is not None and record.get("job") == name:
            members.append((record["index"], key[len(keys.JOBS):]))
    return taken, [job for _, job in sorted(members)]


def targets(client: Any, name: str) -> tuple[list[str], bool]:
    """What a verb on ``name`` acts on: ``([name], False)`` for a job, ``(its elements by index,
    True)`` for the name of a job array (as Slurm's ``scancel ARRAYID``); ``NotFound``
    otherwise."""
    keys.check_name(name, "job")
    if client.get(keys.job_key(name)).kvs:
        return [name], False
    members = array_elements(client, name)[1]
    if not members:
        raise NotFound("jobs", name)
    return members, True


def stored_status(value: bytes | None) -> dict[str, Any]:
    """A job status value as ``decode.job_status`` keeps it; {} when there is none or it does
    not decode (the scheduler rewrites such a status: the job counts as Pending)."""
    if value is None:
        return {}
    try:
        return decode.job_status(decode.json_value(value))[0]
    except decode.Malformed:
        return {}


def json_values(kvs: Iterable[Any], note: str = "") -> Iterator[tuple[str, Any]]:
    """``(key, JSON value)`` of each item; one whose key is not UTF-8 or whose value is not
    JSON is skipped with a warning (``note`` added to the reason)."""
    for kv in kvs:
        key = key_of(kv)
        if key is None:
            continue
        try:
            doc = decode.json_value(kv.value)
        except decode.Malformed as exc:
            skip(key, f"{exc}{note}")
            continue
        yield key, doc


def placement_rows(rows: Any) -> list[dict[str, Any]]:
    """The rows of a status ``placement`` that have the shape the scheduler writes."""
    out = []
    for r in rows if isinstance(rows, list) else ():
        if isinstance(r, dict) and all(isinstance(r.get(f), str) for f in ("task", "node", "rack")) \
                and isinstance(r.get("gpus"), list):
            out.append(r)
    return out


def _spec(key: str, name: str, value: bytes) -> dict[str, Any]:
    """The stored job under ``key``; ``decode.Malformed`` naming the problems when it is none."""
    doc = decode.json_value(value)
    problems = check_stored_job(name, doc)
    if problems:
        raise decode.Malformed("; ".join(str(p) for p in problems))
    return doc  # type: ignore[no-any-return]


LIST_PAGE = 1000


def list_prefix(client: Any, prefix: str, revision: int = 0) -> tuple[list[Any], int]:
    """The keys under ``prefix`` at ``revision`` (0: now) and the revision they were read at,
    as a streamed range (``Client.get_all``: the member never builds a listing of every job
    at once; one range from etcd)."""
    resp = client.get_all(prefix, prefix=True, revision=revision, page_size=LIST_PAGE)
    return list(resp.kvs), revision or int(resp.header.revision)


def job_view(client: Any, name: str | None = None, *, strict: bool = True) -> list[dict[str, Any]]:
    """Jobs as users see them: name, tenant, priority, spec, and ``status`` (phase, reason,
    restarts, placement), read at one revision. A job asked for by name that does not decode
    is an error; without a name, or with ``strict`` False (``get jobs -w``), it is skipped
    with a warning."""
    if name is not None:
        keys.check_name(name, "job")
        resp = client.txn().then(Op.get(keys.job_key(name)), Op.get(keys.jobstatus_key(name))).commit()
        jobs = list(getattr(resp.responses[0], "kvs", ()))
        statuses = list(getattr(resp.responses[1], "kvs", ()))
    else:
        jobs, revision = list_prefix(client, keys.JOBS)
        statuses, _ = list_prefix(client, keys.JOBSTATUS, revision)
    st: dict[str, dict[str, Any]] = {}
    for status_key, doc in json_values(statuses, " (the job is shown without its status)"):
        st[status_key[len(keys.JOBSTATUS):]], problems = decode.job_status(doc)
        if problems:
            skip(status_key, "; ".join(problems) + " (those fields are left out)")
    out = []
    for kv in jobs:
        key = key_of(kv)
        if key is None:
            continue
        n = key[len(keys.JOBS):]
        if "/" in n:
            continue  # not a job key (a job name has no '/')
        try:
            spec = _spec(key, n, kv.value)
        except decode.Malformed as exc:
            if name is not None and strict:
                raise CliError(f"error: job {name}: {key} is not a job: {exc}") from None
            skip(key, str(exc))
            continue
        s = st.get(n) or {}
        status = {"phase": s.get("phase", "Pending"), "reason": s.get("reason", "Queued"),
                  "message": s.get("message", "waiting for the scheduler"), "restarts": s.get("restarts", 0),
                  "preemptions": s.get("preemptions", 0), "evictions": s.get("evictions", 0),
                  "resizes": s.get("resizes", 0),
                  "placement": placement_rows(s.get("placement")),
                  "submitted_at": spec.get("submitted_at"), "bound_at": s.get("bound_at"),
                  "finished_at": s.get("finished_at")}
        if s.get("dependencies"):  # outcomes the scheduler recorded (scheduler.dependencies)
            status["dependencies"] = dict(s["dependencies"])
        if placement_rows(s.get("last_placement")):
            status["last_placement"] = placement_rows(s.get("last_placement"))
        gpus = sum(t["replicas"] * t["resources"]["gpus"] for t in spec["tasks"])
        tasks = sum(t["replicas"] for t in spec["tasks"])
        gpus, tasks = elastic_run_size(spec, status["placement"]) or (gpus, tasks)
        out.append({"name": n, "tenant": spec.get("tenant"), "priority": spec.get("priority"),
                    "priority_class": spec.get("priority_class"), "gpus": gpus,
                    "tasks": tasks, "spec": spec, "status": status,
                    "revision": kv.mod_revision})
    return out
