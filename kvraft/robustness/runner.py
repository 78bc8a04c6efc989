"""One scenario, start to finish: cluster up, traffic, faults, heal, converge, check.

``run_scenario`` returns a ``RunResult`` whose ``line()`` is the one line per scenario the
CLI prints. A failing run keeps its directory: member data and logs, ``history.jsonl`` (the
whole recorded history) and ``problems.txt``; ``check_saved(dir)`` checks a kept history
again (after a checker fix, or to read it at leisure).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kvraft.robustness.checks import check_all
from kvraft.robustness.cluster import FAKETIME_LIB, RobustCluster
from kvraft.robustness.netfault import NetFaults, available
from kvraft.robustness.scenarios import Nemesis, Scenario
from kvraft.robustness.workload import History, Workload
from kvraft.server.local import post

__all__ = ["RunResult", "check_saved", "run_scenario"]


@dataclass
class RunResult:
    scenario: str
    seed: int
    members: int
    ops: int = 0
    unknown: int = 0
    watch_events: int = 0
    lease_cycles: int = 0
    compacted: int = 0  # watches answered compacted
    leases_expired: int = 0  # expiring leases granted (never kept alive)
    txns: int = 0  # transactions committed (ok)
    once: int = 0  # numbered writes answered
    once_retried: int = 0  # of them, answered after more than one attempt
    compaction_hashes: int = 0  # compactions whose hashes every member's agreed on (the compact hash check)
    faults: list[str] = field(default_factory=list)
    converged: str = ""
    problems: list[str] = field(default_factory=list)
    skipped: str = ""
    seconds: float = 0.0
    kept: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        if self.skipped:
            return f"scenario={self.scenario} seed={self.seed} verdict=SKIP ({self.skipped})"
        verdict = "PASS" if self.ok else f"FAIL ({len(self.problems)} problems: {self.problems[0][:160]})"
        faults = "; ".join(f.split("s ", 1)[-1] for f in self.faults)
        kept = f" kept={self.kept}" if self.kept else ""
        return (
            f"scenario={self.scenario} members={self.members} seed={self.seed} ops={self.ops} unknown={self.unknown} "
            f"watch_events={self.watch_events}{f' compacted={self.compacted}' if self.compacted else ''} "
            f"lease_cycles={self.lease_cycles} leases_expired={self.leases_expired} txns={self.txns} "
            f"once={self.once} once_retried={self.once_retried} compaction_hashes={self.compaction_hashes} "
            f"faults=[{faults}] "
            f"converged=[{self.converged}] {self.seconds:.0f}s verdict={verdict}{kept}"
        )


def _summarize(result: RunResult, history: History) -> None:
    result.ops = len(history.ops)
    result.unknown = sum(1 for op in history.ops if op.get("ret") is None)
    result.watch_events = sum(len(v) for v in history.watches.values())
    result.lease_cycles = history.lease_cycles
    result.leases_expired = sum(1 for r in history.leases if r["role"] == "expiring")
    result.compacted = sum(len(v) for v in history.watch_compacted.values())
    result.txns = sum(1 for t in history.txns if t["status"] == "ok")
    result.once = sum(1 for r in history.once if r["status"] == "ok")
    result.once_retried = sum(1 for r in history.once if r["status"] == "ok" and r["attempts"] > 1)
    result.faults = list(history.faults)


async def _run(
    scenario: Scenario, seed: int, base: Path, pace: float, clients: int, stale_reads: bool, member_args: list[str],
    once_numbered: bool = True,
) -> tuple[RunResult, History]:
    result = RunResult(scenario.name, seed, scenario.members)
    env = {"KVRAFT_FAILPOINTS": ""} if scenario.failpoints else {}
    cluster = RobustCluster(scenario.members, str(base), extra_args=[*CORRUPTION_CHECKS, *scenario.extra_args, *member_args],
                            env=env)
    if scenario.clock_skew:
        cluster.skew_clock("m0")
    net: NetFaults | None = None
    workload: Workload | None = None
    history = History()
    try:
        await asyncio.to_thread(cluster.start, 90.0)
        if scenario.needs_net:
            net = NetFaults({name: (cluster.gids[name], cluster.peer_port(name)) for name in cluster.members})
        urls = [m.client_url for m in cluster.members.values()]
        workload = Workload(urls, seed=seed, clients=clients, stale_reads=stale_reads, lagging_watchers=scenario.lagging_watchers,
                            once_numbered=once_numbered)
        history = workload.history
        await workload.start()
        await asyncio.sleep(2 * pace)
        nemesis = Nemesis(cluster, net, history, pace, seed)
        try:
            await scenario.nemesis(nemesis)
        finally:
            result.problems += nemesis.problems
            # heal everything the nemesis may have left broken
            if net is not None:
                net.heal()
            cluster.resume_all()
            for name in cluster.members:
                if name not in nemesis.removed and not cluster.members[name].alive():
                    await asyncio.to_thread(cluster.restart, name)
        await asyncio.sleep(2 * pace)
        await workload.stop()
        live = [n for n in cluster.members if n not in nemesis.removed]
        await asyncio.to_thread(cluster.wait_ready, 90.0)
        try:
            result.converged = await asyncio.to_thread(cluster.wait_converged, live, 90.0)
        except AssertionError as exc:
            result.problems.append(str(exc))
        result.problems += await asyncio.to_thread(_corrupt_alarms, cluster, live, result)
        workload.urls = [cluster.members[n].client_url for n in live]
        await workload.final_reads()
        await workload.final_lease_reads()
        await workload.final_txn_reads()
        await workload.final_once_reads()
    except (TimeoutError, AssertionError, RuntimeError, OSError) as exc:
        # the cluster did not come back (no leader, no convergence, a member that would not
        # start): a liveness failure of the run, kept and reported like any other
        result.problems.append(f"liveness: {type(exc).__name__}: {exc}")
    finally:
        if workload is not None:
            await workload.stop()
            await workload.close()
        if net is not None:
            net.close()
        await asyncio.to_thread(cluster.stop)
    return result, history


CORRUPTION_CHECKS = ("--feature-gates", "InitialCorruptCheck=true,CompactHashCheck=true", "--corrupt-check-time", "1s",
                     "--compact-hash-check-time", "1s")
"""Every run's members check each other (kvraft.server.corruption): a member restarted with a
store that differs from its peers' refuses to start, the leader compares every member's hash
each second, and the hashes the members recorded at each compaction of the workload, so a
divergence shows while the faults go on, not only at the end."""


def _corrupt_alarms(cluster: RobustCluster, live: list[str], result: RunResult) -> list[str]:
    """A CORRUPT alarm raised during the run: a divergence, or a false alarm (a bug either way).
    Counts in ``result`` the compactions whose hashes the compact hash check found equal."""
    code, doc = post(cluster.url(live[0]), "/v3/maintenance/alarm", {"action": "GET"}, timeout_s=10.0)
    if code != 200:
        return [f"alarm list: HTTP {code} {doc}"]
    problems = [f"CORRUPT alarm raised for member {int(a.get('memberID', 0)):x}" for a in doc.get("alarms", [])
                if a.get("alarm") == "CORRUPT"]
    rounds = 0.0
    for name in live:  # the leaders' rounds (whoever led): the checks did run
        with urllib.request.urlopen(cluster.url(name) + "/metrics", timeout=10) as response:
            text = response.read().decode()
        found = re.search(r"^kvraft_corruption_check_rounds_total (\S+)$", text, re.M)
        rounds += float(found.group(1)) if found else 0.0
        found = re.search(r"^kvraft_corruption_compaction_hashes_checked_total (\S+)$", text, re.M)
        result.compaction_hashes += int(float(found.group(1))) if found else 0
    if not rounds:
        problems.append("no corruption check round ran (--corrupt-check-time 1s)")
    return problems


def run_scenario(
    scenario: Scenario,
    seed: int,
    *,
    keep: str | None = None,
    pace: float = 1.0,
    clients: int = 4,
    stale_reads: bool = False,
    member_args: list[str] | None = None,
    once_numbered: bool = True,
) -> RunResult:
    """Run one scenario. ``stale_reads`` makes the clients' gets serializable: a deliberately
    unsafe workload, used to show that the checks catch stale reads; ``once_numbered=False``
    sends the once clients' retries unnumbered, to show that the check catches double applies."""
    if scenario.needs_net:
        usable, why = available()
        if not usable:
            return RunResult(scenario.name, seed, scenario.members, skipped=why)
    if scenario.clock_skew and not os.path.exists(FAKETIME_LIB):
        return RunResult(scenario.name, seed, scenario.members, skipped="libfaketime is not installed (apt-get install faketime)")
    base = Path(keep or tempfile.mkdtemp(prefix=f"kvraft-robust-{scenario.name}-"))
    base.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result, history = asyncio.run(_run(scenario, seed, base, pace, clients, stale_reads, list(member_args or []),
                                       once_numbered))
    result.problems += check_all(history)
    _summarize(result, history)
    result.seconds = time.monotonic() - started
    if result.problems or keep:
        history.dump(str(base / "history.jsonl"))
        (base / "problems.txt").write_text("\n".join(result.problems) + "\n")
        (base / "faults.txt").write_text("\n".join(history.faults) + "\n")
        result.kept = str(base)
    else:
        shutil.rmtree(base, ignore_errors=True)
    return result


def check_saved(directory: str) -> list[str]:
    return check_all(History.load(str(Path(directory) / "history.jsonl")))
