"""DNS for tests. ``FakeDNS``: a DNS server on 127.0.0.1 (UDP, a free port) answering SRV, A
and AAAA questions from a table, in a thread, so that in-process code and member processes
(through ``KVRAFT_DNS_SERVER``) resolve the same names. ``TableResolver``: the same lookups
answered in process, without DNS.

    with FakeDNS() as dns_server:
        dns_server.add_srv("_etcd-server._tcp.kvraft.test.", "localhost.", 2380)
        env = {"KVRAFT_DNS_SERVER": dns_server.address}

FakeDNS: a name in the table without the asked type gets an empty answer; any other name
NXDOMAIN.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections import defaultdict
from types import TracebackType

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from kvraft.client.srv import DiscoveryError, SRVRecord

__all__ = ["FakeDNS", "TableResolver"]


class FakeDNS:
    def __init__(self, ttl: int = 0) -> None:
        self.ttl = ttl
        self.records: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.questions: list[tuple[str, str]] = []
        """Every question asked, as (name, type), in order."""
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-dns", daemon=True)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, for ``KVRAFT_DNS_SERVER``."""
        host, port = self._sock.getsockname()
        return f"{host}:{port}"

    @staticmethod
    def _absolute(name: str) -> str:
        return name.lower() if name.endswith(".") else name.lower() + "."

    def add_srv(self, name: str, target: str, port: int, priority: int = 0, weight: int = 0) -> None:
        with self._lock:
            self.records[self._absolute(name)]["SRV"].append(f"{priority} {weight} {port} {self._absolute(target)}")

    def add_address(self, name: str, ip: str) -> None:
        with self._lock:
            self.records[self._absolute(name)]["AAAA" if ":" in ip else "A"].append(ip)

    def clear(self, name: str) -> None:
        with self._lock:
            self.records.pop(self._absolute(name), None)

    def start(self) -> FakeDNS:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> FakeDNS:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
            except Exception:  # (not a DNS message: nothing to answer)
                continue
            self._sock.sendto(self._answer(query).to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        for question in query.question:
            name = question.name.to_text().lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            with self._lock:
                self.questions.append((name, rdtype))
                known = name in self.records
                values = list(self.records[name].get(rdtype, [])) if known else []
            if not known:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif values:
                response.answer.append(dns.rrset.from_text_list(name, self.ttl, "IN", rdtype, values))
        return response


class TableResolver:
    """A ``kvraft.client.srv.Resolver`` answering from dicts, in process: SRV name -> records,
    host (without its trailing dot) -> address; an IP address resolves to itself. ``asked``
    lists the SRV names looked up."""

    def __init__(self, srv: dict[str, list[SRVRecord]], hosts: dict[str, str]) -> None:
        self._srv, self._hosts = srv, hosts
        self.asked: list[str] = []

    def srv(self, name: str) -> list[SRVRecord]:
        self.asked.append(name)
        if name not in self._srv:
            raise DiscoveryError(f"lookup {name}: no such host")
        return self._srv[name]

    def address(self, host: str) -> str:
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(host))
        try:
            return self._hosts[host.rstrip(".")]
        except KeyError:
            raise DiscoveryError(f"lookup {host}: no such host") from None
