"""kvraft-agent's settings: a mistake in a flag or in the YAML file is a ValueError naming the
flag, the value and what is allowed (the daemon prints it and exits 2), never a traceback nor
an agent that starts on a value it should have refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.main import main, preflight, reset

BASE = ["--runtime", "fake"]


@pytest.mark.parametrize(("argv", "match"), [
    (["--heartbeat-s", "nan"], "--heartbeat-s: must be a finite number, not nan"),
    (["--lease-loss-grace-s", "inf"], "--lease-loss-grace-s: must be a finite number"),
    (["--relist-s", "0"], "--relist-s: 0.0 is out of range: must be > 0"),
    (["--node-status-s", "-1"], "--node-status-s: -1.0 is out of range"),
    (["--request-timeout-s", "0"], "--request-timeout-s: 0.0 is out of range"),
    (["--log-max-bytes", "0"], "--log-max-bytes: 0 is out of range: must be >= 1"),
    (["--log-max-files", "-1"], "--log-max-files: -1 is out of range"),
    (["--restart-backoff-s", "100", "--restart-backoff-max-s", "1"], "--restart-backoff-max-s: 1.0 is out of range"),
    (["--finished-retention-s", "-5"], "--finished-retention-s: -5.0 is out of range"),
    (["--lease-ttl-s", "99999999999"], "--lease-ttl-s: 99999999999 is out of range"),
    (["--endpoints", ""], "--endpoints: no endpoint given"),
    (["--endpoints", " , "], "--endpoints: no endpoint given"),
    (["--endpoints", "ftp://127.0.0.1:2379"], "--endpoints: 'ftp://127.0.0.1:2379': the scheme must be http or https"),
    (["--endpoints", "http://127.0.0.1:2379/v3"], "has a path"),
    (["--endpoints", "127.0.0.1"], "has no port"),
    (["--endpoints", "127.0.0.1:99999"], "is not a valid URL"),
    (["--listen-url", "127.0.0.1:10250"], "--listen-url: '127.0.0.1:10250' is not a URL; expected http://HOST:PORT"),
    (["--listen-url", "http://127.0.0.1:0"], "port 0"),
    (["--advertise-url", "node7"], "--advertise-url: 'node7' is not a URL"),
    (["--name", ""], "--name: must not be empty"),
    (["--name", "a/b"], "--name: 'a/b': must not contain '/'"),
    (["--name", ".."], "--name: '..'"),
    (["--name", "gpu node"], "whitespace"),
    (["--name", "n" * 254], "254 characters long; at most 253"),
    (["--labels", "ra ck=r1"], "label key 'ra ck'"),
    (["--labels", "rack=r1,rack=r2"], "--labels: label 'rack' given twice"),
    (["--labels", "rack=r/1"], "--labels rack: 'r/1': must not contain '/'"),
    (["--labels", "switch=s1,spine="], "--labels spine: must not be empty"),
    (["--labels", "zone=a b"], "--labels: label zone: the value 'a b' must be empty or alphanumerics"),
    (["--labels", "zone=-a"], "the value '-a' must be empty or alphanumerics"),
    (["--labels", "zone=" + "a" * 64], "the value 'aaaa"),
    (["--labels", "Example.com/zone=a"], "the prefix 'Example.com' must be a DNS subdomain"),
    (["--labels", "/zone=a"], "the prefix before '/' must not be empty"),
    (["--labels", "example.com/=a"], "the name must not be empty"),
    (["--labels", "z" * 64 + "=a"], "the name must be at most 63 characters, not 64"),
    (["--labels", "zo:ne=a"], "label key 'zo:ne': the name must be alphanumerics"),
    (["--cert", "/etc/kvraft/pki/agent.crt"], "--cert and --key go together: --key is missing"),
    (["--cacert", "/nonexistent/ca.crt"], "--cacert /nonexistent/ca.crt: does not exist"),
    # the endpoint's own TLS (kubelet's flags): an https URL served as http, or the reverse, was silent
    (["--listen-url", "https://127.0.0.1:10250"], "--listen-url https://127.0.0.1:10250: https needs --tls-cert-file"),
    (["--tls-cert-file", "/etc/hosts", "--tls-private-key-file", "/etc/hosts"],
     "--tls-cert-file: the endpoint serves plain http at --listen-url http://127.0.0.1:10250; make it https://"),
    (["--listen-url", "https://127.0.0.1:10250", "--tls-cert-file", "/etc/hosts"],
     "--tls-cert-file and --tls-private-key-file go together: --tls-private-key-file is missing"),
    (["--listen-url", "https://127.0.0.1:10250", "--tls-cert-file", "/nonexistent.crt",
      "--tls-private-key-file", "/etc/hosts"], "--tls-cert-file /nonexistent.crt: does not exist"),
])
def test_bad_flags(argv: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(".", r"\.").replace("+", r"\+")):
        load_config([*BASE, *argv])


@pytest.mark.parametrize(("text", "match"), [
    ("lease-ttl-s: abc\n", "--lease-ttl-s: must be an integer, not 'abc'"),
    ("lease-ttl-s: 40.5\n", "--lease-ttl-s: must be an integer, not 40.5"),
    ("heartbeat-s: [1]\n", "--heartbeat-s: must be a number, not \\[1\\]"),
    ("heartbeat-s: .nan\n", "--heartbeat-s: must be a finite number"),
    ("insecure-skip-tls-verify: maybe\n", "--insecure-skip-tls-verify: must be true or false, not 'maybe'"),
    ("labels: [rack]\n", "--labels: must be key=value,... or a mapping"),
    ("labels: {rack: [a]}\n", "--labels: 'rack'"),
    ("labels: {zone: 'a,b'}\n", "--labels: label zone: the value 'a,b' must be empty"),
    ("labels: {zone: \"a\\nb\"}\n", "--labels: label zone: the value 'a\\\\nb' must be empty"),
    ("data-dir: [x]\n", "--data-dir: must be a string"),
    ("endpoints: 5\n", "--endpoints: must be a comma-separated string or a list of strings, not 5"),
    ("endpoints: {a: 1}\n", "--endpoints: must be"),
    ("name: [a]\n", "--name: must be a string"),
    ("name:\n", "--name: must not be empty"),
    ("runtime: podman\n", "--runtime: 'podman' is not one of runc, docker, process, fake"),
    ("log-level: loud\n", "--log-level: 'loud' is not one of"),
    ("heartbeat-s: 1\nheartbeat-s: 2\n", "mapping key 'heartbeat-s' appears twice"),
    ("a: [\n", "--config .*agent.yaml: while parsing"),
    ("- a\n- b\n", "must be a mapping of settings, not a list"),
])
def test_bad_yaml(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_config(["--config", str(f)])


def test_config_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--config /nonexistent.yaml: .*No such file"):
        load_config(["--config", "/nonexistent.yaml"])
    with pytest.raises(ValueError, match=f"--config {tmp_path}: .*Is a directory"):
        load_config(["--config", str(tmp_path)])
    f = tmp_path / "agent.yaml"
    f.write_text("")  # empty: the defaults
    assert load_config(["--config-file", str(f), "--name", "n1"]).name == "n1"  # as kvraft-scheduler spells it
    f.write_text("endpoints: [127.0.0.1:2379, 'https://10.0.0.1:2379']\nname: n1\nlabels: {rack: r1, slot: 3}\n"
                 "heartbeat-s: 5\nlease-ttl-s: '20'\ninsecure-skip-tls-verify: true\n")
    cfg = load_config(["--config", str(f)])
    assert (cfg.endpoints, cfg.labels, cfg.heartbeat_s, cfg.lease_ttl_s, cfg.insecure_skip_tls_verify) == (
        ["127.0.0.1:2379", "https://10.0.0.1:2379"], {"rack": "r1", "slot": "3"}, 5.0, 20, True)
    labels = "kubernetes.io/hostname=gpu-07,nvidia.com/gpu.product=A100-SXM4-80GB,zone=,Fast_Disk=yes.1"
    assert load_config([*BASE, "--labels", labels]).labels == {  # Kubernetes' label syntax, empty values included
        "kubernetes.io/hostname": "gpu-07", "nvidia.com/gpu.product": "A100-SXM4-80GB", "zone": "", "Fast_Disk": "yes.1"}


def test_preflight(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=f"--data-dir {a_file}: not a directory"):
        preflight(load_config([*BASE, "--name", "n1", "--data-dir", str(a_file)]))
    with pytest.raises(ValueError, match=f"--data-dir {a_file}/sub: "):
        preflight(load_config([*BASE, "--name", "n1", "--data-dir", str(a_file / "sub")]))
    inv = tmp_path / "gpus.yaml"
    for text in ("gpus: [\n", "gpus: 5\n", "- 1\n"):
        inv.write_text(text)
        with pytest.raises(ValueError, match=f"--gpu-inventory {inv}: "):
            preflight(load_config([*BASE, "--name", "n1", "--data-dir", str(tmp_path / "d"), "--gpu-inventory", str(inv)]))
    with pytest.raises(ValueError, match="--gpu-inventory /nonexistent/gpus.yaml: "):
        preflight(load_config([*BASE, "--name", "n1", "--data-dir", str(tmp_path / "d"),
                               "--gpu-inventory", "/nonexistent/gpus.yaml"]))


def test_main_exits_2_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--name", "n1", "--data-dir", str(tmp_path), "--relist-s", "nan"]) == 2
    assert capsys.readouterr().err == "kvraft-agent: --relist-s: must be a finite number, not nan\n"


@pytest.mark.parametrize("node", ["", ".", "..", "a/b"])
def test_reset_refuses_names_that_are_not_one_node(node: str, capsys: pytest.CaptureFixture[str]) -> None:
    # "" named kvraft-agent/ (every node's task cgroups), ".." the cgroup above it
    with pytest.raises(SystemExit) as exc:
        reset([node])
    assert exc.value.code == 2
    assert "kvraft-agent reset: node name" in capsys.readouterr().err


def test_a_certificate_that_does_not_load_ends_the_agent_naming_the_files(tmp_path: Path) -> None:
    import subprocess
    import sys

    from kvraft.server.local import free_port

    done = subprocess.run([sys.executable, "-m", "agent", "--runtime", "fake", "--endpoints", "127.0.0.1:1",
                           "--data-dir", str(tmp_path / "a"), "--listen-url", f"https://127.0.0.1:{free_port()}",
                           "--tls-cert-file", "/etc/hosts", "--tls-private-key-file", "/etc/hosts"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "kvraft-agent: --tls-cert-file /etc/hosts, --tls-private-key-file /etc/hosts:" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_auto_sync_interval(tmp_path: Path) -> None:
    """clientv3's AutoSyncInterval for the agent's client: every 5 minutes by default, 0 off."""
    assert load_config([*BASE, "--data-dir", str(tmp_path)]).auto_sync_interval_s == 300.0
    assert load_config([*BASE, "--data-dir", str(tmp_path), "--auto-sync-interval-s", "0"]).auto_sync_interval_s == 0
    with pytest.raises(ValueError, match=r"--auto-sync-interval-s: -1.0 is out of range: must be >= 0 \(0: never\)"):
        load_config([*BASE, "--data-dir", str(tmp_path), "--auto-sync-interval-s", "-1"])
