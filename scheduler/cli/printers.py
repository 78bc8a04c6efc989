"""Output of jobctl: kubectl-style plain tables (``-o wide`` adds columns), ``-o json`` and
``-o yaml``. Commands build rows or documents; only this module formats them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

__all__ = ["age", "job_header", "job_row", "print_doc", "print_docs", "render_table"]


def render_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """kubectl's plain table: upper-case header, left-aligned columns, three spaces apart."""
    cells = [[str(h).upper() for h in header]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in cells)


def print_doc(doc: Any, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        out.write(yaml.safe_dump(doc, sort_keys=True, default_flow_style=False))


def print_docs(docs: list[Any], fmt: str, out: TextIO, *, named: bool) -> None:
    """The object itself when one was asked for by name (``get job NAME``), else a ``List``,
    even of one item or none (as kubectl: ``get pods -o json`` is always a List)."""
    print_doc(docs[0] if named and len(docs) == 1 else {"kind": "List", "items": docs}, fmt, out)


def age(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "<none>"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def job_header(fmt: str | None) -> list[str]:
    header = ["name", "tenant", "phase", "gpus", "restarts", "age", "reason"]
    return header + ["depends", "priority", "nodes", "message"] if fmt == "wide" else header


def job_row(j: dict[str, Any], fmt: str | None, now: float) -> list[Any]:
    """A job's cells under ``job_header(fmt)``."""
    s = j["status"]
    row = [j["name"], j["tenant"], s["phase"], j["gpus"], s["restarts"], age(now - (s["submitted_at"] or now)),
           s["reason"]]
    if fmt == "wide":
        depends = ",".join(d["job"] for d in j["spec"].get("depends_on") or []) or "<none>"
        row += [depends, j["priority"], ",".join(dict.fromkeys(p["node"] for p in s["placement"])) or "<none>",
                s["message"]]
    return row
