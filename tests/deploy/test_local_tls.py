"""``kvraft-local up --tls``: the local cluster with client and peer mutual TLS (certificates
from deploy/make-certs.sh in <dir>/pki). The scheduler and the agent reach the members with
their certificates; a client with the admin certificate works (the client, kvctl, jobctl);
a client without a certificate is refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvraft.client import SyncClient, TLSConfig, UnauthenticatedError

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _run(*argv: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.fixture(scope="module")
def local_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    d = tmp_path_factory.mktemp("local-tls")
    try:
        up = _run("-m", "kvraft.local", "up", "--dir", str(d), "--tls", "--members", "3", "--schedulers", "1",
                  "--agents", "1", "--racks", "1", "--runtime", "fake")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "TLS on; connect with: kvctl" in up.stdout
        status = _run("-m", "kvraft.local", "status", "--dir", str(d), "-o", "json")
        assert status.returncode == 0, status.stderr
        yield json.loads(status.stdout)
    finally:
        down = _run("-m", "kvraft.local", "down", "--dir", str(d))
        assert down.returncode == 0, down.stderr


def test_every_process_is_up_over_tls(local_tls: dict) -> None:
    assert all(url.startswith("https://") for url in local_tls["endpoints"])
    assert {p["role"] for p in local_tls["processes"]} >= {"member", "scheduler", "agent"}  # and the dashboard
    assert all(p["healthy"] for p in local_tls["processes"]), local_tls["processes"]


def test_a_client_with_the_admin_certificate_works_and_one_without_is_refused(local_tls: dict) -> None:
    t = local_tls["tls"]
    tls = TLSConfig(t["cacert"], t["cert"], t["key"])
    with SyncClient(local_tls["endpoints"], tls=tls) as client:
        client.put("local-tls", b"yes")
        assert client.get("local-tls").kvs[0].value == b"yes"
        # the agent registered its node over TLS
        assert client.get("/registry/nodes/node-0").kvs
    # the handshake lets it through; every request without a scoped token is refused
    with pytest.raises(UnauthenticatedError, match="a client certificate is required"), \
            SyncClient(local_tls["endpoints"], tls=TLSConfig(t["cacert"]), request_timeout_s=3.0) as client:
        client.get("local-tls")


def test_kvctl_and_jobctl_with_the_printed_flags(local_tls: dict) -> None:
    t = local_tls["tls"]
    eps = ",".join(local_tls["endpoints"])
    flags = [f"--cacert={t['cacert']}", f"--cert={t['cert']}", f"--key={t['key']}"]
    with SyncClient(local_tls["endpoints"], tls=TLSConfig(t["cacert"], t["cert"], t["key"])) as client:
        client.put("local-tls", b"yes")  # (as the test before does: this one may run alone)
    got = _run("-m", "kvraft.cli.main", f"--endpoints={eps}", *flags, "get", "local-tls", "--print-value-only")
    assert (got.returncode, got.stdout) == (0, "yes\n"), got.stderr
    nodes = _run("-m", "scheduler.cli.main", "--endpoints", eps, *flags, "get", "nodes", "-o", "json")
    assert nodes.returncode == 0, nodes.stderr
    assert "node-0" in nodes.stdout
    refused = _run("-m", "scheduler.cli.main", "--endpoints", eps, f"--cacert={t['cacert']}",
                   "--request-timeout-s", "3", "get", "nodes")
    assert refused.returncode == 1 and "error: kvraft at" in refused.stderr
