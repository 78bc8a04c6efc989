"""The CI corpus: a fixed list of seeds run by every ``make test`` (tests/sim/test_corpus_*.py).

Seeds 0-299 at the default plan length. The corpus is split over two files so that
``pytest -n 2 --dist loadfile`` runs the halves in parallel; each half is split into chunks so
that a failure names its seeds and the rest still run.
"""

from __future__ import annotations

from kvraft.sim.runner import run_seed

CORPUS = range(0, 300)
CHUNK = 25


def chunks(lo: int, hi: int) -> list[range]:
    return [range(s, min(s + CHUNK, hi)) for s in range(lo, hi, CHUNK)]


def run_chunk(seeds: range) -> None:
    failures = []
    for seed in seeds:
        res = run_seed(seed)
        if not res.ok:
            failures.append(f"{res.line()}  (replay: python -m kvraft.sim --seed {seed} --trace)")
    assert not failures, "\n".join(failures)
