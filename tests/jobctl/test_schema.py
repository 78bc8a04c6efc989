"""The job, tenant and priority-class schema: every problem at once, with its path."""

from __future__ import annotations

import io
import sys

import pytest

from scheduler.cli.main import main
from scheduler.jobs import (
    memory_mib,
    normalize_job,
    task_instances,
    to_model,
    validate_job,
    validate_tenant,
)
from scheduler.model import Level, Mode

GOOD = {"name": "bert", "tenant": "nlp", "priority": 5,
        "tasks": [{"name": "launcher", "command": "mpirun x", "resources": {"cpu": 1, "memory": "1Gi"}},
                  {"name": "worker", "replicas": 4, "command": ["python3", "train.py"],
                   "resources": {"gpus": 8, "gpu_type": "H100", "cpu": "16", "memory": "64Gi", "rdma": True}}],
        "topology": {"mode": "required", "level": "rack"}, "restart_policy": "OnFailure", "max_restarts": 2}


def test_good_job_converts_to_the_core_model() -> None:
    assert validate_job(GOOD) == []
    spec = normalize_job(GOOD)
    job = to_model(spec)
    assert (job.tasks, job.gpus_per_task, job.gpu_type, job.priority) == (4, 8, "H100", 5)
    assert job.memory_mib_per_task == 64 * 1024 and job.cpu_milli_per_task == 16000
    assert job.topology is not None and (job.topology.level, job.topology.mode) == (Level.RACK, Mode.REQUIRED)
    names = [n for n, _ in task_instances(spec)]
    assert names == ["worker-0", "worker-1", "worker-2", "worker-3", "launcher-0"]
    assert spec["tasks"][0]["command"] == ["/bin/sh", "-c", "mpirun x"]


@pytest.mark.parametrize(("doc", "want"), [
    ({"name": "j", "tasks": [{"name": "w", "command": "x", "resources": {"gpus": -1}}]},
     ["tasks[0].resources.gpus: must be >= 0, not -1"]),
    ({"name": "j", "tasks": [{"name": "w", "command": "x", "resources": {"gpus": 1}},
                             {"name": "v", "command": "x", "resources": {"gpus": "two"}}], "colour": 1},
     ["colour: unknown field", "tasks[1].resources.gpus: must be integer, not str 'two'"]),
    ({"tasks": []}, ["name: required field is missing", "tasks: needs at least 1 item(s)"]),
    ({"name": "j", "tasks": [{"name": "a", "command": "x", "resources": {"gpus": 8}},
                             {"name": "b", "command": "x", "resources": {"gpus": 4}}]},
     ["tasks[1].resources: differs from tasks[0].resources"]),
    ({"name": "j", "tasks": [{"name": "a", "command": "x"}], "topology": {"level": "zone"}, "max_restarts": 2},
     ["max_restarts: needs restart_policy OnFailure", "topology.level: must be one of node, rack, spine, not 'zone'"]),
    ({"name": "j", "tasks": [{"name": "a", "command": "x", "resources": {"memory": "lots"}}]},
     ["tasks[0].resources.memory: must be MiB or a quantity like '4Gi', not 'lots'"]),
], ids=["negative-gpus", "unknown-and-type", "missing", "mixed-shapes", "restarts-and-level", "memory"])
def test_every_problem_with_its_path(doc: dict, want: list[str]) -> None:
    got = [str(p) for p in validate_job(doc)]
    assert len(got) == len(want), got
    for g, w in zip(sorted(got), sorted(want), strict=True):
        assert g.startswith(w), (g, w)


def test_tenant_and_quantities() -> None:
    assert validate_tenant({"kind": "Tenant", "name": "a", "nominal_gpus": 8}) == []
    bad = [str(p) for p in validate_tenant({"kind": "Tenant", "name": "a", "nominal_gpus": -8, "borrow_limit_gpus": "x"})]
    assert any(p.startswith("nominal_gpus: must be >= 0") for p in bad) and any(p.startswith("borrow_limit_gpus") for p in bad)
    assert (memory_mib("4Gi"), memory_mib("512Mi"), memory_mib(100)) == (4096, 512, 100)


def _run(args: list[str], stdin: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    out = io.StringIO()
    rc = main(["--endpoints", "127.0.0.1:1", "--request-timeout-s", "0.5", *args], out=out)
    return rc, out.getvalue(), capsys.readouterr().err


def test_jobctl_rejects_bad_yaml_before_connecting(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    rc, _, err = _run(["submit", "-f", "-", "--dry-run"], "name: j\ntasks: [\n", capsys, monkeypatch)
    assert rc == 1 and "invalid YAML" in err and "<stdin>:" in err
    rc, _, err = _run(["submit", "-f", "-", "--dry-run"],
                      "name: j\ntasks:\n- {name: w, command: x, resources: {gpus: -2}}\nbogus: 1\n", capsys, monkeypatch)
    assert rc == 1
    assert "tasks[0].resources.gpus: must be >= 0, not -2" in err and "bogus: unknown field" in err
    rc, _, err = _run(["apply", "-f", "-"], "kind: Tenant\nname: a\nnominal_gpus: -1\n", capsys, monkeypatch)
    assert rc == 1 and "nominal_gpus: must be >= 0" in err
    rc, _, err = _run(["submit", "-f", "/nonexistent.yaml"], "", capsys, monkeypatch)
    assert rc == 1 and "cannot be read" in err
