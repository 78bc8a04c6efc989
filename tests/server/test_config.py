"""Flags and YAML config: etcd's names and defaults."""

from __future__ import annotations

import re

import pytest

from kvraft.server.config import ConfigError, parse_config


def test_no_flags_is_a_single_member_on_loopback(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse_config([])
    assert config.name == "default"
    assert config.data_dir == "default.kvraft"
    assert config.listen_client_urls == ["http://127.0.0.1:2379"]
    assert config.listen_peer_urls == ["http://127.0.0.1:2380"]
    assert config.initial_members() == {"default": ["http://127.0.0.1:2380"]}
    assert config.heartbeat_interval == 100 and config.election_timeout == 1000
    assert config.max_request_bytes == 1572864
    assert config.election_ticks() == 10


def test_flags_override_the_yaml_file(tmp_path) -> None:
    path = tmp_path / "kvraft.yaml"
    path.write_text(
        "name: infra1\n"
        "data-dir: /tmp/infra1\n"
        "listen-client-urls: http://127.0.0.1:12379\n"
        "initial-advertise-peer-urls: http://127.0.0.1:12380\n"
        "listen-peer-urls: http://127.0.0.1:12380\n"
        "initial-cluster: infra1=http://127.0.0.1:12380,infra2=http://127.0.0.1:22380\n"
        "initial-cluster-state: existing\n"
        "snapshot-count: 50\n"
        "auto-compaction-mode: revision\n"
    )
    config = parse_config(["--config-file", str(path), "--snapshot-count", "77", "--log-level", "debug"])
    assert config.name == "infra1" and config.data_dir == "/tmp/infra1"
    assert config.listen_client_urls == ["http://127.0.0.1:12379"]
    assert config.initial_cluster_state == "existing"
    assert config.snapshot_count == 77 and config.log_level == "debug"
    assert config.auto_compaction_mode == "revision"
    assert set(config.initial_members()) == {"infra1", "infra2"}


@pytest.mark.parametrize(
    "argv",
    [
        ["--initial-cluster-state", "maybe"],
        ["--listen-client-urls", "127.0.0.1:2379"],
        ["--initial-cluster", "other=http://127.0.0.1:2380"],
        ["--heartbeat-interval", "100", "--election-timeout", "200"],
        ["--snapshot-count", "many"],
    ],
)
def test_bad_settings_are_refused(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        parse_config(argv)


@pytest.mark.parametrize(("mode", "retention"), [("periodic", "soon"), ("revision", "1h"), ("revision", "-3")])
def test_bad_auto_compaction_retention_is_refused(mode: str, retention: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(["--auto-compaction-mode", mode, "--auto-compaction-retention", retention])


def test_periodic_retention_units() -> None:
    from kvraft.server.compactor import parse_retention_s

    assert parse_retention_s("1") == 3600
    assert parse_retention_s("1h30m") == 5400
    assert parse_retention_s("90s") == 90


def test_config_file_keys_kvraft_does_not_know_are_named_on_stderr(tmp_path, capsys) -> None:
    path = tmp_path / "etcd.yaml"
    path.write_text("name: infra1\nexperimental-made-up-feature: true\nproxy: 'off'\ncors: '*'\n"
                    "snapshot-count: 50\nenable-log-rotationn: false\nunsafe-no-fsync: true\n")
    config = parse_config(["--config-file", str(path)])
    assert config.snapshot_count == 50 and config.cors == ["*"] and config.proxy == "off" and config.unsafe_no_fsync
    err = capsys.readouterr().err
    assert f"--config-file {path}: ignoring enable-log-rotationn, experimental-made-up-feature" in err


def test_a_config_file_that_bootstraps_by_dns_is_read(tmp_path) -> None:
    """``discovery-srv`` and ``discovery-srv-name`` are read (the lookup comes at start:
    kvraft/server/srv_bootstrap.py); with ``initial-cluster`` as well, refused as etcd does."""
    path = tmp_path / "etcd.yaml"
    path.write_text("name: infra1\ndiscovery-srv: example.com\ndiscovery-srv-name: blue\n")
    config = parse_config(["--config-file", str(path), "--data-dir", str(tmp_path / "d")])
    assert (config.discovery_srv, config.discovery_srv_name, config.initial_cluster) == ("example.com", "blue", "")
    path.write_text("name: infra1\ndiscovery-srv: example.com\ninitial-cluster: infra1=http://127.0.0.1:2380\n")
    with pytest.raises(ConfigError, match='multiple discovery or bootstrap flags are set. Choose one of '
                                          '"initial-cluster", "discovery", "discovery-endpoints" or "discovery-srv"'):
        parse_config(["--config-file", str(path), "--data-dir", str(tmp_path / "d")])
    # etcd 3.6's v3 discovery keys (kvraft/server/v3discovery.py)
    path.write_text("name: infra1\ndiscovery-token: lab-b\ndiscovery-endpoints: http://10.0.0.1:2379,http://10.0.0.2:2379\n"
                    "discovery-request-timeout: 10s\n")
    config = parse_config(["--config-file", str(path), "--data-dir", str(tmp_path / "d")])
    assert (config.discovery_token, config.discovery_endpoints, config.discovery_request_timeout) == \
        ("lab-b", ["http://10.0.0.1:2379", "http://10.0.0.2:2379"], "10s")
    assert config.id_token == "lab-b" and config.initial_cluster_token == "etcd-cluster"


def test_an_etcd_config_files_access_and_keepalive_keys_are_read(tmp_path) -> None:
    path = tmp_path / "etcd.yaml"
    path.write_text("cors: 'http://localhost:3000'\nhost-whitelist: 'a.example,b.example'\n"
                    "grpc-keepalive-min-time: 2s\ngrpc-keepalive-interval: 1m\ngrpc-keepalive-timeout: 5s\n"
                    f"data-dir: {tmp_path / 'd'}\n")
    config = parse_config(["--config-file", str(path)])
    config.validate()
    assert config.cors == ["http://localhost:3000"] and config.host_whitelist == ["a.example", "b.example"]
    assert (config.grpc_keepalive_min_time, config.grpc_keepalive_interval, config.grpc_keepalive_timeout) == \
        ("2s", "1m", "5s")


def test_a_config_file_of_known_keys_warns_of_nothing(tmp_path, capsys) -> None:
    path = tmp_path / "kvraft.yaml"
    path.write_text("name: infra1\nstrict-reconfig-check: false\nwal-dir: /tmp/w\n")
    config = parse_config(["--config-file", str(path)])
    assert config.strict_reconfig_check is False and config.wal_dir == "/tmp/w"
    assert capsys.readouterr().err == ""


def test_etcd_34_flags_debug_pre_vote_and_enable_v2(tmp_path) -> None:
    assert parse_config(["--debug", "--data-dir", str(tmp_path / "d")]).log_level == "debug"
    assert parse_config(["--data-dir", str(tmp_path / "d")]).pre_vote is True
    with pytest.raises(ConfigError, match="v3 API only"):
        parse_config(["--enable-v2", "--data-dir", str(tmp_path / "d")])
    assert parse_config(["--enable-v2=false", "--data-dir", str(tmp_path / "d")]).enable_v2 is False


@pytest.mark.parametrize("flag, expected", [("--pre-vote=false", False), ("--pre-vote", True)])
def test_pre_vote_reaches_the_raft_core(tmp_path, flag: str, expected: bool) -> None:
    from kvraft.server.node import Node

    node = Node(parse_config([flag, "--data-dir", str(tmp_path / "d")]))
    try:
        assert node.raw._raft.config.pre_vote is expected
    finally:
        node.raft_log.close()
        node.state.close()


def test_every_flag_has_help_in_a_group_and_help_names_no_stale_flag() -> None:
    from dataclasses import fields

    from kvraft.server.config import Config, _parser
    from kvraft.server.flag_help import FLAG_HELP, GROUPS

    names = {f.name for f in fields(Config)}
    assert set(FLAG_HELP) == names
    assert {group for group, _ in FLAG_HELP.values()} <= set(GROUPS)
    text = _parser().format_help()
    for name in names:
        assert "--" + name.replace("_", "-") in text
    assert "--strict-reconfig-check [true|false]" in text and "(default: true)" in text
    assert "--snapshot-count int" in text and "(default: 100000)" in text


def _member(client: int = 12379, peer: int = 12380, cluster: str | None = None) -> list[str]:
    return ["--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", cluster if cluster is not None else f"default=http://127.0.0.1:{peer}"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [  # each one etcd 3.4 refuses at start; kvraft started and served on all but the port
        (["--listen-client-urls", "http://127.0.0.1:12379/foo"], "URL must not contain a path"),
        (["--advertise-client-urls", "http://127.0.0.1:12379/"], "URL must not contain a path"),
        (["--listen-peer-urls", "http://127.0.0.1:12380/x"], "URL must not contain a path"),
        (["--listen-client-urls", "http://127.0.0.1:99999"], "Port out of range"),  # was a ValueError traceback
        (_member(cluster="default=http://127.0.0.1:12380,other=http://127.0.0.1:12380"), "duplicate url"),
        (_member(cluster="default=http://127.0.0.1:22380"), "missing from --initial-advertise-peer-urls"),
        (_member(cluster="default=http://127.0.0.1:12380,default=http://127.0.0.1:22380"),
         "missing from --initial-advertise-peer-urls"),
        ([*_member(cluster="default=http://127.0.0.1:22380"), "--initial-cluster-state", "existing"],
         "missing from --initial-advertise-peer-urls"),
        (_member(cluster=""), "--initial-cluster is empty"),  # kvraft founded a one-member cluster
        (["--election-timeout", "60000"], "less than 50000ms"),
        (["--heartbeat-interval", "0"], "--heartbeat-interval must be >0"),
        (["--election-timeout", "0"], "--election-timeout must be >0"),
        (["--snapshot-count", "-1"], "--snapshot-count must not be negative"),
        (["--max-txn-ops", "-1"], "--max-txn-ops must not be negative"),
    ],
)
def test_what_etcd_refuses_at_start_is_refused(tmp_path, argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config([*argv, "--data-dir", str(tmp_path / "d")])


def test_a_data_dir_that_is_a_file_is_refused(tmp_path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):  # was a FileExistsError traceback
        parse_config(["--data-dir", str(tmp_path / "f")])


def test_a_member_whose_urls_agree_is_accepted(tmp_path) -> None:
    config = parse_config([*_member(cluster="default=http://127.0.0.1:12380,b=http://127.0.0.1:22380"),
                           "--data-dir", str(tmp_path / "d"), "--max-txn-ops", "0", "--snapshot-count", "0"])
    assert set(config.initial_members()) == {"default", "b"}


def test_a_listen_url_given_twice_is_one_listener(tmp_path) -> None:
    # etcd serves on it; kvraft bound it twice and died of 'address already in use'
    url = "http://127.0.0.1:12379"
    config = parse_config(["--listen-client-urls", f"{url},{url}", "--data-dir", str(tmp_path / "d")])
    assert config.listen_client_urls == [url]


def test_a_restart_with_another_token_keeps_the_member_id(tmp_path) -> None:
    # etcd takes the id from its WAL; kvraft recomputed it from the flags, and the member of a
    # data dir restarted with another --initial-cluster-token never found a leader
    from kvraft.server.node import Node

    ids = []
    for token in ("aaa", "bbb"):
        node = Node(parse_config(["--data-dir", str(tmp_path / "d"), "--initial-cluster-token", token]))
        ids.append(node.member_id)
        node.raft_log.close()
        node.state.close()
    assert ids[0] == ids[1]
    assert (tmp_path / "d" / "member_id").read_text() == f"{ids[0]}\n"


@pytest.mark.parametrize("text", ["", "12ab\n", "0\n", "-5\n"])
def test_an_unreadable_member_id_file_is_a_data_dir_error(tmp_path, text: str) -> None:
    from kvraft.server.node import Node
    from kvraft.server.wal_dir import DataDirError

    node = Node(parse_config(["--data-dir", str(tmp_path / "d")]))
    node.raft_log.close()
    node.state.close()
    (tmp_path / "d" / "member_id").write_text(text)
    with pytest.raises(DataDirError, match="member_id: unreadable .* holds this member's id"):
        Node(parse_config(["--data-dir", str(tmp_path / "d")]))


def test_etcd_environment_variables_configure_the_member_as_etcd_reads_them(tmp_path, capsys) -> None:
    """An etcd unit's EnvironmentFile (ETCD_NAME, ETCD_INITIAL_CLUSTER, ...) was ignored: the
    member was named 'default' and founded a cluster of its own."""
    env = {"ETCD_NAME": "m1", "ETCD_DATA_DIR": str(tmp_path / "m1"), "ETCD_HEARTBEAT_INTERVAL": "50",
           "ETCD_ELECTION_TIMEOUT": "500", "ETCD_PRE_VOTE": "false", "ETCD_SNAPSHOT_COUNT": "",
           "ETCD_INITIAL_ADVERTISE_PEER_URLS": "http://127.0.0.1:2390",
           "ETCD_INITIAL_CLUSTER": "m1=http://127.0.0.1:2390,m2=http://127.0.0.1:2391",
           "ETCDCTL_API": "3", "ETCD_UNSUPPORTED_ARCH": "arm"}
    config = parse_config(["--election-timeout", "600"], environ=env)
    assert (config.name, config.data_dir, config.heartbeat_interval, config.election_timeout, config.pre_vote) == \
        ("m1", str(tmp_path / "m1"), 50, 600, False)  # a flag wins over its variable
    assert config.snapshot_count == parse_config([], environ={}).snapshot_count  # empty: unset
    assert sorted(config.initial_members()) == ["m1", "m2"]
    err = capsys.readouterr().err
    assert "recognized environment variable ETCD_ELECTION_TIMEOUT, but unused: shadowed by corresponding flag " \
        "--election-timeout" in err
    assert "unrecognized environment variable ETCD_UNSUPPORTED_ARCH=arm" in err and "ETCDCTL_API" not in err


def test_a_bad_environment_value_names_the_variable(tmp_path) -> None:
    with pytest.raises(ConfigError, match="invalid value 'abc' for ETCD_HEARTBEAT_INTERVAL: heartbeat-interval"):
        parse_config(["--data-dir", str(tmp_path / "d")], environ={"ETCD_HEARTBEAT_INTERVAL": "abc"})


def test_with_a_config_file_the_environment_is_ignored_as_etcd_does(tmp_path, capsys) -> None:
    path = tmp_path / "kvraft.yaml"
    path.write_text(f"name: from-file\ndata-dir: {tmp_path / 'd'}\n")
    config = parse_config([], environ={"ETCD_CONFIG_FILE": str(path), "ETCD_NAME": "from-env"})
    assert config.name == "from-file"
    assert "the ETCD_* environment variables are ignored" in capsys.readouterr().err


def test_a_zero_snapshot_count_is_etcds_default(tmp_path) -> None:
    """etcd 3.4: --snapshot-count 0 is "set snapshot count to default 100000". kvraft took
    it literally: a snapshot of the whole store (and a log compaction) after every entry."""
    from kvraft.server.node import Node

    for flag, want in (("0", 100_000), ("7", 7)):
        node = Node(parse_config(["--data-dir", str(tmp_path / f"d{flag}"), "--snapshot-count", flag]))
        try:
            assert node.driver.snapshot_count == want
        finally:
            node.raft_log.close()
            node.state.close()


@pytest.mark.parametrize("target", ["loop", "nowhere"])
def test_a_data_dir_symlink_that_leads_nowhere_is_a_config_error(tmp_path, target: str) -> None:
    """A dangling --data-dir symlink (or one that loops) ended the start with
    "[Errno 17] File exists: 'd'", which names neither the flag nor the problem."""
    link = tmp_path / "d"
    link.symlink_to(link if target == "loop" else tmp_path / "missing" / "x")
    with pytest.raises(ConfigError, match=r"--data-dir .*/d is a symbolic link that leads to no directory"):
        parse_config(["--data-dir", str(link)])


@pytest.mark.parametrize(("flag", "value"), [("--quota-backend-bytes", str(1 << 63)),
                                             ("--quota-backend-bytes", str(-(1 << 63) - 1)),
                                             ("--snapshot-count", str(1 << 64)),
                                             ("--quota-backend-bytes", "9" * 30)])
def test_an_integer_flag_beyond_gos_type_is_refused(flag: str, value: str) -> None:
    """etcd parses --quota-backend-bytes as an int64 and --snapshot-count as a uint64 and
    refuses a value out of range; kvraft took any Python int (a quota of 10^30 bytes)."""
    with pytest.raises(ConfigError, match=f"{flag[2:]}: '{value}' is out of range"):
        parse_config([f"{flag}={value}"])


def test_the_largest_values_go_takes_are_accepted() -> None:
    config = parse_config([f"--quota-backend-bytes={(1 << 63) - 1}", f"--snapshot-count={(1 << 64) - 1}"])
    assert (config.quota_backend_bytes, config.snapshot_count) == ((1 << 63) - 1, (1 << 64) - 1)


def test_etcds_file_retention_flags_are_taken_and_checked(tmp_path) -> None:
    """kvraft's log directory holds one segment and one snapshot file, so any limit holds;
    the values are still etcd's unsigned integers."""
    config = parse_config(["--max-snapshots", "3", "--max-wals", "0", "--data-dir", str(tmp_path / "d")])
    config.validate()
    assert (config.max_snapshots, config.max_wals) == (3, 0)
    with pytest.raises(ConfigError, match="--max-wals must not be negative"):
        parse_config(["--max-wals=-1", "--data-dir", str(tmp_path / "d")]).validate()
    with pytest.raises(ConfigError, match="max-snapshots: 'many' is not an integer"):
        parse_config(["--max-snapshots", "many", "--data-dir", str(tmp_path / "d")])


def test_etcds_tuning_flags_are_taken_with_etcds_defaults_for_zero(tmp_path) -> None:
    data = ["--data-dir", str(tmp_path / "d")]
    config = parse_config(data)
    assert config.backend_batch() == (0.1, 10_000) and config.compaction_batch() == 1000
    assert config.warn_apply_s() == 0.1 and config.initial_election_tick_advance
    config = parse_config([*data, "--backend-batch-interval", "10ms", "--backend-batch-limit", "50",
                           "--experimental-compaction-batch-limit", "0", "--experimental-warning-apply-duration", "1s",
                           "--initial-election-tick-advance=false", "--max-concurrent-streams", "1",
                           "--experimental-backend-bbolt-freelist-type", "map", "--log-package-levels", "raft=DEBUG"])
    assert config.backend_batch() == (0.01, 50) and config.compaction_batch() == 1000
    assert config.warn_apply_s() == 1.0 and not config.initial_election_tick_advance


@pytest.mark.parametrize(("flags", "error"), [
    (["--backend-batch-interval", "soon"], "--backend-batch-interval: "),
    (["--backend-batch-limit=-1"], "--backend-batch-limit must not be negative"),
    (["--experimental-compaction-batch-limit=-5"], "--experimental-compaction-batch-limit must not be negative"),
    (["--experimental-warning-apply-duration=-1s"], "--experimental-warning-apply-duration: "),
    (["--max-concurrent-streams", "0"], "--max-concurrent-streams must be between 1 and 4294967295"),
    (["--max-concurrent-streams", "4294967296"], "--max-concurrent-streams must be between 1 and 4294967295"),
    (["--experimental-backend-bbolt-freelist-type", "hash"], "must be 'array' or 'map'"),
    (["--log-package-levels", "raft"], "--log-package-levels: cannot parse 'raft'"),
])
def test_bad_tuning_flag_values_are_refused(tmp_path, flags: list[str], error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("(", r"\(")):
        parse_config([*flags, "--data-dir", str(tmp_path / "d")])
