"""GPU-time accounting (``scheduler.accounting``) through the daemon's own pass on a real
one-member kvraft: every run that ends writes one record in its release txn (a success, a
failure restarted by policy, a cancellation), never twice; ``jobctl report`` adds them up per
tenant and per job; the leader deletes the months past retention."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest
from test_dependencies import _finish, _jobctl
from test_malformed import daemon, doc, nodes, one_member, put, spec, steps  # noqa: F401  (fixtures)

from scheduler import accounting
from scheduler.service import SchedulerDaemon


async def _records(d: SchedulerDaemon) -> list[dict]:
    return [json.loads(kv.value) for kv in (await d.client.get(accounting.PREFIX, prefix=True)).kvs]


async def test_each_run_that_ends_is_recorded_once_and_reported(
        daemon: SchedulerDaemon, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    d, eps = daemon, list(daemon.config.endpoints)
    await d.client.delete(accounting.PREFIX, prefix=True)
    await nodes(d, "n1", "n2", "n3")
    await put(d, "/registry/jobs/good", spec("good", tenant="nlp"))
    await put(d, "/registry/jobs/flaky", spec("flaky", tenant="nlp", restart_policy="OnFailure", max_restarts=1))
    await put(d, "/registry/jobs/stopped", spec("stopped", tenant="vision", gpus=4, replicas=2, grace_s=0))
    await steps(d, 2)
    assert await _records(d) == []  # nothing has ended
    await _finish(d, "good", "Succeeded")
    await _finish(d, "flaky", "Failed")  # restarted by policy: the first run's GPU time is lost
    await put(d, "/registry/jobs/stopped", dict(spec("stopped", tenant="vision", gpus=4, replicas=2, grace_s=0), cancelled=True))
    await steps(d, 3)
    await _finish(d, "flaky", "Succeeded")
    await steps(d, 3)
    records = await _records(d)
    assert sorted((r["job"], r["kind"], r["outcome"], r["gpus"]) for r in records) == [
        ("flaky", "restarted", "failed", 8), ("flaky", "succeeded", "completed", 8),
        ("good", "succeeded", "completed", 8), ("stopped", "cancelled", "cancelled", 8)]
    month = accounting.month_of(time.time())
    keys = sorted(kv.key.decode() for kv in (await d.client.get(accounting.PREFIX, prefix=True)).kvs)
    assert all(k.startswith(f"/accounting/{month}/") for k in keys)
    assert sum(k.startswith(f"/accounting/{month}/vision/stopped@") for k in keys) == 1
    for r in records:
        assert r["ended_at"] >= r["bound_at"] > 0 and r["gpu_seconds"] == pytest.approx(
            r["gpus"] * (r["ended_at"] - r["bound_at"]))
    await steps(d, 2)
    assert len(await _records(d)) == 4  # (once each)
    metrics = d.metrics_text()
    for tenant, outcome in (("nlp", "completed"), ("nlp", "failed"), ("vision", "cancelled")):
        line = next(x for x in metrics.splitlines()
                    if x.startswith(f'kvraft_scheduler_gpu_seconds_total{{outcome="{outcome}",tenant="{tenant}"}}'))
        assert float(line.split()[-1]) == pytest.approx(sum(
            r["gpu_seconds"] for r in records if r["tenant"] == tenant and r["outcome"] == outcome))

    rc, out, err = await asyncio.to_thread(_jobctl, eps, capsys, "report")
    assert (rc, err) == (0, ""), err
    lines = out.splitlines()
    assert lines[0] == f"GPU-hours of the runs that ended in {month} (UTC)"
    assert lines[1].split() == ["TENANT", "JOBS", "RUNS", "GPU-HOURS", "COMPLETED", "FAILED", "PREEMPTED", "CANCELLED"]
    assert {line.split()[0]: line.split()[1:3] for line in lines[2:]} == {"nlp": ["2", "3"], "vision": ["1", "1"]}
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "report", "--by", "job", "--tenant", "nlp", "-o", "json")
    rows = {r["job"]: r for r in json.loads(out)["items"]}
    assert sorted(rows) == ["flaky", "good"] and rows["flaky"]["runs"] == 2 and rows["flaky"]["months"] == month
    assert rows["flaky"]["failed_gpu_hours"] > 0 and rows["flaky"]["completed_gpu_hours"] > 0
    rc, out, _ = await asyncio.to_thread(_jobctl, eps, capsys, "report", "--month", "2020-01")
    assert (rc, out) == (0, "No runs ended in 2020-01.\n")
    # anyone with write access may put anything there: skipped, said on stderr
    await put(d, accounting.key(month, "nlp", "junk", 1), b"not json")
    await put(d, accounting.key(month, "nlp", "odd", 2), {"job": "odd"})
    rc, out, err = await asyncio.to_thread(_jobctl, eps, capsys, "report")
    assert rc == 0 and {line.split()[0]: line.split()[1:3] for line in out.splitlines()[2:]} == {
        "nlp": ["2", "3"], "vision": ["1", "1"]}
    assert err.splitlines() == [
        f"warning: skipping /accounting/{month}/nlp/junk@1: invalid JSON (Expecting value: line 1 column 1 (char 0))",
        f"warning: skipping /accounting/{month}/nlp/odd@2: not an accounting record (job, tenant, gpu_seconds)"], err


async def test_the_leader_deletes_months_past_retention(daemon: SchedulerDaemon) -> None:  # noqa: F811
    d = daemon
    await d.client.delete(accounting.PREFIX, prefix=True)
    now = time.time()
    kept = accounting.retention_end(now, d.config.accounting_retention_months)
    for month in ("2020-01", "2024-06", kept, accounting.month_of(now)):
        await put(d, accounting.key(month, "t", "j", 1), {"job": "j", "tenant": "t", "gpu_seconds": 1.0})
    await steps(d, 1)
    assert sorted(kv.key.decode().split("/")[2] for kv in (await d.client.get(accounting.PREFIX, prefix=True)).kvs) \
        == sorted({kept, accounting.month_of(now)})
    await put(d, accounting.key("2020-02", "t", "j", 1), {"job": "j", "tenant": "t", "gpu_seconds": 1.0})
    await steps(d, 1)  # at most once an hour
    assert (await d.client.get(accounting.key("2020-02", "t", "j", 1))).kvs


@pytest.mark.parametrize(("argv", "want"), [
    (["--month", "2026-13"], "error: --month: '2026-13' is not a month (YYYY-MM)\n"),
    (["--since", "2026-05", "--until", "2026-04"], "error: --since 2026-05 is after --until 2026-04\n"),
    (["--month", "2026-05", "--since", "2026-04"], "error: --month or --since/--until, not both\n"),
])
def test_report_refuses_bad_months(one_member: list[str], capsys: pytest.CaptureFixture[str],  # noqa: F811
                                   argv: list[str], want: str) -> None:
    assert _jobctl(one_member, capsys, "report", *argv) == (1, "", want)


async def test_a_scheduler_that_may_not_write_accounting_still_releases_runs(
        one_member: list[str], caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """An RBAC deployment upgraded without re-running deploy/rbac.sh: the scheduler's role has
    no /accounting/. Its release txn is refused; the run is released without its record,
    and the log says once what to do."""
    import logging

    from kvraft.client import Client
    from scheduler.service_config import SchedulerConfig

    root = Client(one_member, request_timeout_s=10.0)
    await root.open()
    await root.delete("/registry/", prefix=True)
    await root.delete(accounting.PREFIX, prefix=True)
    await root.user_add("root", "rootpw")
    await root.user_grant_role("root", "root")
    await root.role_add("old-scheduler")  # rbac.sh's kvraft-scheduler role before /accounting/
    await root.role_grant_permission("old-scheduler", "READWRITE", "/registry/", "/registry0")
    await root.user_add("old-scheduler", "pw")
    await root.user_grant_role("old-scheduler", "old-scheduler")
    await root.auth_enable()
    client = Client(one_member, request_timeout_s=10.0, user="old-scheduler", password="pw")
    await client.open()
    caplog.set_level(logging.WARNING, "kvraft.scheduler.binder")
    try:
        d = SchedulerDaemon(SchedulerConfig(name="t", election=False, endpoints=one_member), client)
        await nodes(d, "n1")
        await put(d, "/registry/jobs/j", spec("j"))
        await put(d, "/registry/jobs/k", spec("k"))
        await steps(d, 2)
        for job in ("j", "k"):
            await _finish(d, job, "Succeeded")
            await steps(d, 3)
            assert (await doc(d, f"/registry/jobstatus/{job}"))["phase"] == "Succeeded"
        assert d.binder.accounting_refused == 2
        assert [r.getMessage() for r in caplog.records].count(
            "accounting record refused: this scheduler's kvraft user may not write /accounting/ (re-run "
            "deploy/rbac.sh); runs are released without their records") == 1
    finally:
        await client.close()
        async with Client(one_member, request_timeout_s=10.0, user="root", password="rootpw") as admin:
            await admin.auth_disable()
            await admin.user_delete("root")
        await root.close()
    assert not (await root_records(one_member))


async def root_records(endpoints: list[str]) -> list[bytes]:
    from kvraft.client import Client

    async with Client(endpoints, request_timeout_s=10.0) as c:
        return [kv.key for kv in (await c.get(accounting.PREFIX, prefix=True)).kvs]


def test_a_record_of_gpu_seconds_that_are_not_finite_is_no_record() -> None:
    """Anyone with write access to /accounting/ may put ``"gpu_seconds": NaN`` there: jobctl
    report printed nan for the tenant, and the dashboard's queue card sent NaN, which is not
    JSON, in its whole state: the page drew nothing. (An int too large for a float was an
    OverflowError out of the sums.)"""
    for seconds in (math.nan, math.inf, -math.inf, 10**400):
        assert not accounting.is_record({"job": "j", "tenant": "t", "gpu_seconds": seconds})
    assert accounting.is_record({"job": "j", "tenant": "t", "gpu_seconds": 3.5})
