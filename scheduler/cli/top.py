"""``jobctl top nodes``: GPU, CPU and memory allocated per node (from the alloc keys)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from scheduler.cli.get import nodes_view
from scheduler.cli.printers import render_table

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("top", help="resource usage of nodes")
    p.add_argument("noun", choices=["nodes", "node"])
    p.set_defaults(run=run)


def _pct(used: int, total: int) -> str:
    return f"{100 * used // total}%" if total else "-"


def run(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    rows = [[n["name"], f"{n['gpus_used']}/{n['gpus']}", _pct(n["gpus_used"], n["gpus"]),
             f"{n['cpu_milli_used']}m", _pct(n["cpu_milli_used"], n["cpu_milli"]),
             f"{n['memory_mib_used']}Mi", _pct(n["memory_mib_used"], n["memory_mib"]), n["status"]]
            for n in nodes_view(client)]
    out.write(render_table(["name", "gpus", "gpu%", "cpu", "cpu%", "memory", "memory%", "status"], rows)
              if rows else "No nodes found.\n")
    return 0
