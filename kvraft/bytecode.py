"""Bytecode for the processes kvraft starts, written once, as an install writes it.

``pip install`` compiles a package's modules; an editable install (a checkout, CI) leaves it to
each process's first import, and with ``PYTHONDONTWRITEBYTECODE`` set (this project's
development and CI machines have it) no process ever writes it: every member, scheduler and
agent a test, a benchmark or the demo started compiled kvraft's sources again, about 0.25 s
of CPU per start (``import kvraft.server.main``: 0.70 s from source, 0.45 s from bytecode).
``compile_packages`` writes the missing or stale ``__pycache__`` files of the project's
packages; a later import reads them whatever the variable says (it stops writing, not
reading). A package that cannot be written (installed read-only) is left as it is.
"""

from __future__ import annotations

import compileall
import contextlib
from pathlib import Path

__all__ = ["PACKAGES", "compile_packages"]

PACKAGES = ("kvraft", "scheduler", "agent")


def compile_packages() -> None:
    root = Path(__file__).resolve().parent.parent
    for name in PACKAGES:
        package = root / name
        if package.is_dir():
            with contextlib.suppress(OSError):
                compileall.compile_dir(package, quiet=2)
