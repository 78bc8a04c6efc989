"""End-to-end figures on a local cluster (docs/benchmarks.md, "End to end").

    python -m kvraft.local.bench running [--runs 10] [--runtime process|runc]
    python -m kvraft.local.bench world [--runs 3]
    python -m kvraft.local.bench recovery [--lease-ttl-s 10]
    python -m kvraft.local.bench preempt [--runs 5] [--grace-s 30]
    python -m kvraft.local.bench startup [--runs 20] [--tree DIR]...

* ``running``: submit a 4 x 2-GPU gang of ``sleep`` tasks with jobctl and time until every
  task's status (written by its agent) is ``Running``; then cancel it and wait until its tasks
  are gone before the next run. Prints p50 / p90 / max.
* ``world``: the same for the digits job under ``agent.collective.jobrun``, until rank 0
  reports the MPI world formed (every rank inside ``MPI_Init`` and the first broadcast).
* ``recovery``: the digits job with a pause per epoch; after two epochs SIGKILL one node of its
  placement (``kill-node``) and time until the gang is bound elsewhere, until its tasks run,
  and until the MPI world is formed again from the checkpoint; then until it succeeds.
* ``preempt``: two low-priority gangs (2 x 4 GPUs, one per rack) fill the cluster; their tasks
  exit 0.5 s after SIGTERM (a checkpoint on stop) and have a ``--grace-s`` grace period. A
  priority-100 gang of 4 x 2 GPUs in one rack is then submitted; time until it is bound and
  until its 4 tasks are ``Running``, and print how the victim's run ended (its ``Requeued``
  event: ``all tasks stopped`` or ``grace period over``). Then everything is cancelled.
* ``startup``: no cluster; the start of the Python processes on the way to the world: a
  bare interpreter, ``agent.collective.jobrun`` imported (each task's wrapper), and the same
  with ``kvraft.client`` (what the wrapper loads before it publishes ``ready``), ``--runs``
  times each, interleaved; each ``--tree`` (a copy of the source, e.g. ``git archive``
  of an older commit) is measured the same way in the same rounds, first on ``PYTHONPATH``.

Each mode starts its own cluster in a temporary directory and stops it by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kvraft.client import SyncClient
from kvraft.local.cluster import ROOT, LocalSpec, _env, down, kill_node, up

__all__ = ["main"]


def _jobctl(eps: list[str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler.cli.main", "--endpoints", ",".join(eps), *args],
                          input=stdin, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)


def _doc(client: SyncClient, key: str) -> dict[str, Any]:
    got = client.get(key)
    return json.loads(got.kvs[0].value) if got.kvs else {}


def _phases(client: SyncClient, job: str) -> list[str]:
    return [json.loads(kv.value).get("phase", "") for kv in client.get(f"/registry/tasks/{job}/", prefix=True).kvs]


def _wait(cond: Any, timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic()


def _job(name: str, command: list[str], extra: str = "") -> str:
    return (f"name: {name}\ntasks:\n  - {{name: worker, replicas: 4, command: {json.dumps(command)}, "
            f"resources: {{gpus: 2, cpu: \"100m\"}}}}\ntopology: {{mode: required, level: rack}}\ngrace_s: 2\n{extra}")


def _summary(label: str, xs: list[float]) -> None:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    print(f"{label}: n={len(xs)} p50={statistics.median(xs):.3f} s p90={p90:.3f} s max={xs[-1]:.3f} s "
          f"all={[round(x, 3) for x in xs]}", flush=True)


def bench_running(eps: list[str], client: SyncClient, runs: int, world: bool) -> None:
    bound: list[float] = []
    ready: list[float] = []
    for i in range(runs):
        name = f"bench-{'world' if world else 'run'}-{i}"
        if world:
            cmd = ["python3", "-m", "agent.collective.jobrun", "--", "python3", "examples/train_digits.py",
                   "--epochs", "1000", "--epoch-pause-s", "1"]
        else:
            cmd = ["sleep", "600"]
        t0 = time.monotonic()
        r = _jobctl(eps, "submit", "-f", "-", "-o", "name", stdin=_job(name, cmd))
        if r.returncode != 0:
            raise SystemExit(f"bench: submit failed: {r.stderr}")
        t_bound = _wait(lambda n=name: _doc(client, f"/registry/jobstatus/{n}").get("placement"), 120, "binding")
        if world:
            t_ready = _wait(lambda n=name: _doc(client, f"/jobs/{n}/progress").get("ranks") == 4, 300, "MPI world")
        else:
            t_ready = _wait(lambda n=name: _phases(client, n).count("Running") == 4, 120, "4 tasks Running")
        bound.append(t_bound - t0)
        ready.append(t_ready - t0)
        print(f"run {i}: bound {t_bound - t0:.3f} s, {'world formed' if world else 'all running'} {t_ready - t0:.3f} s",
              flush=True)
        if world:
            _print_stages(eps, name)
        _jobctl(eps, "cancel", name)
        _wait(lambda n=name: _doc(client, f"/registry/jobstatus/{n}").get("phase") == "Cancelled", 120, "Cancelled")
        _wait(lambda n=name: not client.get(f"/registry/bindings/{n}").kvs, 120, "released")
    _summary("submit -> bound", bound)
    _summary("submit -> " + ("MPI world formed" if world else "all 4 tasks Running"), ready)


def bench_preempt(eps: list[str], client: SyncClient, runs: int, grace_s: float) -> None:
    stop = ["sh", "-c", "trap 'sleep 0.5; exit 0' TERM; while true; do sleep 0.1; done"]
    bound: list[float] = []
    ready: list[float] = []
    for i in range(runs):
        victims = [f"bench-low-{i}-{r}" for r in range(2)]
        for v in victims:
            doc = (f"name: {v}\ntasks:\n  - {{name: worker, replicas: 2, command: {json.dumps(stop)}, "
                   f"resources: {{gpus: 4, cpu: \"100m\"}}}}\ntopology: {{mode: required, level: rack}}\n"
                   f"priority: 0\ngrace_s: {grace_s:g}\n")
            if (r := _jobctl(eps, "submit", "-f", "-", "-o", "name", stdin=doc)).returncode != 0:
                raise SystemExit(f"bench: submit failed: {r.stderr}")
        for v in victims:
            _wait(lambda v=v: _phases(client, v).count("Running") == 2, 120, f"{v} Running")
        name = f"bench-high-{i}"
        t0 = time.monotonic()
        r = _jobctl(eps, "submit", "-f", "-", "-o", "name", stdin=_job(name, ["sleep", "600"], "priority: 100\n"))
        if r.returncode != 0:
            raise SystemExit(f"bench: submit failed: {r.stderr}")
        t_bound = _wait(lambda n=name: _doc(client, f"/registry/jobstatus/{n}").get("placement"), 300, "binding")
        t_ready = _wait(lambda n=name: _phases(client, n).count("Running") == 4, 300, "4 tasks Running")
        bound.append(t_bound - t0)
        ready.append(t_ready - t0)
        ends = [json.loads(kv.value)["message"] for v in victims
                for kv in client.get(f"/registry/events/{v}/", prefix=True).kvs if json.loads(kv.value)["type"] == "Requeued"]
        print(f"run {i}: bound {t_bound - t0:.3f} s, all running {t_ready - t0:.3f} s; the victim: {ends}", flush=True)
        for job in (name, *victims):
            _jobctl(eps, "cancel", job)
        for job in (name, *victims):
            _wait(lambda j=job: not client.get(f"/registry/bindings/{j}").kvs, 120, "released")
        time.sleep(2.0)  # the cancelled tasks exit (SIGTERM; the next run's would wait for their GPUs)
    _summary(f"preemptor submit -> bound (grace {grace_s:g} s)", bound)
    _summary(f"preemptor submit -> all 4 tasks Running (grace {grace_s:g} s)", ready)


def _print_stages(eps: list[str], name: str, tasks: int = 4) -> None:
    """The stages of forming the world, as jobrun and rank 0 log them (docs/e2e.md)."""
    for t in range(tasks):
        r = _jobctl(eps, "logs", name, "--task", f"worker-{t}")
        for line in r.stdout.splitlines():
            if "jobrun[" in line or "world formed:" in line:
                print(f"  worker-{t}: {line.strip()[:300]}", flush=True)


def bench_recovery(eps: list[str], client: SyncClient, directory: Path, lease_ttl_s: int) -> None:
    name = "bench-recovery"
    cmd = ["python3", "-m", "agent.collective.jobrun", "--", "python3", "examples/train_digits.py",
           "--epochs", "8", "--epoch-pause-s", "1"]
    r = _jobctl(eps, "submit", "-f", "-", "-o", "name",
                stdin=_job(name, cmd, "restart_policy: OnFailure\nmax_restarts: 3\n"))
    if r.returncode != 0:
        raise SystemExit(f"bench: submit failed: {r.stderr}")
    _wait(lambda: (_doc(client, f"/jobs/{name}/progress").get("epoch") or 0) >= 2, 300, "two epochs")
    victim = _doc(client, f"/registry/jobstatus/{name}")["placement"][-1]["node"]
    t_kill = time.monotonic()
    pids = kill_node(directory, victim)
    print(f"killed {victim}: {len(pids)} processes (SIGKILL), lease TTL {lease_ttl_s} s", flush=True)
    t_rebound = _wait(lambda: (s := _doc(client, f"/registry/jobstatus/{name}")).get("restarts", 0) >= 1
                      and bool(s.get("placement")) and victim not in {p["node"] for p in s["placement"]},
                      300, "rebound elsewhere")
    t_running = _wait(lambda: _phases(client, name).count("Running") == 4, 300, "4 tasks Running again")
    t_world = _wait(lambda: (p := _doc(client, f"/jobs/{name}/progress")).get("restarts", 0) >= 1
                    and p.get("ranks") == 4, 300, "the world formed again")
    _print_stages(eps, name)
    t_done = _wait(lambda: _doc(client, f"/registry/jobstatus/{name}").get("phase") in ("Succeeded", "Failed"),
                   600, "the job to finish")
    final = _doc(client, f"/registry/jobstatus/{name}")
    progress = _doc(client, f"/jobs/{name}/progress")
    print(f"kill -> rebound elsewhere {t_rebound - t_kill:.3f} s; -> 4 tasks Running {t_running - t_kill:.3f} s; "
          f"-> MPI world formed from the checkpoint {t_world - t_kill:.3f} s; -> {final.get('phase')} "
          f"{t_done - t_kill:.3f} s (restarts {final.get('restarts')}, resumed from epoch "
          f"{progress.get('resumed_from')}, test accuracy {progress.get('test_acc')})", flush=True)
    for kv in client.get(f"/registry/events/{name}/", prefix=True).kvs:
        ev = json.loads(kv.value)
        print(f"  event +{float(ev.get('at', 0)) - (time.time() - (time.monotonic() - t_kill)):7.3f} s "
              f"{ev.get('type')}: {ev.get('message')}", flush=True)


STARTUP = {
    "python -c pass": "pass",
    "import agent.collective.jobrun": "import agent.collective.jobrun",
    "+ import kvraft.client": "import agent.collective.jobrun, kvraft.client",
}


def bench_startup(runs: int, trees: list[str]) -> None:
    """Wall and CPU seconds of each start-up, per source tree (``""``: this one)."""
    variants = [(tree, label, code) for tree in ["", *trees] for label, code in STARTUP.items()]
    wall: dict[tuple[str, str], list[float]] = {(t, lb): [] for t, lb, _ in variants}
    cpu: dict[tuple[str, str], list[float]] = {(t, lb): [] for t, lb, _ in variants}
    for _ in range(runs):
        for tree, label, code in variants:
            env = _env()
            if tree:
                env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
            before = os.times()
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, cwd=tempfile.gettempdir(), check=True)
            wall[(tree, label)].append(time.perf_counter() - t0)
            after = os.times()
            cpu[(tree, label)].append(after.children_user + after.children_system
                                      - before.children_user - before.children_system)
    for tree, label, _ in variants:
        w, c = wall[(tree, label)], cpu[(tree, label)]
        print(f"{tree or 'this tree'}: {label}: wall p50 {statistics.median(w):.3f} s min {min(w):.3f} s; "
              f"CPU p50 {statistics.median(c):.3f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kvraft.local.bench")
    ap.add_argument("mode", choices=["running", "world", "recovery", "preempt", "startup"])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--runtime", default="process")
    ap.add_argument("--lease-ttl-s", type=int, default=10)
    ap.add_argument("--grace-s", type=float, default=30.0, help="preempt: the victims' grace period")
    ap.add_argument("--keep-logs", action="store_true", help="keep the cluster's directory (task logs) afterwards")
    ap.add_argument("--tree", action="append", default=[], help="startup: another source tree to compare")
    ns = ap.parse_args(argv)
    if ns.mode == "startup":
        bench_startup(ns.runs, ns.tree)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the cluster on timeout(1) too
    directory = Path(tempfile.mkdtemp(prefix="kvraft-e2e-bench-"))
    spec = LocalSpec(runtime=ns.runtime, lease_ttl_s=ns.lease_ttl_s, heartbeat_s=max(1.0, ns.lease_ttl_s / 5),
                     node_prefix=f"bench{os.getpid()}")
    t0 = time.monotonic()
    doc = up(directory, spec, say=lambda m: None)
    print(f"cluster up in {time.monotonic() - t0:.1f} s ({directory}, runtime {ns.runtime})", flush=True)
    try:
        with SyncClient(doc["endpoints"], request_timeout_s=15.0) as client:
            if ns.mode == "recovery":
                bench_recovery(doc["endpoints"], client, directory, ns.lease_ttl_s)
            elif ns.mode == "preempt":
                bench_preempt(doc["endpoints"], client, ns.runs, ns.grace_s)
            else:
                bench_running(doc["endpoints"], client, ns.runs, ns.mode == "world")
    finally:
        down(directory)
        if ns.keep_logs:
            print(f"logs kept in {directory}", flush=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
