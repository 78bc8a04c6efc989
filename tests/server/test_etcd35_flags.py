"""etcd 3.5's member flags: an etcd 3.5 unit's flags start a kvraft member. Those that change
something here do it (``--unsafe-no-fsync``, ``--socket-reuse-port``,
``--experimental-memory-mlock``, ``--self-signed-cert-validity``, ``--peer-client-cert-file``);
those that have nothing to change are checked as etcd checks them and said once at start; the
one kvraft cannot honour (``--experimental-enable-distributed-tracing``) and the one that would
leave no API (``--enable-grpc-gateway=false``) are refused with the reason."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvraft.server.config import ConfigError, parse_config
from kvraft.server.local import b64, free_port, post
from kvraft.server.main import compatibility_notes
from kvraft.server.mlock import locked_kib
from kvraft.server.tls import self_signed
from tests.server.helpers import wait_until
from tests.server.test_discovery_srv import stop
from tests.server.test_peer_dial import config as peer_config
from tests.server.test_peer_dial import dial, pki  # noqa: F401  (the module-scoped certificates)

ETCD35 = [
    "--backend-bbolt-freelist-type", "array", "--enable-grpc-gateway", "--v2-deprecation", "write-only",
    "--experimental-enable-lease-checkpoint-persist", "--experimental-txn-mode-write-with-shared-buffer=false",
    "--experimental-downgrade-check-time", "10s", "--experimental-enable-distributed-tracing=false",
    "--experimental-distributed-tracing-address", "localhost:4317",
    "--experimental-distributed-tracing-service-name", "etcd", "--experimental-distributed-tracing-instance-id", "a",
    "--experimental-distributed-tracing-sampling-rate", "100", "--socket-reuse-address", "--socket-reuse-port",
    "--self-signed-cert-validity", "2", "--unsafe-no-fsync=false", "--experimental-memory-mlock=false",
    "--experimental-compaction-sleep-interval", "5ms", "--experimental-bootstrap-defrag-threshold-megabytes", "0",
    "--experimental-stop-grpc-service-on-defrag", "--raft-read-timeout", "5s", "--raft-write-timeout", "5s",
]  # fmt: skip


def test_an_etcd_35_units_flags_parse_and_say_what_they_change(tmp_path: Path) -> None:
    config = parse_config(["--data-dir", str(tmp_path / "d"), *ETCD35], {})
    assert (config.backend_bbolt_freelist_type, config.v2_deprecation, config.self_signed_cert_validity) == \
        ("array", "write-only", 2)
    notes = "\n".join(compatibility_notes(config))
    for flag in ("--backend-bbolt-freelist-type=array", "--experimental-txn-mode-write-with-shared-buffer=false", "--v2-deprecation=write-only",
                 "--socket-reuse-address", "--experimental-stop-grpc-service-on-defrag"):
        assert flag in notes
    environ = {"ETCD_UNSAFE_NO_FSYNC": "true", "ETCD_SOCKET_REUSE_PORT": "true"}  # (an EnvironmentFile's form)
    config = parse_config(["--data-dir", str(tmp_path / "d")], environ)
    assert config.unsafe_no_fsync and config.socket_reuse_port


@pytest.mark.parametrize(("argv", "message"), [
    (["--enable-grpc-gateway=false"], "kvraft's client API is the gateway"),
    (["--v2-deprecation", "later"], "--v2-deprecation: unknown value 'later'"),
    (["--experimental-enable-lease-checkpoint=false", "--experimental-enable-lease-checkpoint-persist"],
     "enabling feature gate LeaseCheckpointPersist requires enabling feature gate LeaseCheckpoint"),
    (["--experimental-enable-distributed-tracing"], "kvraft exports no OpenTelemetry traces"),
    (["--experimental-distributed-tracing-sampling-rate", "2000000"], "between 0 and 1000000"),
    (["--self-signed-cert-validity", "0"], "--self-signed-cert-validity must be at least 1"),
    (["--backend-bbolt-freelist-type", "tree"], "--backend-bbolt-freelist-type must be 'array' or 'map'"),
    (["--experimental-downgrade-check-time", "soon"], "--experimental-downgrade-check-time"),
    (["--experimental-compaction-sleep-interval=-1s"], "--experimental-compaction-sleep-interval"),
    (["--raft-write-timeout", "0s"], "--raft-write-timeout must be positive"),
    (["--raft-read-timeout", "5"], "--raft-read-timeout"),
    (["--experimental-bootstrap-defrag-threshold-megabytes", "-1"], "bootstrap-defrag-threshold-megabytes"),
    (["--client-cert-file", "c.pem"], "--client-cert-file and --client-key-file go together"),
    (["--client-cert-file", "/nonexistent/c.pem", "--client-key-file", "/nonexistent/k.pem"],
     "open /nonexistent/c.pem: no such file or directory"),
    (["--peer-client-cert-file", "c.pem", "--peer-client-key-file", "k.pem"], "--peer-client-cert-file needs peer TLS"),
])  # fmt: skip
def test_what_etcd_refuses_or_kvraft_cannot_do_is_refused(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config(["--data-dir", str(tmp_path / "d"), *argv], {})


def test_a_member_without_fsync_with_reuse_port_and_locked_memory(tmp_path: Path) -> None:
    """``--listen-client-http-urls`` serve the API too; ``--unsafe-no-fsync``: writes are answered and the WAL is never fsynced (its fsync
    histogram stays empty) - with a warning at start; ``--socket-reuse-port``: a second socket
    binds the member's client port with SO_REUSEPORT (the kernel allows it only when the
    listener has it too); ``--experimental-memory-mlock``: the process has locked pages."""
    client, peer, http_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    argv = [sys.executable, "-m", "kvraft.server.main", "--name", "m0", "--data-dir", str(tmp_path / "m0.data"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--unsafe-no-fsync", "--socket-reuse-port", "--experimental-memory-mlock",
            "--listen-client-http-urls", f"http://127.0.0.1:{http_port}"]
    log_path = tmp_path / "m0.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def written() -> bool:
            assert process.poll() is None, log_path.read_text()
            return post(url, "/v3/kv/put", {"key": b64("k"), "value": b64("v")}, timeout_s=2.0)[0] == 200

        wait_until(written, 60, what="a write")
        for i in range(20):
            assert post(url, "/v3/kv/put", {"key": b64(f"k{i}"), "value": b64("v")}, timeout_s=5.0)[0] == 200
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
        assert "etcd_disk_wal_fsync_duration_seconds_count 0.0" in metrics or \
            "etcd_disk_wal_fsync_duration_seconds_count 0\n" in metrics, \
            [line for line in metrics.splitlines() if "wal_fsync_duration_seconds_count" in line]
        assert "--unsafe-no-fsync: the Raft log and the store are not fsynced" in log_path.read_text()
        with socket.socket() as second:
            second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            second.bind(("127.0.0.1", client))  # (OSError "Address already in use" without the flag)
        assert locked_kib(process.pid) > 0
        # --listen-client-http-urls: the same API on more URLs
        code, got = post(f"http://127.0.0.1:{http_port}", "/v3/kv/range", {"key": b64("k0")}, timeout_s=5.0)
        assert code == 200 and got["kvs"][0]["value"] == b64("v")
    finally:
        stop(process)


def test_a_member_whose_memory_the_kernel_will_not_lock_does_not_start(tmp_path: Path) -> None:
    client, peer = free_port(), free_port()
    argv = [sys.executable, "-m", "kvraft.server.main", "--name", "m0", "--data-dir", str(tmp_path / "m0.data"),
            "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--experimental-memory-mlock"]
    # a 64 KiB locked-memory limit, and no CAP_IPC_LOCK to go past it (setpriv drops it, as a
    # service user has none)
    if shutil.which("setpriv") is None or shutil.which("prlimit") is None:
        pytest.skip("needs setpriv and prlimit (util-linux)")
    result = subprocess.run(["prlimit", "--memlock=65536", "setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock",
                             *argv], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert "--memory-mlock: mlockall: Cannot allocate memory" in result.stderr, result.stderr
    assert "LimitMEMLOCK=infinity" in result.stderr


def test_self_signed_certificates_last_the_years_asked(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, _key = self_signed(tmp_path / "peer", ["127.0.0.1"], years=3)
    end = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-enddate"], capture_output=True, text=True,
                         check=True).stdout.strip().split("=", 1)[1]
    days = (datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC) - datetime.now(UTC)).days
    assert 3 * 365 - 2 <= days <= 3 * 365


def test_the_dialer_presents_the_peer_client_certificate(pki: Path, tmp_path: Path) -> None:  # noqa: F811
    """``--peer-client-cert-file``: what a member presents when it dials. A certificate of
    another CA, which the listener (``--peer-client-cert-auth``) does not trust, is refused
    where the member's own peer certificate passes: the dialer sent the one it was given."""
    from tests.server.test_crl import make_certs

    other = tmp_path / "other"
    make_certs(other, "x=127.0.0.1")
    listener = peer_config(pki, "m1-peer", peer_client_cert_auth=True)
    assert dial(listener, peer_config(pki, "m0-peer")) is None
    given = peer_config(pki, "m0-peer", peer_client_cert_file=str(other / "x-peer.crt"),
                        peer_client_key_file=str(other / "x-peer.key"))
    refused = dial(listener, given)
    assert refused is not None and refused.startswith("server:")


