"""``kvraft.bytecode``: the project's modules get their bytecode written once, so the processes
tests, benchmarks and the demo start do not each compile the sources again."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import kvraft
from kvraft.bytecode import compile_packages


def test_every_module_of_the_packages_has_fresh_bytecode_after_it() -> None:
    root = Path(kvraft.__file__).resolve().parent.parent
    gone = Path(importlib.util.cache_from_source(str(root / "kvraft" / "bytecode.py")))
    gone.unlink(missing_ok=True)  # (as on a fresh checkout)
    compile_packages()
    assert gone.exists()
    sources = [p for name in ("kvraft", "scheduler", "agent") for p in (root / name).rglob("*.py")]
    assert len(sources) > 300
    stale = [p for p in sources
             if not Path(cached := importlib.util.cache_from_source(str(p))).exists()
             or Path(cached).stat().st_mtime < p.stat().st_mtime]
    assert not stale, stale[:5]
