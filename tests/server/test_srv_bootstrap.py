"""``--discovery-srv`` at a member's start (kvraft/server/srv_bootstrap.py), on a table
resolver; tests/server/test_discovery_srv.py runs member processes against a DNS server."""

from __future__ import annotations

import pytest

from kvraft.client.srv import DiscoveryError, SRVRecord
from kvraft.server.config import ConfigError, member_id_for, parse_config
from kvraft.server.srv_bootstrap import bootstrap_from_srv
from kvraft.testing.dns import TableResolver

HOSTS = {"infra0.example.com": "10.0.0.1", "infra1.example.com": "10.0.0.2", "infra2.example.com": "10.0.0.3"}
RECORDS = [SRVRecord(f"infra{i}.example.com.", 2380) for i in range(3)]


def config(tmp_path, *extra: str, name: str = "infra1", advertise: str = "http://10.0.0.2:2380"):
    return parse_config(["--name", name, "--data-dir", str(tmp_path / name), "--discovery-srv", "example.com",
                         "--initial-advertise-peer-urls", advertise, "--listen-peer-urls", "http://10.0.0.2:2380",
                         *extra])


def test_the_records_become_the_initial_cluster_and_every_member_computes_the_same_ids(tmp_path):
    resolver = TableResolver({"_etcd-server._tcp.example.com": RECORDS}, HOSTS)
    ids = []
    for index in range(3):
        cfg = config(tmp_path, name=f"infra{index}", advertise=f"http://10.0.0.{index + 1}:2380")
        entries = bootstrap_from_srv(cfg, resolver)
        assert entries[index] == f"infra{index}=http://infra{index}.example.com:2380"
        members = cfg.initial_members()
        assert members[f"infra{index}"] == [f"http://infra{index}.example.com:2380"]
        ids.append(sorted(member_id_for(urls, cfg.initial_cluster_token) for urls in members.values()))
    assert ids[0] == ids[1] == ids[2]  # one cluster, though each named the others 0 and 1


def test_advertised_by_name_as_in_etcds_guide(tmp_path):
    resolver = TableResolver({"_etcd-server._tcp.example.com": RECORDS}, HOSTS)
    cfg = config(tmp_path, advertise="http://infra1.example.com:2380")
    bootstrap_from_srv(cfg, resolver)
    assert cfg.initial_members()["infra1"] == ["http://infra1.example.com:2380"]


def test_a_member_the_records_do_not_name_does_not_start(tmp_path):
    resolver = TableResolver({"_etcd-server._tcp.example.com": RECORDS}, HOSTS)
    cfg = config(tmp_path, advertise="http://10.0.0.9:2380")
    with pytest.raises(DiscoveryError, match='^cannot find local etcd member "infra1" in SRV records'):
        bootstrap_from_srv(cfg, resolver)
    assert cfg.initial_cluster == ""


def test_no_records_is_etcds_error_with_the_https_lookup_first(tmp_path):
    cfg = config(tmp_path)
    with pytest.raises(DiscoveryError) as info:
        bootstrap_from_srv(cfg, TableResolver({}, HOSTS))
    assert str(info.value) == ("error setting up initial cluster: error querying DNS SRV records for _etcd-server-ssl "
                               "lookup _etcd-server-ssl._tcp.example.com: no such host")


def test_the_service_name_suffix(tmp_path):
    resolver = TableResolver({"_etcd-server-blue._tcp.example.com": RECORDS}, HOSTS)
    cfg = config(tmp_path, "--discovery-srv-name", "blue")
    bootstrap_from_srv(cfg, resolver)
    assert resolver.asked == ["_etcd-server-ssl-blue._tcp.example.com", "_etcd-server-blue._tcp.example.com"]


def test_https_records_need_https_peers(tmp_path):
    resolver = TableResolver({"_etcd-server-ssl._tcp.example.com": RECORDS[1:2]}, HOSTS)
    with pytest.raises(DiscoveryError, match="scheme mismatch with expected peer http://10.0.0.2:2380"):
        bootstrap_from_srv(config(tmp_path), resolver)
    resolver = TableResolver({"_etcd-server-ssl._tcp.example.com": RECORDS}, HOSTS)  # (as etcd: the others stay)
    with pytest.raises(DiscoveryError, match='cannot find local etcd member "infra1"'):
        bootstrap_from_srv(config(tmp_path), resolver)
    mixed = TableResolver({"_etcd-server-ssl._tcp.example.com": RECORDS[:1],
                           "_etcd-server._tcp.example.com": RECORDS[1:]}, HOSTS)
    with pytest.raises(ConfigError, match="^--discovery-srv example.com: peer URLs mix http:// and https://"):
        bootstrap_from_srv(config(tmp_path), mixed)


def test_a_member_whose_data_dir_holds_its_cluster_does_not_look(tmp_path):
    resolver = TableResolver({}, HOSTS)
    cfg = config(tmp_path)
    (tmp_path / "infra1").mkdir()
    (tmp_path / "infra1" / "members.json").write_text("{}")
    assert bootstrap_from_srv(cfg, resolver) == [] and resolver.asked == []


def test_without_the_flag_nothing_is_looked_up(tmp_path):
    resolver = TableResolver({}, HOSTS)
    cfg = parse_config(["--name", "a", "--data-dir", str(tmp_path / "a")])
    assert bootstrap_from_srv(cfg, resolver) == [] and resolver.asked == []


def test_static_initial_cluster_by_name_matches_advertised_addresses_as_etcd(tmp_path):
    """etcd compares a member's --initial-cluster URLs with its advertised ones after resolving
    both; the strings alone decided before (the mismatch error stays for other addresses)."""
    cfg = parse_config(["--name", "infra1", "--data-dir", str(tmp_path / "d"),
                        "--initial-cluster", "infra1=http://localhost:2380",
                        "--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
    cfg.check_advertise_matches_cluster(lambda host: {"localhost": "127.0.0.1"}.get(host, host))
    with pytest.raises(ConfigError, match=r"missing from --initial-advertise-peer-urls=http://127.0.0.2:2380 "
                                          r"\(failed to resolve: lookup nowhere"):
        cfg.initial_cluster = "infra1=http://nowhere:2380"
        cfg.initial_advertise_peer_urls = ["http://127.0.0.2:2380"]

        def resolve(host: str) -> str:
            if host == "nowhere":
                raise DiscoveryError("lookup nowhere: no such host")
            return host

        cfg.check_advertise_matches_cluster(resolve)
