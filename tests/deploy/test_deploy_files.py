"""deploy/: the systemd units, example configs, Dockerfiles and make-certs.sh fit together and
fit the programs: every unit's command line, with its example environment file and
certificates made by make-certs.sh, is accepted by the program's own flag parser, and the
YAML form of the member config says the same as the member unit."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from agent.config import load_config as agent_config
from kvraft.client import TLSConfig
from kvraft.server.config import parse_config
from scheduler.service_config import load_config as scheduler_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MEMBERS = ("m1=10.0.0.11", "m2=10.0.0.12", "m3=10.0.0.13")

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> values (continuation lines joined)."""
    text = (DEPLOY / "systemd" / name).read_text().replace("\\\n", " ")
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value.strip())
    return sections


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def exec_argv(name: str, env: dict[str, str], etc: Path) -> list[str]:
    [command] = unit(name)["Service"]["ExecStart"]

    def substitute(match: re.Match[str]) -> str:
        assert match.group(1) in env, f"{name}: ${{{match.group(1)}}} is not in its example environment file"
        return env[match.group(1)]

    command = re.sub(r"\$\{(\w+)\}", substitute, command).replace("/etc/kvraft", str(etc))
    return shlex.split(command)


@pytest.fixture(scope="module")
def etc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/etc/kvraft as docs/deploy.md lays it out: the example configs and make-certs.sh's pki."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    etc = tmp_path_factory.mktemp("etc-kvraft")
    subprocess.run(["bash", str(DEPLOY / "make-certs.sh"), "-o", str(etc / "pki"), "-d", "2", "-c", "scheduler",
                    "-c", "agent", "-c", "admin", *MEMBERS, "gpu-01=10.0.1.21"], check=True, capture_output=True)
    for path in (DEPLOY / "config").iterdir():
        (etc / path.name).write_text(path.read_text().replace("/etc/kvraft", str(etc)))
    (etc / "peer-secret").write_text("0123456789abcdef0123456789abcdef\n")
    return etc


def test_every_unit_restarts_and_installs() -> None:
    for name in ("kvraft.service", "kvraft-scheduler.service", "kvraft-agent.service"):
        sections = unit(name)
        assert sections["Unit"]["Description"] and "network-online.target" in sections["Unit"]["After"][0]
        assert sections["Service"]["Restart"][0] in ("on-failure", "always")
        assert sections["Install"]["WantedBy"] == ["multi-user.target"]
        program = sections["Service"]["ExecStart"][0].split()[0]
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        assert Path(program).name in scripts, f"{name} runs {program}, which pyproject does not install"
    assert unit("kvraft-agent.service")["Service"]["KillMode"] == ["process"]  # tasks outlive an agent restart


def test_member_unit_and_yaml_describe_the_same_tls_member(etc: Path) -> None:
    argv = exec_argv("kvraft.service", env_file(etc / "member.env"), etc)[1:]
    flags = parse_config(argv)
    assert flags.client_cert_auth and flags.peer_client_cert_auth
    assert flags.cert_file == str(etc / "pki" / "m1.crt") and flags.peer_cert_file == str(etc / "pki" / "m1-peer.crt")
    assert all(u.startswith("https://") for u in flags.listen_client_urls + flags.listen_peer_urls)
    assert flags.listen_metrics_urls == ["http://127.0.0.1:2381"]  # monitoring without a certificate
    assert flags.client_crl_file == flags.peer_crl_file == str(etc / "pki" / "ca.crl")  # make-certs.sh's, empty
    assert set(flags.initial_members()) == {"m1", "m2", "m3"}
    yaml_config = parse_config(["--config-file", str(etc / "kvraft.yaml")])
    for field in ("name", "data_dir", "listen_client_urls", "advertise_client_urls", "listen_metrics_urls", "listen_peer_urls",
                  "initial_advertise_peer_urls", "initial_cluster", "initial_cluster_token", "peer_secret_file",
                  "cert_file", "key_file", "trusted_ca_file", "client_cert_auth", "peer_cert_file", "peer_key_file",
                  "peer_trusted_ca_file", "peer_client_cert_auth", "client_crl_file", "peer_crl_file",
                  "auto_compaction_mode",
                  "auto_compaction_retention", "quota_backend_bytes"):
        assert getattr(yaml_config, field) == getattr(flags, field), field


