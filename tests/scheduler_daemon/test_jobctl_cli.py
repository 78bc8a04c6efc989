"""jobctl's outputs and exit codes against a running daemon, checked the way a kubectl user
reads them: tables with upper-case headers, ``-o wide`` columns, ``-o json|yaml`` (one object
for a named job, a ``List`` otherwise), drain, top, and 0 / 1 / 2 exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from harness import Procs, jobctl, phase, wait_for


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = text.splitlines()
    header = lines[0].split()
    return header, [ln.split(None, len(header) - 1) for ln in lines[1:]]


def test_jobctl_outputs_and_exit_codes(procs: Procs, tmp_path: Path) -> None:
    eps = procs.endpoints
    procs.agent("agents", "--nodes", "2", "--gpus-per-node", "8", "--racks", "2")
    procs.scheduler("sched-a")
    gang = "name: g\ntasks:\n  - {name: worker, replicas: 2, command: [sleep, '600'], resources: {gpus: 4}}\n"
    rc, out, err = jobctl(eps, "submit", "-f", "-", stdin=gang)
    assert (rc, out.strip()) == (0, "job/g submitted"), err
    wait_for(lambda: phase(eps, "g") == "Running", what="g running")

    header, rows = _table(jobctl(eps, "get", "jobs")[1])
    assert header == ["NAME", "TENANT", "PHASE", "GPUS", "RESTARTS", "AGE", "REASON"]
    assert rows[0][:5] == ["g", "default", "Running", "8", "0"]
    header, rows = _table(jobctl(eps, "get", "jobs", "-o", "wide")[1])
    assert header[-3:] == ["PRIORITY", "NODES", "MESSAGE"]
    one = json.loads(jobctl(eps, "get", "job", "g", "-o", "json")[1])
    assert (one["name"], one["tenant"], one["status"]["phase"], one["status"]["restarts"]) == ("g", "default", "Running", 0)
    assert one["status"]["reason"]
    placement = one["status"]["placement"]
    assert len(placement) == 2 and all({"task", "node", "rack", "gpus"} <= set(p) for p in placement)
    assert sum(len(p["gpus"]) for p in placement) == 8
    nodes = sorted({p["node"] for p in placement})
    assert ",".join(nodes) in jobctl(eps, "get", "jobs", "-o", "wide")[1]
    assert yaml.safe_load(jobctl(eps, "get", "job", "g", "-o", "yaml")[1])["status"]["placement"] == placement
    # without a name: always a List, even with a single job (kubectl get pods -o json)
    listed = json.loads(jobctl(eps, "get", "jobs", "-o", "json")[1])
    assert listed["kind"] == "List" and [j["name"] for j in listed["items"]] == ["g"]
    assert yaml.safe_load(jobctl(eps, "get", "jobs", "-o", "yaml")[1])["kind"] == "List"

    header, rows = _table(jobctl(eps, "get", "nodes", "-o", "wide")[1])
    assert header == ["NAME", "STATUS", "RACK", "GPU_TYPE", "GPUS", "USED", "CPU", "MEMORY", "JOBS"]
    assert {r[0] for r in rows if r[-1] == "g"} == set(nodes)
    header, rows = _table(jobctl(eps, "top", "nodes")[1])
    assert header[:3] == ["NAME", "GPUS", "GPU%"] and len(rows) == 2
    assert sum(int(r[1].split("/")[0]) for r in rows) == 8
    rc, out, _ = jobctl(eps, "apply", "-f", "-", stdin="kind: PriorityClass\nname: high\nvalue: 100\n")
    assert (rc, out.strip()) == (0, "priorityclass/high created")
    assert "high" in jobctl(eps, "get", "priorityclasses")[1]

    # exit codes: 1 with kubectl's error text, 2 for bad usage
    rc, out, err = jobctl(eps, "get", "job", "missing")
    assert (rc, out) == (1, "") and 'Error from server (NotFound): jobs "missing" not found' in err
    rc, _, err = jobctl(eps, "get", "widgets")
    assert rc == 1 and 'resource type "widgets"' in err
    assert jobctl(eps, "get", "jobs", "-o", "table")[0] == 2
    assert jobctl(eps)[0] == 2
    rc, _, err = jobctl(eps, "submit", "-f", "-", stdin=gang)
    assert rc == 1 and 'jobs "g" already exists' in err

    # drain: cordons, names what still runs; --cancel cancels it
    rc, out, err = jobctl(eps, "drain", nodes[0])
    assert rc == 0, err
    assert f"node/{nodes[0]} cordoned" in out and f"jobs still running on {nodes[0]}: g" in out
    assert "SchedulingDisabled" in jobctl(eps, "get", "node", nodes[0])[1]
    rc, out, err = jobctl(eps, "drain", nodes[0], "--cancel")
    assert rc == 0 and "already cordoned" in out and f"node/{nodes[0]} drained" in out, (out, err)
    wait_for(lambda: phase(eps, "g") == "Cancelled", what="g cancelled by drain --cancel")
    assert jobctl(eps, "uncordon", nodes[0])[1].strip() == f"node/{nodes[0]} uncordoned"
    rc, _, err = jobctl(eps, "drain", "no-such-node")
    assert rc == 1 and 'nodes "no-such-node" not found' in err
