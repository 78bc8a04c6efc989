"""The pure parts of GPU-time accounting (``scheduler.accounting``): one run's record, the
months kept, and the sums a report shows."""

from __future__ import annotations

import calendar

import pytest

from scheduler import accounting


def _t(year: int, month: int, day: int = 15) -> float:
    return float(calendar.timegm((year, month, day, 12, 0, 0)))


def test_a_runs_record_counts_its_gpus_for_its_time() -> None:
    rows = [{"task": "w-0", "node": "n2", "rack": "r", "gpus": [0, 1, 2, 3]},
            {"task": "w-1", "node": "n1", "rack": "r", "gpus": [0, 1, 2, 3]},
            {"task": "launcher-0", "node": "n2", "rack": "r", "gpus": []}]
    r = accounting.record({"tenant": "nlp"}, "bert", 41, rows, 1000.0, "evicted", 1000.0 + 1800)
    assert r == {"job": "bert", "tenant": "nlp", "run": 41, "gpus": 8, "nodes": ["n1", "n2"], "bound_at": 1000.0,
                 "ended_at": 2800.0, "gpu_seconds": 8 * 1800.0, "outcome": "preempted", "kind": "evicted"}
    assert accounting.record({}, "x", 1, rows, 10.0, "succeeded", 5.0)["gpu_seconds"] == 0.0  # (a clock step back)
    assert accounting.record({}, "x", 1, rows, 0.0, "succeeded", 1.0)["tenant"] == "default"
    assert accounting.key(accounting.month_of(_t(2026, 12)), "nlp", "bert", 41) == "/accounting/2026-12/nlp/bert@41"
    assert accounting.month_of(calendar.timegm((2027, 1, 1, 0, 0, 0)) - 1) == "2026-12"  # UTC


@pytest.mark.parametrize(("now", "months", "first"), [
    (_t(2026, 12), 1, "2026-12"), (_t(2026, 12), 13, "2025-12"), (_t(2026, 3), 3, "2026-01"),
    (_t(2026, 2), 3, "2025-12"), (_t(2026, 1), 24, "2024-02"),
])
def test_the_first_month_kept(now: float, months: int, first: str) -> None:
    assert accounting.retention_end(now, months) == first


def test_summarize_by_tenant_and_by_job() -> None:
    def rec(job: str, tenant: str, hours: float, kind: str) -> dict:
        return {"job": job, "tenant": tenant, "gpu_seconds": hours * 3600, "outcome": accounting.OUTCOMES[kind]}

    records = [rec("bert", "nlp", 32, "preempted"), rec("bert", "nlp", 16, "succeeded"), rec("t5", "nlp", 4, "restarted"),
               rec("t5", "nlp", 2, "succeeded"), rec("vit", "vision", 60, "cancelled"), rec("gan", "vision", 1, "deadline")]
    by_tenant = accounting.summarize(records)
    assert [(r["tenant"], r["jobs"], r["runs"], r["gpu_hours"]) for r in by_tenant] == [
        ("vision", 2, 2, 61.0), ("nlp", 2, 4, 54.0)]
    nlp = by_tenant[1]
    assert (nlp["completed_gpu_hours"], nlp["failed_gpu_hours"], nlp["preempted_gpu_hours"],
            nlp["cancelled_gpu_hours"]) == (18.0, 4.0, 32.0, 0.0)
    assert [(r["job"], r["runs"]) for r in accounting.summarize(records, by="job")] == [
        ("vit", 1), ("bert", 2), ("t5", 2), ("gan", 1)]
    assert accounting.summarize([]) == []
