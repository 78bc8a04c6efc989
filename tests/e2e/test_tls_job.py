"""``kvraft-local up --tls`` (client and peer mutual TLS, ``--client-cert-auth``): a 2-rank
MPI job runs across two agents. Its ranks reach kvraft (launch rendezvous, progress,
checkpoints) with the TLS files their agent passes on (``agent.rankenv``: ``KVRAFT_CACERT``,
``KVRAFT_CERT``, ``KVRAFT_KEY``); a job whose ranks drop them fails (the cluster refuses them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from kvraft.client import SyncClient, TLSConfig
from kvraft.local import LocalSpec, down, up
from tests.e2e.conftest import PY, ROOT, job_yaml, wait_for

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("local-tls-job")
    spec = LocalSpec(members=3, schedulers=1, agents=2, gpus_per_agent=2, racks=1, lease_ttl_s=3, heartbeat_s=1.0,
                     election_ttl_s=3, dashboard=False, tls=True, node_prefix=f"tls{os.getpid()}")
    try:
        yield up(directory, spec, timeout_s=180.0, say=lambda m: None)
    finally:
        down(directory)


def test_a_two_rank_mpi_job_on_a_client_cert_auth_cluster(tls_cluster: dict[str, Any]) -> None:
    t = tls_cluster["tls"]
    eps = tls_cluster["endpoints"]
    assert all(e.startswith("https://") for e in eps)
    flags = ["--cacert", t["cacert"], "--cert", t["cert"], "--key", t["key"]]

    def jobctl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "scheduler.cli.main", "--endpoints", ",".join(eps), *flags, *args],
                              input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))

    r = jobctl("submit", "-f", "-", "-o", "name", stdin=job_yaml("tls-mpi", "--epochs", "2", workers=2, gpus=2))
    assert r.returncode == 0, r.stderr
    with SyncClient(eps, tls=TLSConfig(t["cacert"], t["cert"], t["key"]), request_timeout_s=15.0) as c:
        def doc(key: str) -> dict[str, Any]:
            got = c.get(key)
            return json.loads(got.kvs[0].value) if got.kvs else {}

        def explain() -> str:
            return "".join(jobctl(*args).stdout for args in (
                ("describe", "job", "tls-mpi"), ("logs", "tls-mpi", "--task", "worker-0", "--tail", "40"),
                ("logs", "tls-mpi", "--task", "worker-1", "--tail", "40")))

        wait_for(lambda: doc("/registry/jobstatus/tls-mpi").get("phase") in ("Succeeded", "Failed"), 300,
                 "tls-mpi to finish", explain=explain)
        status = doc("/registry/jobstatus/tls-mpi")
        described = jobctl("describe", "job", "tls-mpi").stdout + jobctl("logs", "tls-mpi", "--task", "worker-0",
                                                                         "--tail", "40").stdout
        assert status["phase"] == "Succeeded", described
        assert len({p["node"] for p in status["placement"] or status.get("last_placement") or []}) == 2, status
        done = doc("/jobs/tls-mpi/progress")  # written by rank 0 over TLS
        assert done.get("done") and done["ranks"] == 2 and done["backend"].startswith("mpi"), done
        assert "finished: epoch 2" in described
        # the same job whose ranks drop the certificates (the job's env wins) is refused: what
        # every rank met before the agent passed its TLS files on
        bare = job_yaml("tls-bare", "--epochs", "1", workers=2, gpus=2).replace(
            "resources:", 'env: {KVRAFT_CACERT: "", KVRAFT_CERT: "", KVRAFT_KEY: ""}, resources:')
        r = jobctl("submit", "-f", "-", "-o", "name", stdin=bare)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: doc("/registry/jobstatus/tls-bare").get("phase") in ("Succeeded", "Failed"), 300,
                 "tls-bare to finish")
        status = doc("/registry/jobstatus/tls-bare")
        assert status["phase"] == "Failed" and status["reason"] == "TaskFailed", status
        assert not doc("/jobs/tls-bare/progress")
