"""``kvraft-local up --network netns`` (root): every agent in its own network namespace on a
bridge; a 2-node MPI job whose ranks talk across namespaces succeeds, and ``down`` removes
the namespaces and the bridge."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kvraft.local import LocalSpec, down, up
from kvraft.local.netns import available, plan
from tests.e2e.conftest import Cluster, job_yaml

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or bool(available()), reason=f"network namespaces: {available() or 'not root'}")


def test_mpi_job_across_network_namespaces(tmp_path: Path) -> None:
    spec = LocalSpec(members=1, schedulers=1, agents=2, gpus_per_agent=4, racks=1, lease_ttl_s=3, heartbeat_s=1.0,
                     election_ttl_s=3, node_prefix=f"ns{os.getpid()}", network="netns", dashboard=False)
    net = plan(tmp_path, 2)
    try:
        doc = up(tmp_path, spec, timeout_s=180.0, say=lambda m: None)
        assert doc["network"]["namespaces"] == list(net.namespaces)
        agents = [p for p in doc["processes"] if p["role"] == "agent"]
        assert [p["url"].split("//")[1].rsplit(":", 1)[0] for p in agents] == [net.address(0), net.address(1)]
        c = Cluster(tmp_path, doc)
        try:
            r = c.jobctl("submit", "-f", "-", "-o", "name", stdin=job_yaml("e2e-netns", "--epochs", "2", workers=2, gpus=4))
            assert r.returncode == 0, r.stderr
            c.succeeded("e2e-netns", 240)
            done = c.progress("e2e-netns")
            assert done["ranks"] == 2 and done["backend"].startswith("mpi"), done
        finally:
            c.client.close()
    finally:
        down(tmp_path)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in names for ns in net.namespaces)
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    assert net.bridge not in {link["ifname"] for link in json.loads(links or "[]")}
    # down also removes the agents' cgroup parents (kvraft-agent/<node>): a torn-down cluster's
    # agents never come back to sweep them, and they piled up one set per node name
    root = Path("/sys/fs/cgroup")
    left = [str(d) for p in agents for pattern in (f"*/kvraft-agent/{p['name']}", f"kvraft-agent/{p['name']}")
            for d in root.glob(pattern)]
    assert left == [], left