def test_scheduler_and_agent_units_connect_with_certificates(etc: Path) -> None:
    sched = scheduler_config(exec_argv("kvraft-scheduler.service", env_file(etc / "scheduler.env"), etc)[1:])
    assert sched.name == "sched-m1" and len(sched.endpoints) == 3 and sched.profile == "default"
    assert TLSConfig.from_flags(sched.cacert, sched.cert, sched.key) is not None
    agent = agent_config(exec_argv("kvraft-agent.service", env_file(etc / "agent.env"), etc)[1:])
    assert agent.name == "gpu-01" and agent.labels == {"rack": "r1", "switch": "s1"} and agent.runtime == "runc"
    assert agent.cert == str(etc / "pki" / "agent.crt") and agent.lease_ttl_s == 40
    assert agent.listen_url == "https://10.0.1.21:10250"  # the endpoint (logs, exec) over TLS
    for path in (sched.cacert, sched.cert, sched.key, agent.cacert, agent.cert, agent.key, agent.tls_cert_file,
                 agent.tls_private_key_file):
        assert Path(path).is_file(), f"make-certs.sh did not make {path}"


@needs_openssl
def test_make_certs_reuses_its_ca_to_add_a_machine(tmp_path: Path) -> None:
    script = ["bash", str(DEPLOY / "make-certs.sh"), "-o", str(tmp_path), "-d", "2"]
    subprocess.run([*script, "m1=10.0.0.11"], check=True, capture_output=True)
    ca = (tmp_path / "ca.crt").read_bytes()
    subprocess.run([*script, "m4=10.0.0.14,m4.example.net"], check=True, capture_output=True)
    assert (tmp_path / "ca.crt").read_bytes() == ca
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "m1.crt"),
                             str(tmp_path / "m4-peer.crt"), str(tmp_path / "client.crt")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "m4.crt"), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "IP Address:10.0.0.14" in text and "DNS:m4.example.net" in text and "IP Address:127.0.0.1" in text
    assert (tmp_path / "m4.key").stat().st_mode & 0o077 == 0
    for bad in (["m5"], ["=1.2.3.4"], ["-d", "soon", "m5=1.2.3.4"], []):
        result = subprocess.run([*script, *bad], capture_output=True, text=True)
        assert result.returncode == 2 and "make-certs:" in result.stderr, bad


@needs_openssl
@pytest.mark.parametrize("addr", ["999.1.1.1", "1.2.3", "10.0.0.1:2379", "a b", "x;y", "-bad.example.net",
                                  "m1..example.net", "10.0.0.1,,m1.example.net"])
