"""TLS: an etcd member serving https with client-certificate auth; kvctl and the client
connect with --cacert/--cert/--key (TLSConfig), and kvctl's output matches etcdctl's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvctl_harness import run_etcdctl, run_kvctl

from kvraft.client import EndpointError, SyncClient, TLSConfig
from kvraft.server.local import free_port

pytestmark = pytest.mark.skipif(
    shutil.which("etcd") is None or shutil.which("etcdctl") is None or shutil.which("openssl") is None,
    reason="needs etcd, etcdctl and openssl",
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=kvraft-test-ca", cwd=d)
    for name, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    d = tmp_path_factory.mktemp("tls")
    make_certs(d)
    client_port, peer_port = free_port(), free_port()
    url, peer = f"https://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    with open(d / "etcd.log", "wb") as log:
        proc = subprocess.Popen(
            ["etcd", "--name", "tls0", "--data-dir", str(d / "data"), "--listen-client-urls", url,
             "--advertise-client-urls", url, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"tls0={peer}", "--cert-file", str(d / "server.crt"),
             "--key-file", str(d / "server.key"), "--trusted-ca-file", str(d / "ca.crt"), "--client-cert-auth"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        tls = TLSConfig(str(d / "ca.crt"), str(d / "client.crt"), str(d / "client.key"))
        deadline = time.monotonic() + 60
        while True:
            try:
                with SyncClient([url], tls=tls) as client:
                    client.put("ready", b"1")
                break
            except EndpointError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        yield f"127.0.0.1:{client_port}", d
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(30)


def test_kvctl_over_tls_with_client_certificates_matches_etcdctl(tls_etcd: tuple[str, Path]) -> None:
    endpoint, d = tls_etcd
    flags = [f"--endpoints={endpoint}", f"--cacert={d / 'ca.crt'}", f"--cert={d / 'client.crt'}", f"--key={d / 'client.key'}"]
    for argv in (["put", "tls-k", "v"], ["get", "tls-k", "-w", "json"], ["get", "tls-k"], ["member", "list", "-w", "json"]):
        golden, ours = run_etcdctl([*flags, *argv]), run_kvctl([*flags, *argv])
        assert (ours.rc, ours.out) == (golden.rc, golden.out), argv
    untrusted = run_kvctl([f"--endpoints={endpoint}", f"--cacert={d / 'ca.crt'}", "--dial-timeout=1s", "get", "tls-k"])
    assert untrusted.rc == 1 and "context deadline exceeded" in untrusted.err  # no client cert: refused
    skip = run_kvctl([f"--endpoints={endpoint}", "--insecure-skip-tls-verify", f"--cert={d / 'client.crt'}",
                      f"--key={d / 'client.key'}", "get", "ready", "--print-value-only"])
    assert (skip.rc, skip.out) == (0, "1\n")