def _member(tmp_path: Path, client: int, peer: int, *extra: str) -> subprocess.Popen[bytes]:
    url = f"http://127.0.0.1:{client}"
    argv = [sys.executable, "-m", "kvraft.server.main", "--name", "m0", "--data-dir", str(tmp_path / "m0.data"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            *extra]
    with (tmp_path / "m0.log").open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_a_member_defragments_at_start_when_that_frees_enough(tmp_path: Path) -> None:
    """``--experimental-bootstrap-defrag-threshold-megabytes``: 4 MB written, deleted and
    compacted away leave the store's file large; a restart with a 1 MB threshold
    defragments it before serving, one with 1000 MB does not."""
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"

    def serving(process: subprocess.Popen[bytes]) -> bool:
        assert process.poll() is None, (tmp_path / "m0.log").read_text()
        return post(url, "/v3/kv/range", {"key": b64("x")}, timeout_s=2.0)[0] == 200

    def db_size() -> int:
        code, status = post(url, "/v3/maintenance/status", {}, timeout_s=5.0)
        assert code == 200, status
        return int(status["dbSize"])

    process = _member(tmp_path, client, peer)
    try:
        wait_until(lambda: serving(process), 60, what="the member")
        value = b64("v" * 100_000)
        for i in range(40):
            assert post(url, "/v3/kv/put", {"key": b64(f"big/{i}"), "value": value}, timeout_s=10.0)[0] == 200
        code, deleted = post(url, "/v3/kv/deleterange", {"key": b64("big/"), "range_end": b64("big0")}, timeout_s=10.0)
        assert code == 200, deleted
        revision = int(deleted["header"]["revision"])
        assert post(url, "/v3/kv/compaction", {"revision": revision, "physical": True}, timeout_s=30.0)[0] == 200
        before = db_size()
    finally:
        stop(process)
    for threshold, said in (("1000", "skipping defragmentation at start"), ("1", "defragmented at start")):
        process = _member(tmp_path, client, peer, "--experimental-bootstrap-defrag-threshold-megabytes", threshold)
        try:
            wait_until(lambda process=process: serving(process), 60, what="the member back")
            assert said in (tmp_path / "m0.log").read_text()
            after = db_size()
        finally:
            stop(process)
    assert after < before - 1_000_000, (before, after)
