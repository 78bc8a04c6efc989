"""etcd 3.6's member flags (``kvraft.server.etcd36``): the experimental flags under their new
names, ``--feature-gates``, and etcd 3.6's rules between the two spellings."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvraft.server.config import ConfigError, parse_config
from kvraft.server.etcd36 import GATES, enabled_gates, local_peer_address, parse_feature_gates
from kvraft.server.main import compatibility_notes


def parse(tmp_path: Path, *argv: str, environ: dict[str, str] | None = None):
    return parse_config(["--data-dir", str(tmp_path / "d"), *argv], environ or {})


ETCD36_NAMES = [
    ("--compact-hash-check-time", "2m", "compact_hash_check_time"),
    ("--corrupt-check-time", "3m", "corrupt_check_time"),
    ("--compaction-batch-limit", "50", "compaction_batch_limit"),
    ("--watch-progress-notify-interval", "5m", "watch_progress_notify_interval"),
    ("--warning-apply-duration", "200ms", "warning_apply_duration"),
    ("--bootstrap-defrag-threshold-megabytes", "7", "bootstrap_defrag_threshold_megabytes"),
    ("--snapshot-catchup-entries", "9", "snapshot_catchup_entries"),
    ("--compaction-sleep-interval", "1ms", "compaction_sleep_interval"),
    ("--downgrade-check-time", "9s", "downgrade_check_time"),
    ("--distributed-tracing-sampling-rate", "10", "distributed_tracing_sampling_rate"),
    ("--warning-unary-request-duration", "1s", "warning_unary_request_duration"),
]


@pytest.mark.parametrize(("flag", "value", "field"), ETCD36_NAMES)
def test_the_new_names_set_what_the_member_reads(tmp_path: Path, flag: str, value: str, field: str) -> None:
    config = parse(tmp_path, flag, value)
    assert str(getattr(config, field)) == value


@pytest.mark.parametrize(("flag", "value", "field"), [item for item in ETCD36_NAMES if item[0] not in (
    "--snapshot-catchup-entries", "--warning-unary-request-duration")])
def test_an_old_name_sets_the_new_one_with_etcds_warning_and_both_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, field: str) -> None:
    old = flag.replace("--", "--experimental-", 1)
    config = parse(tmp_path, old, value)
    assert str(getattr(config, field)) == value
    err = capsys.readouterr().err
    assert f"{old} is deprecated in v3.6 and will be decommissioned in v3.7. Use '{flag}' instead." in err
    with pytest.raises(ConfigError, match=f"cannot set {old} and {flag} at the same time, please use {flag} only"):
        parse(tmp_path, old, value, flag, value)


def test_the_old_names_reach_the_new_ones_from_a_config_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "etcd.yaml"
    # (etcd 3.6 spells this one key differently in YAML, and maps it to the flag)
    path.write_text("experimental-corrupt-check-time: 4m\nexperimental-snapshot-catch-up-entries: 77\n"
                    "feature-gates: CompactHashCheck=true\n")
    config = parse(tmp_path, "--config-file", str(path))
    assert (config.corrupt_check_time, config.snapshot_catchup_entries) == ("4m", 77)
    assert config.feature("CompactHashCheck")
    config = parse(tmp_path, environ={"ETCD_EXPERIMENTAL_MEMORY_MLOCK": "false",
                                      "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK": "true"})
    assert config.feature("InitialCorruptCheck") and not config.memory_mlock
    config = parse(tmp_path, environ={"ETCD_FEATURE_GATES": "InitialCorruptCheck=true"})
    assert config.feature("InitialCorruptCheck")
    path.write_text("feature-gates:\n  CompactHashCheck: true\n  TxnModeWriteWithSharedBuffer: false\n")
    config = parse(tmp_path, "--config-file", str(path))  # (a YAML mapping too)
    assert config.feature("CompactHashCheck") and not config.feature("TxnModeWriteWithSharedBuffer")


def test_feature_gates_parse_as_etcds_with_its_defaults() -> None:
    assert parse_feature_gates("") == {}
    assert parse_feature_gates("CompactHashCheck=true, InitialCorruptCheck=F,") == {
        "CompactHashCheck": True, "InitialCorruptCheck": False}
    gates = enabled_gates({})
    assert not gates["CompactHashCheck"] and not gates["InitialCorruptCheck"] and not gates["SetMemberLocalAddr"]
    assert gates["TxnModeWriteWithSharedBuffer"]
    assert gates["LeaseCheckpoint"] and gates["LeaseCheckpointPersist"]  # (what kvraft always does)
    # AllAlpha: every alpha gate not named; a gate named wins
    gates = enabled_gates(parse_feature_gates("AllAlpha=true,SetMemberLocalAddr=false"))
    assert gates["CompactHashCheck"] and gates["InitialCorruptCheck"] and gates["StopGRPCServiceOnDefrag"]
    assert not gates["SetMemberLocalAddr"]
    assert not enabled_gates(parse_feature_gates("AllBeta=false"))["TxnModeWriteWithSharedBuffer"]
    assert set(GATES) == {"AllAlpha", "AllBeta", "CompactHashCheck", "InitialCorruptCheck", "LeaseCheckpoint",
                          "LeaseCheckpointPersist", "SetMemberLocalAddr", "StopGRPCServiceOnDefrag",
                          "TxnModeWriteWithSharedBuffer"}


@pytest.mark.parametrize(("argv", "message"), [
    (["--feature-gates", "Bogus=true"],
     'invalid value "Bogus=true" for flag -feature-gates: unrecognized feature gate: Bogus'),
    (["--feature-gates", "CompactHashCheck"], "missing bool value for CompactHashCheck"),
    (["--feature-gates", "CompactHashCheck=yes"], 'invalid value of CompactHashCheck=yes, err: strconv.ParseBool'),
    (["--experimental-initial-corrupt-check", "--feature-gates", "InitialCorruptCheck=false"],
     "cannot specify both flags: --experimental-initial-corrupt-check=true and "
     "--feature-gates=InitialCorruptCheck=false at the same time, please just use "
     "--feature-gates=InitialCorruptCheck=false"),
    (["--feature-gates", "LeaseCheckpoint=false,LeaseCheckpointPersist=true"],
     "enabling feature gate LeaseCheckpointPersist requires enabling feature gate LeaseCheckpoint"),
    (["--warning-unary-request-duration", "1s", "--experimental-warning-unary-request-duration", "2s"],
     "both --experimental-warning-unary-request-duration and --warning-unary-request-duration flags are set"),
    (["--compact-hash-check-time", "0s"], "--compact-hash-check-time must be >0"),
    (["--experimental-compact-hash-check-time=-1s"], "--experimental-compact-hash-check-time"),
    (["--enable-distributed-tracing"], "--enable-distributed-tracing: kvraft exports no OpenTelemetry traces"),
    (["--distributed-tracing-sampling-rate", "1000001"], "--distributed-tracing-sampling-rate must be between"),
    (["--bootstrap-defrag-threshold-megabytes", "-1"], "--bootstrap-defrag-threshold-megabytes must not be negative"),
    (["--warning-unary-request-duration", "soon"], "--warning-unary-request-duration"),
])  # fmt: skip
def test_what_etcd_36_refuses_is_refused(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse(tmp_path, *argv)


def test_an_experimental_boolean_sets_its_gate_with_etcds_warning(tmp_path: Path, capsys) -> None:
    config = parse(tmp_path, "--experimental-compact-hash-check-enabled", "--experimental-stop-grpc-service-on-defrag",
                   "--feature-gates", "SetMemberLocalAddr=true")
    assert config.feature("CompactHashCheck") and config.feature("StopGRPCServiceOnDefrag")
    assert config.feature("SetMemberLocalAddr") and not config.feature("InitialCorruptCheck")
    err = capsys.readouterr().err
    assert ("--experimental-compact-hash-check-enabled is deprecated in v3.6 and will be decommissioned in v3.7. "
            "Use '--feature-gates=CompactHashCheck=true' instead.") in err
    # the unary warning's old name is taken alone, with its own warning
    config = parse(tmp_path, "--experimental-warning-unary-request-duration", "2s")
    assert config.warn_request_s() == 2.0
    assert "--experimental-warning-unary-request-duration is deprecated" in capsys.readouterr().err
    assert parse(tmp_path).warn_request_s() == 0.3  # (etcd's default for 0)
    parse(tmp_path, "--max-snapshots", "3")
    assert "--max-snapshots is deprecated in 3.6" in capsys.readouterr().err
    parse(tmp_path, "--corrupt-check-time", "1m")
    assert capsys.readouterr().err == ""


def test_gates_kvraft_needs_nothing_for_are_said_once_at_start(tmp_path: Path) -> None:
    notes = "\n".join(compatibility_notes(parse(tmp_path, "--feature-gates", "StopGRPCServiceOnDefrag=true,"
                                                "TxnModeWriteWithSharedBuffer=false,LeaseCheckpoint=false")))
    for gate in ("StopGRPCServiceOnDefrag=true", "TxnModeWriteWithSharedBuffer=false", "LeaseCheckpoint=false"):
        assert f"--feature-gates={gate}" in notes
    assert compatibility_notes(parse(tmp_path)) == []


def test_the_member_local_address_is_the_first_routable_ip_advertised() -> None:
    assert local_peer_address(["http://127.0.0.1:2380", "http://[::]:2380", "http://10.0.0.5:2380",
                               "http://10.0.0.6:2380"]) == "10.0.0.5"
    assert local_peer_address(["https://[fd00::5]:2380"]) == "fd00::5"
    assert local_peer_address(["http://127.0.0.1:2380", "http://member1.example:2380"]) is None


def test_kvraft_takes_every_flag_of_etcd_36() -> None:
    """Every flag etcd 3.6.9's ``etcd --help`` lists (its names, in etcd36_flags.txt: the etcd
    binary CI installs is 3.4, whose list test_etcd_flags checks) is one ``kvraft --help`` lists."""
    import re
    import subprocess
    import sys

    wanted = set((Path(__file__).parent / "etcd36_flags.txt").read_text().split())
    text = subprocess.run([sys.executable, "-m", "kvraft.server.main", "--help"], capture_output=True, text=True,
                          timeout=60).stdout
    assert len(wanted) > 100 and not wanted - set(re.findall(r"--[a-z0-9-]+", text))
