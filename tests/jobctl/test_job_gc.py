"""Finished jobs are garbage-collected after their TTL (``scheduler.job_gc``) and
``jobctl describe`` shows the trainer's progress: the pure parts, the guarded txn on a real
kvraft, and the daemon end to end with a fake agent (jobctl says NotFound afterwards)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from kvraft.client import Client, Compare, EndpointError, SyncClient
from kvraft.server.local import LocalCluster
from scheduler.cli.describe import progress_lines
from scheduler.job_gc import collect, due_at, ttl_of
from scheduler.jobs import normalize_job, validate_job
from tests.scheduler_daemon.harness import Procs, cluster3, jobctl, phase, procs, wait_for  # noqa: F401

NOW = 1_000_000.0


def test_due_at_follows_the_job_then_the_daemon_default() -> None:
    done = {"phase": "Succeeded", "finished_at": NOW}
    assert due_at({}, done, 60) == NOW + 60
    assert due_at({"ttl_seconds_after_finished": 5}, done, 60) == NOW + 5
    assert due_at({"ttl_seconds_after_finished": 0}, done, -1) == NOW  # the job's 0 wins over "never"
    assert due_at({}, done, -1) is None and ttl_of({}, -1) is None
    for phase_ in ("Failed", "Cancelled"):
        assert due_at({}, {"phase": phase_, "finished_at": NOW}, 10) == NOW + 10
    for phase_ in ("Pending", "Running"):
        assert due_at({}, {"phase": phase_, "finished_at": NOW}, 10) is None
    assert due_at({}, {"phase": "Failed", "updated_at": NOW}, 10) == NOW + 10  # no finished_at: last update
    assert due_at({}, {"phase": "Failed"}, 10) is None


def test_the_spec_field_is_validated_and_stored() -> None:
    doc = {"name": "j", "tasks": [{"name": "w", "command": "true"}], "ttl_seconds_after_finished": 30}
    assert validate_job(doc) == []
    assert normalize_job(doc)["ttl_seconds_after_finished"] == 30
    assert normalize_job(dict(doc, ttl_seconds_after_finished=None))["ttl_seconds_after_finished"] is None
    problems = validate_job(dict(doc, ttl_seconds_after_finished=-1))
    assert problems and "ttl_seconds_after_finished" in str(problems[0])


def test_progress_lines() -> None:
    assert progress_lines(None, NOW) == ["<none reported>"]
    epoch = {"epoch": 3, "loss": 0.123456, "train_acc": 0.95, "test_acc": 0.9611, "seconds": 1.25, "ranks": 4,
             "backend": "mpi+hierarchical", "run": "j-1-0", "restarts": 1, "resumed_from": 2, "at": NOW - 5}
    head, detail = progress_lines(epoch, NOW)
    assert head == "epoch 3, loss 0.1235, train acc 0.9500, test acc 0.9611, 1.2 s/epoch (reported 5s ago)"
    assert detail == "4 ranks, mpi+hierarchical, run j-1-0, restarts 1, resumed from epoch 2"
    started = {"epoch": 2, "started": True, "ranks": 4, "backend": "tcp", "at": NOW - 130}
    assert progress_lines(started, NOW)[0] == "world formed at epoch 2, no epoch finished yet (reported 2m ago)"
    done = {"epoch": 12, "done": True, "test_acc": 0.98, "loss": 0.05, "at": NOW}
    assert progress_lines(done, NOW)[0] == "finished: epoch 12, test acc 0.9800, last loss 0.0500 (reported 0s ago)"
    assert progress_lines({"epoch": 1, "loss": "x"}, NOW)[0].startswith("epoch 1, loss ?, ")


def _put(c: SyncClient, key: str, doc: object) -> int:
    return int(c.put(key, json.dumps(doc).encode()).header.revision)


def test_collect_is_one_guarded_txn(cluster3: LocalCluster) -> None:  # noqa: F811
    eps = [m.client_url for m in cluster3.members.values()]
    with SyncClient(eps, request_timeout_s=15.0) as c:
        c.delete("/registry/", prefix=True)
        c.delete("/jobs/", prefix=True)
        job_rev = _put(c, "/registry/jobs/gc1", {"name": "gc1"})
        st_rev = _put(c, "/registry/jobstatus/gc1", {"phase": "Succeeded", "finished_at": NOW})
        _put(c, "/registry/events/gc1/00000000000000000001", {"type": "Completed"})
        _put(c, "/registry/tasks/gc1/worker-0/status", {"phase": "Succeeded"})
        _put(c, "/jobs/gc1/progress", {"epoch": 1})
        _put(c, "/jobs/gc1/uid/checkpoint", {"x": 1})
        _put(c, "/jobs/gc10/progress", {"epoch": 1})  # another job whose name starts the same
        _put(c, "/registry/jobs/gc10", {"name": "gc10"})

        async def attempt(job_mod: int, status_mod: int, fence: list[Compare] | None = None) -> bool:
            async with Client(eps, request_timeout_s=15.0) as ac:
                return await collect(ac, fence or [], "gc1", job_mod, status_mod)

        def keys_of(prefix: str) -> list[str]:
            return sorted(kv.key.decode() for kv in c.get(prefix, prefix=True).kvs)

        everything = keys_of("/registry/") + keys_of("/jobs/")
        assert not asyncio.run(attempt(job_rev - 1, st_rev))  # the job changed since it was read
        assert not asyncio.run(attempt(job_rev, st_rev + 1))  # its status changed
        assert not asyncio.run(attempt(job_rev, st_rev, [Compare.create("/registry/scheduler/leader/x", "=", 7)]))
        _put(c, "/registry/bindings/gc1", {"job": "gc1"})  # a new run was bound
        assert not asyncio.run(attempt(job_rev, st_rev))
        c.delete("/registry/bindings/gc1")
        assert keys_of("/registry/") + keys_of("/jobs/") == everything  # nothing deleted by a failed guard
        assert asyncio.run(attempt(job_rev, st_rev))
        assert keys_of("/registry/") == ["/registry/jobs/gc10"]
        assert keys_of("/jobs/") == ["/jobs/gc10/progress"]


def _job(name: str, command: str, **extra: object) -> str:
    lines = [f"name: {name}", "tasks:", f"  - {{name: worker, replicas: 1, command: {json.dumps(command.split())}, "
             "resources: {gpus: 1, cpu: 1, memory: 1Gi}}"]
    return "\n".join(lines + [f"{k}: {json.dumps(v)}" for k, v in extra.items()]) + "\n"


def test_the_leader_collects_finished_jobs_after_their_ttl(procs: Procs, tmp_path: Path) -> None:  # noqa: F811
    eps = procs.endpoints
    procs.agent("agents", "--nodes", "2", "--gpus-per-node", "4")
    procs.scheduler("sched-gc", "--ttl-seconds-after-finished", "-1")  # the daemon keeps jobs by default here
    with SyncClient(eps, request_timeout_s=15.0) as c:
        c.delete("/jobs/", prefix=True)
        for name, ttl in (("short", {"ttl_seconds_after_finished": 2}), ("keep", {})):
            rc, _, err = jobctl(eps, "submit", "-f", "-", stdin=_job(name, "sleep 1", **ttl))
            assert rc == 0, err
            c.put(f"/jobs/{name}/progress", json.dumps({"epoch": 3, "loss": 0.25, "train_acc": 0.9, "test_acc": 0.875,
                                                       "ranks": 1, "backend": "tcp", "at": 1.0}).encode())
        wait_for(lambda: phase(eps, "keep") == "Succeeded", 120, "keep to succeed")
        rc, out, _ = jobctl(eps, "describe", "job", "keep")
        assert rc == 0 and "Progress:       epoch 3, loss 0.2500, train acc 0.9000, test acc 0.8750" in out, out
        assert "TTL after end:  the scheduler default (finished " in out, out
        # short: Succeeded, then every key of it deleted (jobctl: NotFound)
        wait_for(lambda: jobctl(eps, "get", "job", "short")[0] != 0, 120, "short to be collected")
        for verb in (["get", "job", "short"], ["describe", "job", "short"]):
            rc, out, err = jobctl(eps, *verb)
            assert rc != 0 and 'jobs "short" not found' in err, (verb, out, err)
        assert not c.get("/jobs/short/", prefix=True).kvs
        for prefix in ("/registry/jobs/short", "/registry/jobstatus/short", "/registry/events/short/",
                       "/registry/tasks/short/"):
            assert not c.get(prefix, prefix=prefix.endswith("/")).kvs, prefix
        # keep (no TTL, the daemon's default -1) stays, with its progress and events
        assert phase(eps, "keep") == "Succeeded"
        assert c.get("/jobs/keep/progress").kvs and c.get("/registry/events/keep/", prefix=True).kvs
        # the name is free again
        rc, _, err = jobctl(eps, "submit", "-f", "-", stdin=_job("short", "sleep 1"))
        assert rc == 0, err
        wait_for(lambda: phase(eps, "short") == "Succeeded", 120, "the new short to succeed")


def test_a_failed_task_s_last_log_line_goes_in_the_message() -> None:
    from scheduler.lifecycle import _last_line

    assert _last_line("a\nb: the cause\n\n  \n") == "b: the cause"
    assert _last_line(None) == "" and _last_line("") == ""
    assert _last_line("x" * 500) == "x" * 297 + "..."
    # an unterminated NUL of stdout, flushed at EOF after jobrun's reason on stderr (CI, stop 19)
    assert _last_line("the MPI world failed with exit code 14\n\x00") == "the MPI world failed with exit code 14"
    assert _last_line("why\n\ufffd\ufffd \x1b\n") == "why"
    assert _last_line("a\x00b\tc") == "ab\tc"


class _FailingTxn:
    def __init__(self, owner: _FlakyClient) -> None:
        self.owner = owner

    def if_(self, *compares: object) -> _FailingTxn:
        return self

    def then(self, *ops: object) -> _FailingTxn:
        return self

    async def commit(self) -> object:
        self.owner.attempts += 1
        if self.owner.attempts == 1:
            raise EndpointError("kvraft unreachable")

        class Resp:
            succeeded = True
        return Resp()


class _FlakyClient:
    """The first txn fails as an unreachable cluster does; the next one succeeds."""

    def __init__(self) -> None:
        self.attempts = 0

    def txn(self) -> _FailingTxn:
        return _FailingTxn(self)


def test_a_collection_that_fails_on_the_network_is_retried() -> None:
    from scheduler.service import SchedulerDaemon
    from scheduler.service_config import SchedulerConfig

    client = _FlakyClient()
    daemon = SchedulerDaemon(SchedulerConfig(election=False, ttl_seconds_after_finished=10), client=client)  # type: ignore[arg-type]
    daemon.view.put_local("/registry/jobs/j1", {"name": "j1"}, 5, 5)
    daemon.view.put_local("/registry/jobstatus/j1", {"phase": "Failed", "finished_at": NOW}, 6, 7)
    asyncio.run(daemon._collect("j1", NOW + 5))  # not due yet: a timer, no txn
    assert client.attempts == 0 and daemon._timers["j1"] == NOW + 10
    asyncio.run(daemon._collect("j1", NOW + 10))  # the network fails: retried a second later
    assert client.attempts == 1 and daemon.collected == 0 and daemon._timers["j1"] == NOW + 11
    asyncio.run(daemon._collect("j1", NOW + 11))
    assert client.attempts == 2 and daemon.collected == 1
