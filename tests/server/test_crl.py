"""CRLs (``--client-crl-file``, ``--peer-crl-file``) in-process: what ``read_crl`` makes of a
file, the contexts of kvraft.server.tls handshaking in memory (no sockets) with a revoked,
an unrevoked and a certificate-less client, the reload on a change of the file, a garbled
file, resumed sessions, the peer dialer, and the flags' checks. The members themselves are
in test_tls_crl.py."""

from __future__ import annotations

import contextlib
import logging
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from kvraft.server import config as config_module
from kvraft.server.config import ConfigError, parse_config
from kvraft.server.crl import CRLContexts, CRLError, read_crl
from kvraft.server.tls import client_ssl_context, peer_ssl_contexts

ROOT = Path(__file__).resolve().parents[2]
MAKE_CERTS = ROOT / "deploy" / "make-certs.sh"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


REVOKED = "server: certificate revoked"


def make_certs(pki: Path, *args: str) -> None:
    subprocess.run(["bash", str(MAKE_CERTS), "-o", str(pki), "-d", "2", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """m0's certificates, clients alice and bob; ``empty.crl`` (nothing revoked) and
    ``alice.crl`` (alice's certificate revoked), ``m1-peer.crl`` (and m1's peer certificate),
    and a CA of strangers."""
    pki = tmp_path_factory.mktemp("pki")
    make_certs(pki, "-c", "alice", "-c", "bob", "m0=127.0.0.1", "m1=127.0.0.1")
    shutil.copy(pki / "ca.crl", pki / "empty.crl")
    make_certs(pki, "-r", "alice")
    shutil.copy(pki / "ca.crl", pki / "alice.crl")
    make_certs(pki, "-r", "m1-peer")
    shutil.copy(pki / "ca.crl", pki / "m1-peer.crl")
    make_certs(pki / "other", "-c", "stranger", "x=127.0.0.1")
    return pki


def replace(path: Path, source: Path) -> None:
    """Put ``source``'s bytes at ``path`` as an operator would (a new file renamed over it)."""
    tmp = path.with_suffix(".tmp")
    shutil.copy(source, tmp)
    tmp.replace(path)


def server_context(pki: Path, crl: Path | str, **extra: object) -> ssl.SSLContext:
    argv = ["--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls", "https://127.0.0.1:2379",
            "--cert-file", str(pki / "m0.crt"), "--key-file", str(pki / "m0.key"),
            "--trusted-ca-file", str(extra.get("ca", pki / "ca.crt")), "--client-cert-auth",
            "--client-crl-file", str(crl)]
    context = client_ssl_context(parse_config(argv))
    assert context is not None
    return context


def client(pki: Path, name: str | None, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.maximum_version = version
    if name is not None:
        directory = pki / "other" if name == "stranger" else pki
        context.load_cert_chain(str(directory / f"{name}.crt"), str(directory / f"{name}.key"))
    return context


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, session: ssl.SSLSession | None = None,
              hostname: str = "localhost") -> tuple[str | None, ssl.SSLObject]:
    """A TLS connection between two contexts in memory: None when it was made and a byte
    went each way (a TLS 1.3 server refuses a client certificate after the client's own
    handshake is done), else ``"server: reason"`` or ``"client: reason"``, the side that
    failed first and why (OpenSSL's verify message when a certificate did not verify).
    Closed cleanly on the server's side, as a listener does, so a TLS 1.2 session stays in
    its cache."""
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
    peer = client_ctx.wrap_bio(bios[2], bios[3], server_hostname=hostname, session=session)
    side = "client"

    def pump() -> None:
        bios[0].write(bios[3].read())
        bios[2].write(bios[1].read())

    try:
        done = {"client": False, "server": False}
        for _ in range(8):
            for side, obj in (("client", peer), ("server", server)):
                if not done[side]:
                    try:
                        obj.do_handshake()
                        done[side] = True
                    except ssl.SSLWantReadError:
                        pass
                pump()
        assert all(done.values()), "the handshake did not finish"
        side = "server"
        server.write(b"s")
        pump()
        side = "client"
        assert peer.read(1) == b"s"  # (and a TLS 1.3 client takes its session tickets)
        peer.write(b"c")
        pump()
        side = "server"
        assert server.read(1) == b"c"
        with contextlib.suppress(ssl.SSLWantReadError):  # (close_notify sent: the session is kept)
            server.unwrap()
    except ssl.SSLCertVerificationError as exc:
        return f"{side}: {exc.verify_message}", peer
    except ssl.SSLError as exc:
        return f"{side}: {exc.reason or exc}", peer
    return None, peer


def test_read_crl_counts_and_dates_what_make_certs_wrote(pki: Path) -> None:
    empty, alice = read_crl(str(pki / "empty.crl")), read_crl(str(pki / "alice.crl"))
    assert (empty.lists, empty.revoked, alice.lists, alice.revoked) == (1, 0, 1, 1)
    text = subprocess.run(["openssl", "crl", "-in", str(pki / "alice.crl"), "-noout", "-nextupdate"],
                          capture_output=True, text=True, check=True).stdout
    want = datetime.strptime(text.strip().removeprefix("nextUpdate="), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)
    assert alice.next_update == want and not alice.expired(time.time()) and alice.expired(want.timestamp() + 1)
    both = pki / "both.crl"  # one file, the CRLs of two CAs
    both.write_bytes((pki / "alice.crl").read_bytes() + (pki / "other" / "ca.crl").read_bytes())
    assert (read_crl(str(both)).lists, read_crl(str(both)).revoked) == (2, 1)


def test_read_crl_refuses_what_is_not_a_crl(pki: Path, tmp_path: Path) -> None:
    pem = (pki / "alice.crl").read_text()
    lines = pem.splitlines()
    cases = {
        "missing": (None, "is not a readable file"),
        "certificate": ((pki / "ca.crt").read_text(), "holds no PEM CRL"),
        "garbled": (pem.replace(lines[3], lines[3][::-1]), "does not parse|OpenSSL cannot load it"),
        "truncated": ("\n".join([lines[0], *lines[1:3], lines[-1]]), "does not parse"),
        "not base64": (pem.replace(lines[2], "!" * len(lines[2])), "does not parse"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.crl"
        if text is not None:
            path.write_text(text)
        with pytest.raises(CRLError, match=message):
            read_crl(str(path))


def test_a_revoked_client_certificate_fails_the_handshake_and_the_others_pass(pki: Path) -> None:
    context = server_context(pki, pki / "alice.crl")
    assert handshake(context, client(pki, "alice"))[0] == REVOKED
    assert handshake(context, client(pki, "alice", ssl.TLSVersion.TLSv1_2))[0] == REVOKED
    assert handshake(context, client(pki, "bob"))[0] is None
    # no certificate: nothing to check (CERT_OPTIONAL): the scoped-token path stays open
    assert handshake(context, client(pki, None))[0] is None
    # the CRL check makes a CRL necessary for every CA a client certificate comes from: a
    # second CA trusted (same name: make-certs.sh's CRLs name their CA's key), without its CRL
    bundle = pki / "bundle.crt"
    bundle.write_bytes((pki / "ca.crt").read_bytes() + (pki / "other" / "ca.crt").read_bytes())
    two_cas = server_context(pki, pki / "alice.crl", ca=bundle)
    assert handshake(two_cas, client(pki, "stranger"))[0] == "server: unable to get certificate CRL"
    assert handshake(server_context(pki, "", ca=bundle), client(pki, "stranger"))[0] is None  # (without a CRL)
    both = pki / "both-cas.crl"
    both.write_bytes((pki / "alice.crl").read_bytes() + (pki / "other" / "ca.crl").read_bytes())
    assert handshake(server_context(pki, both, ca=bundle), client(pki, "stranger"))[0] is None


def counting_contexts(pki: Path, path: Path, clock: Callable[[], float] = time.time) -> CRLContexts:
    """``CRLContexts`` for the client URLs' settings, counting its builds."""
    base = SimpleNamespace(cert_file=str(pki / "m0.crt"), key_file=str(pki / "m0.key"),
                           trusted_ca_file=str(pki / "ca.crt"), client_cert_auth=True, client_crl_file="",
                           cipher_suites=[], tls_min_version="TLS1.2", tls_max_version="")

    def build(crl: str) -> ssl.SSLContext:
        context = client_ssl_context(base)
        assert context is not None
        context.load_verify_locations(cafile=crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        return context

    return CRLContexts("--client-crl-file", str(path), "client URLs", build, clock)


def test_a_changed_file_is_read_by_the_next_handshake_once_and_replaces_the_old_list(pki: Path, tmp_path) -> None:
    path = tmp_path / "client.crl"
    replace(path, pki / "empty.crl")
    crl = counting_contexts(pki, path)
    listener = crl.serving()
    for _ in range(3):
        assert handshake(listener, client(pki, "alice"))[0] is None
    assert crl.builds == 1  # nothing changed: no build
    replace(path, pki / "alice.crl")  # alice revoked while serving
    for _ in range(3):
        assert handshake(listener, client(pki, "alice"))[0] == REVOKED
        assert handshake(listener, client(pki, "bob"))[0] is None
    assert crl.builds == 2  # once per change
    path.write_bytes((pki / "empty.crl").read_bytes())  # in place this time (same inode)
    # the new store replaces the old one, it is not added to it: alice is back
    assert handshake(listener, client(pki, "alice"))[0] is None
    assert crl.builds == 3


def test_a_garbled_or_missing_file_keeps_the_last_good_list_and_says_so(pki: Path, tmp_path, caplog) -> None:
    path = tmp_path / "client.crl"
    replace(path, pki / "alice.crl")
    crl = counting_contexts(pki, path)
    listener = crl.serving()
    caplog.set_level(logging.INFO, "kvraft.tls")
    path.write_text((pki / "empty.crl").read_text()[:200])  # a half-written empty list
    for _ in range(3):
        assert handshake(listener, client(pki, "alice"))[0] == REVOKED
        assert handshake(listener, client(pki, "bob"))[0] is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "the list loaded before stays in force" in errors[0].getMessage()
    assert str(path) in errors[0].getMessage() and crl.builds == 1
    path.unlink()
    assert handshake(listener, client(pki, "alice"))[0] == REVOKED
    assert "is not a readable file" in caplog.records[-1].getMessage()
    replace(path, pki / "empty.crl")
    assert handshake(listener, client(pki, "alice"))[0] is None
    assert "reloaded for the client URLs: 0 revoked" in caplog.records[-1].getMessage()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_a_session_resumed_from_before_a_change_is_refused(pki: Path, tmp_path, version) -> None:
    """Resuming a TLS session skips the certificate check: a session alice got before her
    certificate was revoked would let her in. One older than the list in force is refused."""
    path = tmp_path / "client.crl"
    replace(path, pki / "empty.crl")
    now = [time.time() - 5]  # the list was loaded before the sessions below were made
    listener = counting_contexts(pki, path, lambda: now[0]).serving()
    alice = client(pki, "alice", version)
    error, first = handshake(listener, alice)
    assert error is None and not first.session_reused
    error, second = handshake(listener, alice, first.session)
    assert error is None and second.session_reused  # (resumption works: the test can fail)
    now[0] = time.time()
    replace(path, pki / "alice.crl")
    assert handshake(listener, alice, second.session)[0] == "server: CALLBACK_FAILED"
    assert handshake(listener, alice)[0] == REVOKED


def peer(pki: Path, name: str, crl: Path) -> tuple[ssl.SSLContext, Callable[[], ssl.SSLContext]]:
    server, dialer = peer_ssl_contexts(SimpleNamespace(
        peer_cert_file=str(pki / f"{name}-peer.crt"), peer_key_file=str(pki / f"{name}-peer.key"),
        peer_trusted_ca_file=str(pki / "ca.crt"), peer_client_cert_auth=True, peer_crl_file=str(crl),
        cipher_suites=[], tls_min_version="TLS1.2", tls_max_version="", peer_auto_tls=False, data_dir=str(pki),
        discovery_srv="", peer_skip_client_san_verification=False,
            peer_client_cert_file="", peer_client_key_file=""))
    assert server is not None and callable(dialer)
    return server, dialer


def test_the_peer_listener_and_the_peer_dialer_both_refuse_a_revoked_member(pki: Path, tmp_path) -> None:
    """m1's peer certificate revoked while both run: m0 refuses it when m1 dials (listener),
    and does not dial m1 (dialer; etcd checks only what it accepts)."""
    path = tmp_path / "peer.crl"
    replace(path, pki / "empty.crl")
    m0_server, m0_dial = peer(pki, "m0", path)
    m1_server, m1_dial = peer(pki, "m1", path)
    assert handshake(m0_server, m1_dial())[0] is None and handshake(m1_server, m0_dial())[0] is None
    replace(path, pki / "m1-peer.crl")
    assert handshake(m0_server, m1_dial())[0] == REVOKED  # refused by m0's listener
    assert handshake(m1_server, m0_dial())[0] == "client: certificate revoked"  # refused by m0's dialer


def test_a_crl_past_its_next_update_is_logged_once(pki: Path, tmp_path, caplog) -> None:
    path = tmp_path / "client.crl"
    replace(path, pki / "empty.crl")
    later = [time.time()]
    crl = counting_contexts(pki, path, lambda: later[0])
    caplog.set_level(logging.INFO, "kvraft.tls")
    crl.current()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert crl.crl.next_update is not None
    later[0] = crl.crl.next_update.timestamp() + 60
    for _ in range(3):
        crl.current()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "is past its next update" in errors[0]


def test_crl_flags_are_checked(pki: Path, tmp_path, monkeypatch) -> None:
    cert, key, ca, crl = (str(pki / n) for n in ("m0.crt", "m0.key", "ca.crt", "alice.crl"))
    https = ["--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls", "https://127.0.0.1:2379",
             "--cert-file", cert, "--key-file", key]
    peers = ["--listen-peer-urls", "https://127.0.0.1:2380", "--initial-advertise-peer-urls", "https://127.0.0.1:2380",
             "--peer-cert-file", cert, "--peer-key-file", key]
    ok = parse_config([*https, "--trusted-ca-file", ca, "--client-cert-auth", "--client-crl-file", crl,
                       *peers, "--peer-trusted-ca-file", ca, "--peer-crl-file", crl])
    assert (ok.client_crl_file, ok.peer_crl_file) == (crl, crl)
    metrics_only = ["--listen-metrics-urls", "https://127.0.0.1:2381", "--cert-file", cert, "--key-file", key]
    assert parse_config([*metrics_only, "--trusted-ca-file", ca, "--client-crl-file", crl]).client_crl_file == crl
    not_a_crl = tmp_path / "garbled.crl"
    not_a_crl.write_text("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    bad = {
        "no https:// URL in --listen-client-urls or --listen-metrics-urls": ["--client-crl-file", crl],
        "--client-crl-file needs --trusted-ca-file": [*https, "--client-crl-file", crl],
        "--peer-crl-file set but the peer URLs are http://": ["--peer-crl-file", crl],
        "--peer-crl-file needs --peer-trusted-ca-file": [*peers, "--peer-crl-file", crl],
        "--client-crl-file: .*missing.crl is not a readable file": [*https, "--trusted-ca-file", ca,
                                                                    "--client-crl-file", str(tmp_path / "missing.crl")],
        "--peer-crl-file: .*holds no PEM CRL": [*peers, "--peer-trusted-ca-file", ca, "--peer-crl-file", ca],
        "--client-crl-file: .*does not parse": [*https, "--trusted-ca-file", ca, "--client-crl-file", str(not_a_crl)],
    }
    for message, argv in bad.items():
        with pytest.raises(ConfigError, match=message):
            parse_config(argv)
    later = read_crl(crl).next_update
    assert later is not None
    monkeypatch.setattr(config_module, "time", SimpleNamespace(time=lambda: later.timestamp() + 1))
    with pytest.raises(ConfigError, match="--client-crl-file: .* is past its next update"):
        parse_config([*https, "--trusted-ca-file", ca, "--client-crl-file", crl])
    monkeypatch.undo()
    nested = tmp_path / "etcd.yaml"  # etcd's YAML: crl-file in either transport-security section
    nested.write_text(f"listen-client-urls: https://127.0.0.1:2379\nadvertise-client-urls: https://127.0.0.1:2379\n"
                      f"listen-peer-urls: https://127.0.0.1:2380\ninitial-advertise-peer-urls: https://127.0.0.1:2380\n"
                      f"client-transport-security:\n  cert-file: {cert}\n  key-file: {key}\n"
                      f"  trusted-ca-file: {ca}\n  crl-file: {crl}\n"
                      f"peer-transport-security:\n  cert-file: {cert}\n  key-file: {key}\n"
                      f"  trusted-ca-file: {ca}\n  crl-file: {pki / 'empty.crl'}\n")
    loaded = parse_config(["--config-file", str(nested)])
    assert (loaded.client_crl_file, loaded.peer_crl_file) == (crl, str(pki / "empty.crl"))
    flat = tmp_path / "flat.yaml"
    flat.write_text(nested.read_text().replace("  crl-file:", "  trusted-ca-file:") + f"client-crl-file: {crl}\n")
    assert parse_config(["--config-file", str(flat)]).client_crl_file == crl
