"""The checker agrees with porcupine on all 102 labelled Jepsen etcd histories."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from kvraft.testing.linearizability import Verdict, check_operations, parse_jepsen_log

DATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "jepsen-etcd"


def _expected() -> dict[str, bool]:
    with open(DATA / "expected.csv", newline="") as f:
        return {row["file"]: row["linearizable"] == "true" for row in csv.DictReader(f)}


@pytest.mark.skipif(
    not (DATA / "expected.csv").exists(), reason="jepsen-etcd test data not present"
)
def test_all_jepsen_histories_agree_with_porcupine() -> None:
    expected = _expected()
    assert len(expected) == 102
    assert sum(expected.values()) == 23
    disagreements = []
    started = time.perf_counter()
    for name, linearizable in sorted(expected.items()):
        ops = parse_jepsen_log((DATA / name).read_text())
        result = check_operations(ops, max_steps=None)
        assert result.verdict is not Verdict.UNKNOWN
        if result.ok != linearizable:
            disagreements.append((name, result.verdict, linearizable))
        if not result.ok:
            # an illegal verdict comes with an explanation naming the key and a prefix
            assert "illegal: key 'x'" in result.explain()
    elapsed = time.perf_counter() - started
    assert disagreements == []
    print(f"102 histories checked in {elapsed:.2f} s")


@pytest.mark.skipif(
    not (DATA / "expected.csv").exists(), reason="jepsen-etcd test data not present"
)
def test_parser_reads_every_line() -> None:
    text = (DATA / "etcd_000.log").read_text()
    ops = parse_jepsen_log(text)
    invokes = text.count(":invoke")
    failed_reads = sum(1 for line in text.splitlines() if ":fail" in line and ":read" in line)
    assert len(ops) == invokes - failed_reads
    assert not (DATA / "etcd_095.log").read_text().strip()
    assert parse_jepsen_log("") == []
