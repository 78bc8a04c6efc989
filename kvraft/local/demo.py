"""``kvraft-local demo`` (what ``make demo`` runs): a fresh local cluster, the data-parallel
digits job submitted with jobctl, its placement by rack and its progress as it trains, and
one last line ``demo: job NAME Succeeded in N s, test accuracy A`` (exit 0), or the reason it
failed (exit 1). The cluster is left running; ``kvraft-local down`` / ``make down`` stops it.

jobctl is run as a program (``python -m scheduler.cli.main``); job state is read straight
from kvraft (``/registry/jobstatus/<job>``, ``/jobs/<job>/progress``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from kvraft.client import SyncClient
from kvraft.local.cluster import ROOT, ClusterError, LocalSpec, _env, down, load_state, up

__all__ = ["run_demo"]


def _jobctl(endpoints: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler.cli.main", "--endpoints", ",".join(endpoints), *args],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)


def _get(client: SyncClient, key: str) -> dict[str, Any] | None:
    got = client.get(key)
    if not got.kvs:
        return None
    try:
        doc = json.loads(got.kvs[0].value)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _placement_lines(placement: list[dict[str, Any]]) -> list[str]:
    by_rack: dict[str, dict[str, list[str]]] = {}
    for p in placement:
        by_rack.setdefault(p["rack"], {}).setdefault(p["node"], []).append(f"{p['task']} (GPUs {','.join(map(str, p['gpus']))})")
    out = []
    for rack in sorted(by_rack):
        out.append(f"  {rack}:")
        for node in sorted(by_rack[rack]):
            out.append(f"    {node}: {'; '.join(sorted(by_rack[rack][node]))}")
    return out


def run_demo(directory: Path, spec: LocalSpec, job_file: Path | None, timeout_s: float, say: Any = print) -> int:
    t_start = time.monotonic()
    job_file = job_file or ROOT / "examples" / "digits-dp.yaml"
    try:
        job = yaml.safe_load(job_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        why = getattr(exc, "strerror", None) or " ".join(str(exc).split())
        raise ClusterError(f"--job {job_file}: {why}") from exc
    if not isinstance(job, dict) or not job.get("name"):
        raise ClusterError(f"--job {job_file}: not a job (a YAML mapping with a name)")
    job_name = str(job["name"])
    directory = directory.resolve()
    if (directory / "cluster.json").exists():
        with_procs = load_state(directory)
        if with_procs.get("processes"):
            say(f"demo: stopping the previous local cluster in {directory}")
            down(directory)
        shutil.rmtree(directory, ignore_errors=True)
    say(f"demo: starting a local cluster in {directory}: {spec.members} members, {spec.schedulers} schedulers, "
        f"{spec.agents} agents in {spec.racks} racks with {spec.gpus_per_agent} fake GPUs each ({spec.runtime} runtime, "
        f"{spec.network} network)")
    doc = up(directory, spec, say=lambda m: None)
    endpoints: list[str] = doc["endpoints"]
    say(f"demo: cluster up in {time.monotonic() - t_start:.1f} s; endpoints {','.join(endpoints)}")
    for p in doc["processes"]:
        if p["role"] == "agent":
            say(f"  agent {p['name']} ({p['rack']}) pid {p['pid']} {p['url']}")
    r = _jobctl(endpoints, "submit", "-f", str(job_file), "-o", "name")
    if r.returncode != 0:
        say(f"demo: FAILED: jobctl submit: {r.stderr.strip()}")
        return 1
    say(f"demo: submitted {r.stdout.strip()} ({job_file.relative_to(ROOT) if job_file.is_relative_to(ROOT) else job_file})")
    t_submit = time.monotonic()
    shown_placement: str = ""
    last_epoch: tuple[int, int] = (-1, -1)
    last_phase = ""
    with SyncClient(endpoints, request_timeout_s=10.0) as client:
        while True:
            if time.monotonic() - t_submit > timeout_s:
                say(f"demo: FAILED: job {job_name} did not finish within {timeout_s:.0f} s "
                    f"(jobctl describe job {job_name}; logs in {directory}/logs)")
                return 1
            status = _get(client, f"/registry/jobstatus/{job_name}") or {}
            progress = _get(client, f"/jobs/{job_name}/progress") or {}
            phase = str(status.get("phase", ""))
            placement = status.get("placement") or []
            key = json.dumps(placement, sort_keys=True)
            if placement and key != shown_placement:
                shown_placement = key
                restarts = status.get("restarts", 0)
                say(f"demo: placement{' after restart ' + str(restarts) if restarts else ''} "
                    f"(bound {time.monotonic() - t_submit:.1f} s after submit):")
                for line in _placement_lines(placement):
                    say(line)
            if phase != last_phase:
                say(f"demo: {job_name} {phase or 'submitted'}"
                    + (f" ({status.get('reason')}: {status.get('message')})" if status.get("message") else ""))
                last_phase = phase
            epoch_key = (int(progress.get("restarts", 0) or 0), int(progress.get("epoch", -1)))
            if progress.get("started") and epoch_key != last_epoch:
                last_epoch = epoch_key
                resumed = int(progress.get("resumed_from", 0) or 0)
                say(f"  {progress.get('ranks')} ranks formed one world ({progress.get('backend')})"
                    + (f", resumed from the checkpoint of epoch {resumed}" if resumed else ""))
            elif progress and not progress.get("done") and epoch_key != last_epoch:
                last_epoch = epoch_key
                say(f"  epoch {progress['epoch']:>3}  loss {progress.get('loss', 0):.4f}  train acc "
                    f"{progress.get('train_acc', 0):.4f}  test acc {progress.get('test_acc', 0):.4f}  "
                    f"({progress.get('ranks')} ranks, {progress.get('backend')})")
            if phase == "Succeeded":
                acc = progress.get("test_acc")
                took = time.monotonic() - t_submit
                say(f"demo: the cluster keeps running ({directory}); see it with: kvraft-local status --dir {directory};"
                    f" jobctl --endpoints {','.join(endpoints)} describe job {job_name}")
                dash = next((p["url"] for p in doc["processes"] if p["role"] == "dashboard"), None)
                say(f"demo: dashboard: open {dash}/#job={job_name} in a browser" if dash else "demo: no dashboard in this build")
                say("demo: `make down` (kvraft-local down) stops everything")
                say(f"demo: total wall time {time.monotonic() - t_start:.1f} s")
                say(f"demo: job {job_name} Succeeded in {took:.0f} s, test accuracy {acc}")
                return 0 if acc is not None else 1
            if phase in ("Failed", "Cancelled"):
                say(f"demo: FAILED: job {job_name} {phase}: {status.get('reason')}: {status.get('message')}")
                d = _jobctl(endpoints, "logs", job_name, "--task", "worker-0", "--tail", "30")
                if d.stdout.strip():
                    say("demo: last lines of worker-0:\n" + d.stdout.rstrip())
                return 1
            time.sleep(0.5)


def main() -> int:  # pragma: no cover - convenience
    try:
        return run_demo(Path(".kvraft-local"), LocalSpec(), None, 600.0)
    except ClusterError as exc:
        print(f"demo: FAILED: {exc}", file=sys.stderr)
        return 1
