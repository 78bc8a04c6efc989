"""``version``: kvctl's version and the API version it speaks."""

from __future__ import annotations

import argparse
from typing import Any

from kvraft import __version__
from kvraft.cli.context import Context

__all__ = ["register"]


async def run_version(ctx: Context, _ns: argparse.Namespace) -> None:
    ctx.stdout.write(f"kvctl version: {__version__}\nAPI version: 3.4\n")


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("version", parents=[parent], help="Prints the version of kvctl")
    p.set_defaults(handler=run_version)
