"""``jobctl get jobs -w``: after the list, a job's row again each time it changes, as
``kubectl get pods -w`` (``-o json|yaml``: the whole object again). One watch on
``/registry/jobs`` covers the specs (``/registry/jobs/``) and the statuses
(``/registry/jobstatus/``); it starts at the revision read just before the list, so no change
falls between them, and a row is printed only when it differs from the last one printed for
that job (its age aside). A job whose spec does not decode (put with kvctl) is skipped with a
warning, as the list skips it. A deleted job is printed no more; ``--tenant`` and a name (a job or a
job array) filter as the list does. Ctrl-C ends it (exit 0); a watch cut by a compaction ends
with an error."""

from __future__ import annotations

import argparse
import time
from typing import Any, TextIO

from kvraft.client import WatchCompactedError
from scheduler import keys
from scheduler.cli.common import CliError, job_view
from scheduler.cli.printers import job_header, job_row, print_doc

__all__ = ["watch"]

AGE = 5  # the AGE column: it changes by itself, so it does not count as a change


def _wanted(args: argparse.Namespace, j: dict[str, Any]) -> bool:
    if args.tenant and j["tenant"] != args.tenant:
        return False
    return not args.name or j["name"] == args.name or (j["spec"].get("array") or {}).get("job") == args.name


def _changed_jobs(resp: Any) -> list[str]:
    names = set()
    for event in resp.events:
        key = event.kv.key.decode("utf-8", "replace")
        for prefix in (keys.JOBSTATUS, keys.JOBS):
            rest = key[len(prefix):]
            if key.startswith(prefix):
                if rest and "/" not in rest and rest not in (".", ".."):
                    names.add(rest)
                break
    return sorted(names)


def watch(args: argparse.Namespace, client: Any, out: TextIO, start_revision: int, listed: list[dict[str, Any]]) -> int:
    fmt = args.output
    now = time.time()
    widths = [len(h) for h in job_header(fmt)]
    for j in listed:
        widths = [max(w, len(str(c))) for w, c in zip(widths, job_row(j, fmt, now), strict=True)]
    last: dict[str, Any] = {j["name"]: _seen(j, fmt, now) for j in listed}
    out.flush()
    try:
        for resp in client.watch(keys.JOBS.rstrip("/"), prefix=True, start_revision=start_revision + 1):
            for name in _changed_jobs(resp):
                items = job_view(client, name, strict=False)  # one that does not decode: a warning
                if not items or not _wanted(args, items[0]):
                    if not items:
                        last.pop(name, None)
                    continue
                j, now = items[0], time.time()
                seen = _seen(j, fmt, now)
                if last.get(name) == seen:
                    continue
                last[name] = seen
                if fmt in ("json", "yaml"):
                    j.pop("revision", None)
                    print_doc(j, fmt, out)
                else:
                    cells = ["" if c is None else str(c) for c in job_row(j, fmt, now)]
                    widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
                    out.write("   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n")
                out.flush()
    except KeyboardInterrupt:
        return 0
    except WatchCompactedError as exc:
        raise CliError(f"error: the watch was cut by a compaction ({exc}); run jobctl get jobs -w again") from None
    return 0


def _seen(j: dict[str, Any], fmt: str | None, now: float) -> Any:
    """What counts as a change of a job: its row without the age, or its status and spec."""
    if fmt in ("json", "yaml"):
        return (j["status"], j["spec"])
    row = job_row(j, fmt, now)
    return tuple(c for i, c in enumerate(row) if i != AGE)
