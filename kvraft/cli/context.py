"""What every command gets: global options (a frozen dataclass), the printer, the streams,
and clients opened on demand."""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass, field
from typing import TextIO

from kvraft.cli.errors import EXIT_BAD_CONNECTION, EXIT_ERROR, CommandError, server_error_text
from kvraft.cli.printers import Printer, make_printer
from kvraft.client import Client, EndpointError, ServerError, TLSConfig

__all__ = ["DEFAULT_ENDPOINT", "Context", "GlobalOptions", "ask_password", "env"]

DEFAULT_ENDPOINT = "127.0.0.1:2379"


def ask_password(prompt: str) -> str:
    """A password from the terminal (or stdin without one); the end of the input is an
    empty answer, as etcdctl's prompt reads it, not an EOFError."""
    try:
        return getpass.getpass(prompt)
    except EOFError:
        sys.stderr.write("\n")  # getpass wrote the prompt there, without the line's end
        return ""


@dataclass(frozen=True)
class GlobalOptions:
    """etcdctl's global flags (and ``--encoding``, kvctl's own)."""

    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    user: str | None = None
    password: str | None = None
    dial_timeout_s: float = 2.0
    command_timeout_s: float = 5.0
    keepalive_time_s: float | None = 1.0  # (etcdctl's 2s and 6s would let a frozen member
    keepalive_timeout_s: float = 2.0  # use up the whole 5 s command timeout: docs/kvctl.md)
    write_out: str = "simple"
    hex_output: bool = False
    encoding: str = "auto"
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure_skip_tls_verify: bool = False
    token: str | None = None  # kvctl's own: a scoped token (docs/design/auth.md)
    server_name: str | None = None  # the SRV domain, with --insecure-discovery=false (as etcdctl)
    max_request_bytes: int = 2 * 1024 * 1024  # etcdctl 3.6's --max-request-bytes (clientv3's default)
    max_recv_bytes: int = 2**31 - 1  # --max-recv-bytes (math.MaxInt32)

    def tls(self) -> TLSConfig | None:
        """A ``TLSConfig`` when any TLS flag is set (then bare endpoints mean https)."""
        if not (self.cacert or self.cert or self.key or self.insecure_skip_tls_verify or self.server_name):
            return None
        return TLSConfig(self.cacert, self.cert, self.key, self.insecure_skip_tls_verify, self.server_name)


@dataclass
class Context:
    options: GlobalOptions
    stdin: TextIO
    stdout: TextIO
    stderr: TextIO
    _printer: Printer | None = None
    _clients: dict[tuple[str, ...], Client] = field(default_factory=dict)

    @property
    def printer(self) -> Printer:
        if self._printer is None:
            self._printer = make_printer(self.options.write_out, self.stdout, self.stderr,
                                         hex_output=self.options.hex_output)
        return self._printer

    def credentials(self) -> tuple[str | None, str | None]:
        user, password = self.options.user, self.options.password
        if user is None:
            return None, None
        if password is None:
            if ":" in user:
                user, password = user.split(":", 1)
            else:
                password = ask_password("Password: ")
        elif ":" in user:
            raise CommandError(EXIT_ERROR, "--user option shouldn't include password when --password is set")
        if not user or not password:  # clientv3 logs in only with a name and a password
            return None, None
        return user, password

    async def client(self, endpoints: tuple[str, ...] | None = None) -> Client:
        """A client on the global endpoints (or on ``endpoints``), opened once and cached."""
        targets = endpoints or self.options.endpoints
        if targets in self._clients:
            return self._clients[targets]
        user, password = self.credentials()
        if user is not None and self.options.token:
            raise CommandError(EXIT_ERROR, "--user and --token are mutually exclusive")
        client = Client(list(targets), encoding=self.options.encoding, user=user, password=password,
                        dial_timeout_s=self.options.dial_timeout_s,
                        request_timeout_s=self.options.command_timeout_s, tls=self.options.tls(),
                        token=self.options.token, keepalive_time_s=self.options.keepalive_time_s,
                        keepalive_timeout_s=self.options.keepalive_timeout_s,
                        max_send_bytes=self.options.max_request_bytes, max_recv_bytes=self.options.max_recv_bytes)
        try:
            await client.open()
        except EndpointError as exc:
            await client.close()
            raise CommandError(EXIT_ERROR, f"context deadline exceeded\n{_detail(exc)}") from None
        except ServerError as exc:
            await client.close()
            raise CommandError(EXIT_BAD_CONNECTION, server_error_text(exc.code, exc.message)) from None
        except BaseException:
            await client.close()
            raise
        self._clients[targets] = client
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def _detail(exc: EndpointError) -> str:
    text = str(exc)
    return text[len("context deadline exceeded ") :].strip("()") if text.startswith("context deadline") else text


def env(name: str) -> str | None:
    """``KVCTL_<NAME>`` first, then etcdctl's ``ETCDCTL_<NAME>``."""
    return os.environ.get("KVCTL_" + name) or os.environ.get("ETCDCTL_" + name)
