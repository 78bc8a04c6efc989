"""kvraft.server.tls_accept in-process: a listener made with ``accepting`` serves a good
client as ``create_server(ssl=...)`` would, logs a refused handshake (a stranger's
certificate, plain HTTP on the https port) with the address and OpenSSL's reason, counts
without a warning a connection that closes before its handshake ends, and logs one line per
host, listener and reason every ``LOG_EVERY_S`` with the count of those it left out. The real
members: test_tls_crl.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from kvraft.server.tls_accept import LOG_EVERY_S, HandshakeFailures, accepting, reason_of

ROOT = Path(__file__).resolve().parents[2]
MAKE_CERTS = ROOT / "deploy" / "make-certs.sh"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pki = tmp_path_factory.mktemp("pki")
    subprocess.run(["bash", str(MAKE_CERTS), "-o", str(pki), "-d", "2", "-c", "bob", "m0=127.0.0.1"], check=True,
                   capture_output=True)
    subprocess.run(["bash", str(MAKE_CERTS), "-o", str(pki / "other"), "-d", "2", "-c", "stranger", "x=127.0.0.1"],
                   check=True, capture_output=True)
    return pki


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        cert = transport.get_extra_info("peercert")
        self.who = dict(item[0] for item in cert["subject"])["commonName"] if cert else "-"

    def data_received(self, data: bytes) -> None:
        self.transport.write(self.who.encode() + b":" + data)  # type: ignore[attr-defined]


async def serve(pki: Path, failures: HandshakeFailures) -> tuple[asyncio.Server, int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "m0.crt"), str(pki / "m0.key"))
    context.verify_mode = ssl.CERT_REQUIRED
    factory, plain = accepting(Echo, context, "client", failures)
    assert plain is None
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def client(pki: Path, who: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    directory = pki / "other" if who == "stranger" else pki
    context.load_cert_chain(str(directory / f"{who}.crt"), str(directory / f"{who}.key"))
    return context


async def talk(port: int, context: ssl.SSLContext | None, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                   server_hostname="127.0.0.1" if context else None)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(100), 10)
    finally:
        writer.close()


async def settle(failures: HandshakeFailures, total: int) -> None:
    for _ in range(200):
        if sum(failures.counts.values()) >= total:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"counted {failures.counts}, expected {total} failures")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_good_client_is_served_and_refusals_are_logged_and_counted(pki: Path, caplog, loop: str) -> None:
    """On both event loops (a member runs on uvloop): their start_tls differ in the details."""
    caplog.set_level(logging.DEBUG, "kvraft.tls")
    if loop == "uvloop":
        import uvloop

        uvloop.run(exercise(pki, caplog))
    else:
        asyncio.run(exercise(pki, caplog))


async def exercise(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    failures = HandshakeFailures()
    server, port = await serve(pki, failures)
    async with server:
        assert await talk(port, client(pki, "bob"), b"hi") == b"bob:hi"
        assert failures.counts == {}
        # a certificate from another CA: refused by the listener (the client sees the cut: in
        # TLS 1.3 its own handshake is over by then, so it reads an EOF)
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            assert await talk(port, client(pki, "stranger"), b"hi") == b""
        # plain HTTP sent to the https port
        assert await talk(port, None, b"GET / HTTP/1.1\r\n\r\n") == b""
        # a TCP connection closed before its handshake ends: counted, not warned about
        probe = socket.create_connection(("127.0.0.1", port))
        probe.close()
        await settle(failures, 3)
        assert await talk(port, client(pki, "bob"), b"again") == b"bob:again"  # (still serving)
    assert failures.counts[("client", "certificate_verify_failed")] == 1
    assert failures.counts[("client", "http_request")] == 1
    assert sum(failures.counts.values()) == 3, failures.counts
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("rejected connection on the client URL from 127.0.0.1:")
    assert warnings[0].endswith(": certificate verify failed: unable to get local issuer certificate")
    assert warnings[1].endswith(": http request")
    assert [r for r in caplog.records if r.levelno == logging.DEBUG and "ended" in r.getMessage()]


def test_one_line_per_host_listener_and_reason_every_interval(caplog) -> None:
    caplog.set_level(logging.WARNING, "kvraft.tls")
    now = [100.0]
    failures = HandshakeFailures(clock=lambda: now[0])
    bad = ssl.SSLError(1, "x")
    bad.reason = "CERTIFICATE_VERIFY_FAILED"
    for port in range(5):  # a burst from one host
        failures.refused("peer", ("10.0.0.9", 4000 + port), bad)
    failures.refused("client", ("10.0.0.9", 5000), bad)  # another listener: its own line
    failures.refused("peer", ("10.0.0.7", 5000), bad)  # another host: its own line
    assert len(caplog.records) == 3
    now[0] += LOG_EVERY_S
    failures.refused("peer", ("10.0.0.9", 4100), bad)
    assert len(caplog.records) == 4
    assert caplog.records[-1].getMessage().endswith("(4 more from 10.0.0.9 since the last line)")
    assert failures.counts == {("peer", "certificate_verify_failed"): 7, ("client", "certificate_verify_failed"): 1}


@pytest.mark.parametrize(("exc", "expected"), [
    (ConnectionResetError(), ("connection_lost", False)),
    (ConnectionAbortedError("SSL handshake is taking longer than 60.0 seconds: aborting the connection"),
     ("timeout", False)),
    (TimeoutError(), ("timeout", False)),
])
def test_reasons_of_connections_that_merely_ended(exc: BaseException, expected: tuple[str, bool]) -> None:
    assert reason_of(exc) == expected
