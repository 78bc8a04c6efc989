"""CI corpus, first half (see tests/sim/corpus.py)."""

from __future__ import annotations

import pytest

from .corpus import CORPUS, chunks, run_chunk

HALF = CORPUS.start + len(CORPUS) // 2


@pytest.mark.parametrize(
    "seeds", chunks(CORPUS.start, HALF), ids=lambda r: f"{r.start}-{r.stop - 1}"
)
def test_corpus(seeds: range) -> None:
    run_chunk(seeds)
