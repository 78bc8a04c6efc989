"""kvctl, the admin CLI: etcdctl's commands and output formats over ``kvraft.client``."""

from __future__ import annotations

from kvraft.cli.main import main, run

__all__ = ["main", "run"]