def test_make_certs_refuses_an_address_that_is_no_ip_or_dns_name_before_making_anything(tmp_path: Path,
                                                                                       addr: str) -> None:
    """An address openssl cannot put in a certificate (a bad IP, one with a port) ended the
    script with exit 1 and no message, after the CA and a half-made key and request; a name
    with a space or a ';' went into the certificate as a DNS name no client would match."""
    out = tmp_path / "pki"
    result = subprocess.run(["bash", str(DEPLOY / "make-certs.sh"), "-o", str(out), f"m1={addr}"],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("make-certs: ") and "is neither an IP address nor a DNS name" in result.stderr
    assert not out.exists()


@needs_openssl
@pytest.mark.parametrize("days", ["0", "00", "99999999"])
def test_make_certs_refuses_a_validity_openssl_cannot_make(tmp_path: Path, days: str) -> None:
    """-d 0 and -d 99999999 ended the script with exit 1 and no message (openssl's errors go
    to /dev/null), -d 99999999 after leaving a CA key without its certificate."""
    out = tmp_path / "pki"
    result = subprocess.run(["bash", str(DEPLOY / "make-certs.sh"), "-o", str(out), "-d", days, "m1=10.0.0.1"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("make-certs: -d "), result.stderr
    assert not out.exists()


@needs_openssl
@pytest.mark.parametrize("args", [["ca=10.0.0.1"], ["-c", "ca"], ["-c", "CA", "m1=10.0.0.1"]])
def test_make_certs_names_nothing_ca(tmp_path: Path, args: list[str]) -> None:
    """A member or client named 'ca' was 'kept' the CA's own ca.crt, and its key file is the
    CA's key: that machine could sign certificates for anyone."""
    out = tmp_path / "pki"
    result = subprocess.run(["bash", str(DEPLOY / "make-certs.sh"), "-o", str(out), *args],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("make-certs: ") and "'ca'" in result.stderr.lower()
    assert not out.exists()


@needs_openssl
def test_make_certs_takes_ipv6_addresses_and_wildcard_names(tmp_path: Path) -> None:
    subprocess.run(["bash", str(DEPLOY / "make-certs.sh"), "-o", str(tmp_path), "m1=fe80::1,*.m1.example.net,M1-a.b"],
                   check=True, capture_output=True)
    text = _openssl("x509", "-in", str(tmp_path / "m1.crt"), "-noout", "-text").stdout
    assert "IP Address:FE80:0:0:0:0:0:0:1" in text and "DNS:*.m1.example.net" in text and "DNS:M1-a.b" in text


@needs_openssl
@pytest.mark.parametrize("missing", ["ca.key", "ca.crt"])
def test_make_certs_never_replaces_a_ca_it_has_half_of(tmp_path: Path, missing: str) -> None:
    """A pki dir with ca.crt but not ca.key (copied to a machine without the key, as the docs
    say to keep it) or the reverse: the script made a new CA over it, and every certificate
    already issued no longer verified against ca.crt; it now refuses and changes nothing."""
    script = ["bash", str(DEPLOY / "make-certs.sh"), "-o", str(tmp_path)]
    subprocess.run([*script, "m1=10.0.0.11"], check=True, capture_output=True)
    (tmp_path / missing).unlink()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = subprocess.run([*script, "m2=10.0.0.12"], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("make-certs: ") and missing in result.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _openssl(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *argv], capture_output=True, text=True, check=False)


@needs_openssl
def test_make_certs_revokes_a_machine_and_revoking_again_is_harmless(tmp_path: Path) -> None:
    script = ["bash", str(DEPLOY / "make-certs.sh"), "-o", str(tmp_path), "-d", "2"]
    subprocess.run([*script, "-c", "alice", "-c", "bob", "m1=10.0.0.11", "m2=10.0.0.12"], check=True,
                   capture_output=True)
    crl, ca = str(tmp_path / "ca.crl"), str(tmp_path / "ca.crt")
    assert "No Revoked Certificates" in _openssl("crl", "-in", crl, "-noout", "-text").stdout  # day one
    assert (tmp_path / "ca.crl").stat().st_mode & 0o777 == 0o644

    def verify(*names: str) -> dict[str, bool]:
        return {n: _openssl("verify", "-crl_check", "-CRLfile", crl, "-CAfile", ca, str(tmp_path / f"{n}.crt"))
                .returncode == 0 for n in names}

    everyone = ("alice", "bob", "m1", "m1-peer", "m2", "m2-peer")
    assert all(verify(*everyone).values())
    first = subprocess.run([*script, "-r", "alice", "-r", "m2"], capture_output=True, text=True)
    assert first.returncode == 0 and first.stdout.count("revoked ") == 3, first.stdout + first.stderr
    assert verify(*everyone) == {"alice": False, "bob": True, "m1": True, "m1-peer": True, "m2": False,
                                 "m2-peer": False}
    text = _openssl("crl", "-in", crl, "-noout", "-text").stdout
    again = subprocess.run([*script, "-r", "alice"], capture_output=True, text=True)
    assert again.returncode == 0 and "already revoked" in again.stdout, again.stderr
    assert _openssl("crl", "-in", crl, "-noout", "-text").stdout.count("Serial Number:") == text.count(
        "Serial Number:") == 3
    # issuing alice again gives her a new certificate, which the list does not name
    reissue = subprocess.run([*script, "-c", "alice"], capture_output=True, text=True)
    assert reissue.returncode == 0 and "reissuing" in reissue.stdout, reissue.stderr
    assert verify("alice", "bob", "m2") == {"alice": True, "bob": True, "m2": False}
    renew = subprocess.run([*script, "-l"], capture_output=True, text=True)
    assert renew.returncode == 0 and "3 revoked" in renew.stdout, renew.stderr
    for bad, code in ((["-r", "nobody"], 1), (["-r", "../ca"], 2), (["-l", "m3=1.2.3.4"], 2), ([], 2)):
        result = subprocess.run([*script, *bad], capture_output=True, text=True)
        assert result.returncode == code and "make-certs:" in result.stderr, bad
    fresh = subprocess.run([*script[:2], "-o", str(tmp_path / "none"), "-r", "alice"], capture_output=True, text=True)
    assert fresh.returncode == 1 and "no CA in" in fresh.stderr


def test_dockerfiles_copy_what_exists_and_run_installed_programs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name in ("Dockerfile.server", "Dockerfile.agent", "Dockerfile.train"):
        text = (DEPLOY / "docker" / name).read_text()
        for line in text.splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
        entry = re.search(r'^ENTRYPOINT \[(.*)\]', text, re.M)
        assert entry is not None, name
        programs = [p.strip().strip('"') for p in entry.group(1).split(",")]
        kvraft = [p for p in programs if p.startswith("kvraft")]
        assert all(p in project["scripts"] for p in kvraft), (name, programs)
        extras = re.search(r"^ARG EXTRAS=(\S+)", text, re.M)
        if extras:
            assert set(extras.group(1).split(",")) <= set(project["optional-dependencies"]), name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_every_unit(tmp_path: Path) -> None:
    """``systemd-analyze verify`` reads each unit (unknown keys, bad values and sections are
    reported); the program path is pointed at an existing executable, since /opt/kvraft is
    not installed here."""
    for name in ("kvraft.service", "kvraft-scheduler.service", "kvraft-agent.service"):
        text = (DEPLOY / "systemd" / name).read_text()
        text = re.sub(r"/opt/kvraft/venv/bin/[\w-]+", shutil.which("true") or "/bin/true", text)
        path = tmp_path / name
        path.write_text(text)
        result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (name, result.stderr)
