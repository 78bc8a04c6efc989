"""Shell completion scripts for the command-line programs built on this client (kvctl,
jobctl), as ``observe`` is their shared logging: ``script(parser, shell)`` turns a program's
argparse tree into a bash, zsh or tcsh completion script (shtab), and ``complete_files``
marks the flags whose value is a file path. Static: a script completes commands, flags and
paths, and never asks a cluster."""

from __future__ import annotations

import argparse

import shtab

__all__ = ["SHELLS", "complete_files", "script"]

SHELLS = ("bash", "zsh", "tcsh")


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser`` for ``shell``; ``ValueError`` for another shell."""
    if shell not in SHELLS:
        raise ValueError(f"no completion for {shell!r}: {parser.prog} writes {', '.join(SHELLS)} scripts")
    text: str = shtab.complete(parser, shell=shell)
    return text if text.endswith("\n") else text + "\n"


def complete_files(*actions: argparse.Action) -> None:
    """Mark flags whose value is a file path: the scripts complete paths there."""
    for action in actions:
        action.complete = shtab.FILE  # type: ignore[attr-defined]
