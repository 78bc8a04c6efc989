"""``completion bash|zsh|tcsh|fish``: a shell completion script for kvctl (and kvutl), as
etcdctl's, etcdutl's (and kubectl's) ``completion`` command.

The script is generated from kvctl's own parser (shtab, from the argparse tree; fish's by
kvraft.client.completion), so it knows every command, subcommand and flag of this kvctl and
is never out of date with it::

    source <(kvctl completion bash)                     # this shell
    kvctl completion bash > /etc/bash_completion.d/kvctl # every new shell
    kvctl completion zsh > "${fpath[1]}/_kvctl"
    kvctl completion fish > ~/.config/fish/completions/kvctl.fish

It completes command and flag names and file paths for the file flags (``--cacert``,
``--cert``, ``--key``, ``snapshot save/restore/status`` files), not keys: like etcdctl's, it
never asks the cluster. etcdctl 3.4 also writes PowerShell scripts; kvctl refuses those with
a message naming the shells there are.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_ERROR, CommandError
from kvraft.client.completion import SHELLS, script

__all__ = ["register"]


def _kvctl_parser() -> argparse.ArgumentParser:
    from kvraft.cli.main import build_parser  # (the whole tree, this command included)

    return build_parser()[0]


async def run_completion(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_ERROR, f"completion takes one argument, the shell ({', '.join(SHELLS)})")
    try:
        ctx.stdout.write(script(ns.program_parser(), ns.args[0]))
    except ValueError as exc:
        raise CommandError(EXIT_ERROR, str(exc)) from None


def register(sub: Any, parent: argparse.ArgumentParser,
             program: Callable[[], argparse.ArgumentParser] = _kvctl_parser) -> None:
    """The command, completing ``program``'s tree (kvctl's; kvutl passes its own)."""
    p = sub.add_parser("completion", parents=[parent], help="Generates the completion script for a shell "
                                                             f"({', '.join(SHELLS)})")
    p.add_argument("args", nargs="*", metavar="<shell>")
    p.set_defaults(handler=run_completion, program_parser=program)
