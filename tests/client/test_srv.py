"""DNS SRV discovery (kvraft/client/srv.py): etcd's GetCluster / GetDNSClusterNames / GetClient cases
on a table resolver, then the dnspython resolver against a real DNS server on 127.0.0.1."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from kvraft.client.srv import (
    DiscoveryError,
    DNSResolver,
    SRVRecord,
    client_endpoints,
    cluster_from_srv,
    dns_cluster,
    order_by_priority,
    srv_service,
)
from kvraft.testing.dns import FakeDNS, TableResolver

HOSTS = {"10.0.0.1": "10.0.0.1", "1.example.com": "10.0.0.1", "2.example.com": "10.0.0.2",
         "3.example.com": "10.0.0.3"}


@pytest.mark.parametrize(
    ("records", "advertise", "want"),
    [
        # no record is this member: all get temporary names
        ([SRVRecord("10.0.0.1", 2480)], ["http://127.0.0.1:2379"], ["0=http://10.0.0.1:2480"]),
        # the second record is this member (by its address, its URL is the record's)
        ([SRVRecord("1.example.com.", 2480), SRVRecord("2.example.com.", 2480),
          SRVRecord("3.example.com.", 2480)],
         ["http://10.0.0.2:2480"],
         ["0=http://1.example.com:2480", "dnsClusterTest=http://2.example.com:2480", "1=http://3.example.com:2480"]),
        # the same address on another port is not this member
        ([SRVRecord("1.example.com.", 2480), SRVRecord("2.example.com.", 2480)],
         ["http://10.0.0.1:2380"],
         ["0=http://1.example.com:2480", "1=http://2.example.com:2480"]),
        # advertised by name: resolved too
        ([SRVRecord("1.example.com.", 2480), SRVRecord("3.example.com.", 2480)],
         ["http://3.example.com:2480"],
         ["0=http://1.example.com:2480", "dnsClusterTest=http://3.example.com:2480"]),
        # a target that does not resolve is skipped
        ([SRVRecord("1.example.com.", 2480), SRVRecord("nowhere.example.com.", 2480)],
         ["http://10.0.0.1:2480"],
         ["dnsClusterTest=http://1.example.com:2480"]),
    ],
)
def test_cluster_from_srv_names_this_member_by_address(records, advertise, want):
    resolver = TableResolver({"_etcd-server._tcp.example.com": records}, HOSTS)
    assert cluster_from_srv(resolver, "http", "etcd-server", "dnsClusterTest", "example.com", advertise) == want


def test_a_scheme_mismatch_with_this_member_is_an_error_when_nothing_else_is_left():
    resolver = TableResolver({"_etcd-server-ssl._tcp.example.com": [SRVRecord("1.example.com.", 2380)]}, HOSTS)
    with pytest.raises(DiscoveryError) as info:
        cluster_from_srv(resolver, "https", "etcd-server-ssl", "infra0", "example.com", ["http://10.0.0.1:2380"])
    assert str(info.value) == ("error querying DNS SRV records for _etcd-server-ssl bootstrap at "
                               "https://1.example.com:2380 from DNS for etcd-server-ssl has scheme mismatch with "
                               "expected peer http://10.0.0.1:2380")


def test_no_records_is_an_error_naming_the_service():
    resolver = TableResolver({}, HOSTS)
    with pytest.raises(DiscoveryError, match="error querying DNS SRV records for _etcd-server lookup "
                                             "_etcd-server._tcp.example.com: no such host"):
        cluster_from_srv(resolver, "http", "etcd-server", "a", "example.com", ["http://10.0.0.1:2380"])


def test_dns_cluster_joins_https_then_http_and_keeps_both_errors():
    resolver = TableResolver({
        "_etcd-server-ssl-blue._tcp.example.com": [SRVRecord("1.example.com.", 2380)],
        "_etcd-server-blue._tcp.example.com": [SRVRecord("2.example.com.", 2380)],
    }, HOSTS)
    entries, errors = dns_cluster(resolver, "infra0", "example.com", "blue", ["https://10.0.0.1:2380"])
    assert entries == ["infra0=https://1.example.com:2380", "0=http://2.example.com:2380"]
    assert errors == []
    assert resolver.asked == ["_etcd-server-ssl-blue._tcp.example.com", "_etcd-server-blue._tcp.example.com"]
    entries, errors = dns_cluster(resolver, "infra0", "example.com", "", ["https://10.0.0.1:2380"])
    assert entries == [] and len(errors) == 2


@pytest.mark.parametrize(
    ("service", "name", "scheme", "want"),
    [("etcd-client", "", "http", "etcd-client"), ("etcd-client", "", "https", "etcd-client-ssl"),
     ("etcd-client", "blue", "http", "etcd-client-blue"), ("etcd-client", "blue", "https", "etcd-client-ssl-blue")],
)
def test_srv_service(service, name, scheme, want):
    assert srv_service(service, name, scheme) == want


def test_client_endpoints_https_first_and_one_failed_lookup_is_fine():
    resolver = TableResolver({
        "_etcd-client-ssl._tcp.example.com": [SRVRecord("1.example.com.", 2379)],
        "_etcd-client._tcp.example.com": [SRVRecord("2.example.com.", 2379), SRVRecord("3.example.com.", 2379)],
    }, HOSTS)
    assert client_endpoints(resolver, "example.com") == [
        "https://1.example.com:2379", "http://2.example.com:2379", "http://3.example.com:2379"]
    only_http = TableResolver({"_etcd-client._tcp.example.com": [SRVRecord("2.example.com.", 2379)]}, HOSTS)
    assert client_endpoints(only_http, "example.com") == ["http://2.example.com:2379"]
    with pytest.raises(DiscoveryError, match="^dns lookup errors: lookup _etcd-client-ssl._tcp.example.com: "
                                             "no such host and lookup _etcd-client._tcp.example.com: no such host$"):
        client_endpoints(TableResolver({}, HOSTS), "example.com")


def test_order_by_priority_is_rfc_2782():
    records = [SRVRecord("c.", 1, priority=20, weight=0), SRVRecord("a.", 1, priority=10, weight=90),
               SRVRecord("b.", 1, priority=10, weight=10)]
    firsts = Counter()
    for seed in range(400):
        ordered = order_by_priority(records, random.Random(seed))
        assert ordered[-1].target == "c."  # the lower priority number always first
        firsts[ordered[0].target] += 1
    assert firsts["a."] > 3 * firsts["b."] > 0  # weight 90 against 10
    zero = [SRVRecord(f"{i}.", 1) for i in range(5)]
    assert sorted(order_by_priority(zero, random.Random(1)), key=lambda r: r.target) == zero


# -- the dnspython resolver against a DNS server on 127.0.0.1 ------------------------------------


def test_dns_resolver_answers_srv_and_addresses_from_the_named_server():
    with FakeDNS() as server:
        server.add_srv("_etcd-server._tcp.kvraft.test", "m1.kvraft.test", 2380, priority=10)
        server.add_srv("_etcd-server._tcp.kvraft.test", "m2.kvraft.test", 2381, priority=5)
        server.add_address("m1.kvraft.test", "127.0.0.1")
        server.add_address("v6.kvraft.test", "::1")
        server.add_address("localhost", "127.0.0.1")
        resolver = DNSResolver(server.address)
        assert resolver.srv("_etcd-server._tcp.kvraft.test") == [
            SRVRecord("m2.kvraft.test.", 2381, 5, 0), SRVRecord("m1.kvraft.test.", 2380, 10, 0)]
        assert resolver.address("m1.kvraft.test.") == "127.0.0.1"
        assert resolver.address("v6.kvraft.test") == "::1"
        assert resolver.address("localhost.") == "127.0.0.1"
        assert resolver.address("[::1]") == "::1"
        with pytest.raises(DiscoveryError, match=r"^lookup _etcd-server-ssl._tcp.kvraft.test on 127.0.0.1:\d+: "
                                                 r"no such host$"):
            resolver.srv("_etcd-server-ssl._tcp.kvraft.test")
        with pytest.raises(DiscoveryError, match="no SRV records"):
            resolver.srv("m1.kvraft.test")
        with pytest.raises(DiscoveryError, match=r"^lookup nowhere.invalid on 127.0.0.1:\d+: no such host$"):
            resolver.address("nowhere.invalid.")  # (that server alone: never the system's DNS)
    assert ("nowhere.invalid.", "AAAA") in server.questions


def test_dns_resolver_times_out_with_an_error_not_a_hang(monkeypatch):
    monkeypatch.setattr("kvraft.client.srv.LOOKUP_TIMEOUT_S", 0.5)
    server = FakeDNS()  # bound, never started: nothing answers
    try:
        with pytest.raises(DiscoveryError, match="i/o timeout"):
            DNSResolver(server.address).srv("_etcd-server._tcp.kvraft.test")
    finally:
        server.stop()


def test_without_a_named_server_addresses_come_from_getaddrinfo():
    asked = []

    def getaddrinfo(host, port, type):  # noqa: A002 - socket.getaddrinfo's keyword
        asked.append(host)
        return [(10, 1, 6, "", ("::1", 0, 0, 0)), (2, 1, 6, "", ("127.0.0.1", 0))]

    resolver = DNSResolver("", getaddrinfo=getaddrinfo)
    assert resolver.address("db.example.") == "127.0.0.1"  # IPv4 first, as Go's ResolveTCPAddr
    assert resolver.address("10.1.2.3") == "10.1.2.3" and asked == ["db.example"]


@pytest.mark.parametrize("value", ["kvraft.test", "127.0.0.1:x", "999.1.1.1"])
def test_a_bad_dns_server_setting_is_refused(value):
    with pytest.raises(DiscoveryError, match="KVRAFT_DNS_SERVER"):
        DNSResolver(value)


def test_the_environment_names_the_server(monkeypatch):
    monkeypatch.setenv("KVRAFT_DNS_SERVER", "127.0.0.1:5353")
    assert DNSResolver().server == "127.0.0.1:5353"
    assert DNSResolver("").server == ""
