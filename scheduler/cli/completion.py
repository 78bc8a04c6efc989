"""``jobctl completion bash|zsh|tcsh|fish``: a shell completion script, as kubectl's.

Generated from jobctl's own parser (kvraft.client.completion), so every verb and flag
of this jobctl is in it; it completes file paths after ``-f`` and the TLS flags, and never
asks the cluster::

    source <(jobctl completion bash)
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from kvraft.client.completion import SHELLS, script

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("completion", help=f"print a shell completion script ({', '.join(SHELLS)})")
    p.add_argument("shell", metavar="SHELL", help=", ".join(SHELLS))
    p.set_defaults(offline=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    from scheduler.cli.main import build_parser  # (the whole tree, this verb included)

    out.write(script(build_parser(), args.shell))
    return 0
