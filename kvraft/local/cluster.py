"""A whole local cluster in the background: kvraft members, schedulers, node agents.

State lives in ``<dir>/cluster.json`` (every process's name, role, pid, start time, URL and
log), so ``status``, ``kill-node`` and ``down`` work from any later shell. Ports are free ports
chosen at ``up``; several clusters in different directories run side by side.

Addresses: with ``network="loopback"`` members and schedulers listen on 127.0.0.1 and agent
``i`` on its own loopback address ``127.0.0.<10+i>``, where its tasks bind their collective
sockets (``KVRAFT_COLLECTIVE_HOST``); with ``network="netns"`` (root) every agent runs in its
own network namespace on a bridge (``kvraft.local.netns``). Clusters side by side need
distinct ``node_prefix``es (agents' cgroup parents are per node name).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kvraft.local.netns import NetPlan
from kvraft.local.netns import available as netns_available
from kvraft.local.netns import plan as netns_plan
from kvraft.local.netns import setup as netns_setup
from kvraft.local.netns import teardown as netns_teardown
from kvraft.local.procs import (
    agent_descendants,
    free_port,
    http_ok,
    kill_pids,
    pid_alive,
    proc_start_time,
    spawn,
    wait_gone,
)

__all__ = ["MAX_AGENTS", "ClusterError", "LocalSpec", "Proc", "down", "kill_node", "load_state", "start_node", "status", "up"]

ROOT = Path(__file__).resolve().parents[2]
STATE = "cluster.json"
FAST_RAFT = ["--heartbeat-interval", "100", "--election-timeout", "1000"]
MAX_AGENTS = 245  # agent i's address ends in .<10+i>


class ClusterError(RuntimeError):
    """Something a user can act on (printed without a traceback)."""


@dataclass
class LocalSpec:
    members: int = 3
    schedulers: int = 2
    agents: int = 4
    gpus_per_agent: int = 4
    racks: int = 2
    runtime: str = "process"
    lease_ttl_s: int = 10
    heartbeat_s: float = 2.0
    election_ttl_s: int = 5
    dashboard: bool = True
    # Node names must differ between clusters on one machine: an agent's cgroups live under
    # /kvraft-agent/<node>/ and its start-up sweep removes what it does not own there.
    node_prefix: str = "node"
    network: str = "loopback"  # or "netns": a network namespace per agent on a bridge (root)
    tls: bool = False  # client and peer mutual TLS, certificates from deploy/make-certs.sh in <dir>/pki
    plugin_args: tuple[str, ...] = ()  # the schedulers' --plugin-arg PLUGIN.ARG=JSON


@dataclass
class Proc:
    name: str
    role: str  # member, scheduler, agent, dashboard
    pid: int
    start_time: int | None
    url: str
    log: str
    rack: str = ""
    data_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def alive(self) -> bool:
        return pid_alive(self.pid, self.start_time)


LOCAL_EVICTION_HARD = "nodefs.available<1Gi,nodefs.inodesFree<1%"
"""The local agents' disk thresholds. kubelet's default, 10% of the filesystem, is 25 GiB of a
252 GiB disk shared with other work: on such a machine (CI's) the agents went NotReady
(DiskPressure) with the disk at 9.7% free, and a job submitted then waited for ever. kind turns
kubelet's thresholds off for the same reason; 1 GiB still keeps tasks off a full disk."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def load_state(directory: Path) -> dict[str, Any]:
    path = directory / STATE
    if not path.exists():
        raise ClusterError(f"no local cluster in {directory} (run: kvraft-local up --dir {directory})")
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if not isinstance(doc.get("dir"), str) or not isinstance(doc.get("endpoints", []), list):
            raise ValueError("no 'dir', or 'endpoints' is not a list")
        _procs(doc)
    except (OSError, ValueError, TypeError) as exc:
        raise ClusterError(f"{path} is damaged ({exc}): stop what it started by hand, then remove it") from exc
    return doc


def _save(directory: Path, doc: dict[str, Any]) -> None:
    tmp = directory / f".{STATE}.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, directory / STATE)


def _procs(doc: dict[str, Any]) -> list[Proc]:
    procs = doc.get("processes", [])
    if not isinstance(procs, list) or not all(isinstance(p, dict) for p in procs):
        raise ValueError("'processes' is not a list of objects")
    return [Proc(**p) for p in procs]


def _post(url: str, path: str, body: dict[str, Any], context: ssl.SSLContext | None = None) -> int:
    return _request(url, path, body, context)[0]


def _request(url: str, path: str, body: dict[str, Any], context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """POST a JSON body; (status, the decoded answer), (0, None) when nothing answered."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname or "127.0.0.1", parts.port or 443, timeout=3, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=3)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        return response.status, answer
    except (OSError, http.client.HTTPException):
        return 0, None
    finally:
        conn.close()


NOT_READY_GRACE_S = 20.0
"""How long ``up`` lets a registered agent stay NotReady before it fails, naming why."""


def _node_ready(endpoints: list[str], name: str, context: ssl.SSLContext | None) -> tuple[bool | None, str]:
    """Whether the node record of ``name`` says Ready (None: no record yet) and its Ready message."""
    key = base64.b64encode(f"/registry/nodes/{name}".encode()).decode()
    for url in endpoints:
        status, answer = _request(url, "/v3/kv/range", {"key": key}, context)
        if status != 200 or not isinstance(answer, dict):
            continue
        kvs = answer.get("kvs") or []
        if not kvs:
            return None, ""
        try:
            doc = json.loads(base64.b64decode(kvs[0].get("value", "")))
        except ValueError:
            return None, ""
        ready: dict[str, Any] = next((c for c in doc.get("conditions", []) if c.get("type") == "Ready"), {})
        return doc.get("healthy") is True, str(ready.get("message", ""))
    return None, ""


def _wait_ready_nodes(agents: list[Proc], endpoints: list[str], context: ssl.SSLContext | None, timeout_s: float) -> None:
    """Every agent's node Ready: one still NotReady ``NOT_READY_GRACE_S`` after it registered
    fails ``up`` with its Ready message (kind's ``--wait``); jobs would never be placed there."""
    deadline = time.monotonic() + timeout_s
    seen_at: dict[str, float] = {}
    waiting = list(agents)
    while waiting:
        now = time.monotonic()
        for q in list(waiting):
            ready, message = _node_ready(endpoints, q.name, context)
            if ready:
                waiting.remove(q)
            elif ready is False and now - seen_at.setdefault(q.name, now) > NOT_READY_GRACE_S:
                hint = " (thresholds: kvraft-agent --eviction-hard)" if "Pressure" in message else ""
                raise ClusterError(f"agent {q.name} is not Ready: {message or 'no reason given'}{hint}; see {q.log}")
        if waiting and time.monotonic() > deadline:
            raise ClusterError(f"agent {waiting[0].name} never registered a Ready node in {timeout_s:.0f} s; "
                               f"see {waiting[0].log}")
        if waiting:
            time.sleep(0.25)


@contextlib.contextmanager
def _interrupt_after() -> Iterator[None]:
    """A Ctrl-C during the block takes effect at its end: a process is started and recorded in
    cluster.json as one step, so that up's clean-up (or ``down``) knows every process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    olds = {sig: signal.signal(sig, lambda signum, frame: got.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in olds.items():
            signal.signal(sig, old)
    if got:
        handler = olds[signal.Signals(got[0])]
        if callable(handler):
            handler(got[0], None)  # SIGINT's default handler (or the CLI's SIGTERM one) raises KeyboardInterrupt
        elif handler == signal.SIG_DFL and got[0] == signal.SIGTERM:
            os.kill(os.getpid(), signal.SIGTERM)  # no handler of ours: die as SIGTERM does


def _wait(what: str, cond: Any, timeout_s: float, logs: list[str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} not ready after {timeout_s:.0f} s; logs: {', '.join(logs)}")
        time.sleep(0.2)


@contextlib.contextmanager
def _working_on(directory: Path) -> Iterator[None]:
    """Hold ``<dir>/.lock`` while up, down or start-node works there: two at once (two ``up``s)
    would each start a cluster and record only one of them."""
    with open(directory / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClusterError(f"another kvraft-local is working on {directory} (up, down or start-node); "
                               "try again when it is done") from None
        yield


def up(directory: Path, spec: LocalSpec, *, timeout_s: float = 120.0, say: Any = print) -> dict[str, Any]:
    directory = directory.resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f".{STATE}.tmp").touch()
    except OSError as exc:
        why = "not a directory" if isinstance(exc, FileExistsError) else (exc.strerror or str(exc))
        raise ClusterError(f"--dir {directory} cannot hold a cluster: {why}") from exc
    with _working_on(directory):
        return _up(directory, spec, timeout_s=timeout_s, say=say)


def _up(directory: Path, spec: LocalSpec, *, timeout_s: float, say: Any) -> dict[str, Any]:
    kept: list[Proc] = []  # members of a stopped cluster here whose data dirs are left
    if (directory / STATE).exists():
        old = load_state(directory)
        if any(p.alive() for p in _procs(old)):
            raise ClusterError(f"a cluster is already running in {directory} (kvraft-local down --dir {directory})")
        kept = [p for p in _procs(old) if p.role == "member" and (directory / "members" / p.name).is_dir()]
        if kept and (len(kept) != spec.members or not all(p.extra.get("peer_url") for p in kept)
                     or old.get("spec", {}).get("network") != spec.network or bool(old.get("tls")) != spec.tls):
            raise ClusterError(f"{directory} holds the data of a stopped cluster of {len(kept)} members "
                               f"({old.get('spec', {}).get('network')} network{', TLS' if old.get('tls') else ''}) "
                               f"that up cannot start again as asked; remove {directory / 'members'} for a new one")
    if spec.agents < 1 or spec.members < 1 or spec.schedulers < 0 or not 1 <= spec.racks <= spec.agents:
        raise ClusterError("need at least 1 member, 1 agent and 1 rack, and no more racks than agents")
    env = _env()
    py = sys.executable
    procs: list[Proc] = []
    doc: dict[str, Any] = {"dir": str(directory), "spec": asdict(spec), "created_at": time.time(), "processes": []}

    def record(p: Proc) -> None:
        procs.append(p)
        doc["processes"] = [asdict(x) for x in procs]
        _save(directory, doc)

    net: NetPlan | None = None
    hostaddr = "127.0.0.1"
    if spec.network == "netns":
        why = netns_available()
        if why:
            raise ClusterError(f"--network netns needs root and ip netns here: {why}")
        if spec.tls:
            raise ClusterError("--tls with --network netns is not supported yet (certificates name 127.0.0.1)")
        net = netns_plan(directory, spec.agents)
        netns_setup(net)
        hostaddr = net.host_address
        doc["network"] = {"mode": "netns", "bridge": net.bridge, "subnet": net.subnet + ".0/24",
                          "namespaces": list(net.namespaces)}
        _save(directory, doc)
    elif spec.network != "loopback":
        raise ClusterError(f"--network must be loopback or netns, not {spec.network!r}")
    try:
        # members
        scheme = "https" if spec.tls else "http"
        peers = {f"m{i}": f"{scheme}://{hostaddr}:{free_port(hostaddr)}" for i in range(spec.members)}
        clients = {f"m{i}": f"{scheme}://{hostaddr}:{free_port(hostaddr)}" for i in range(spec.members)}
        if kept:  # their data dirs name their peers' URLs: start them again where they were
            peers = {p.name: str(p.extra["peer_url"]) for p in kept}
            clients = {p.name: p.url for p in kept}
        tls = _make_certs(directory / "pki", list(peers)) if spec.tls else None
        context = tls_context(tls) if tls else None
        if tls:
            doc["tls"] = tls
        initial = ",".join(f"{n}={u}" for n, u in peers.items())
        token = f"kvraft-local-{os.getpid()}-{int(time.time())}"
        for name in peers:
            data = directory / "members" / name
            log = directory / "logs" / f"{name}.log"
            argv = [py, "-m", "kvraft.server.main", "--name", name, "--data-dir", str(data),
                    "--listen-client-urls", clients[name], "--advertise-client-urls", clients[name],
                    "--listen-peer-urls", peers[name], "--initial-advertise-peer-urls", peers[name],
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", token, *FAST_RAFT]
            if tls:
                pki = directory / "pki"
                argv += ["--cert-file", str(pki / f"{name}.crt"), "--key-file", str(pki / f"{name}.key"),
                         "--trusted-ca-file", tls["cacert"], "--client-cert-auth",
                         "--peer-cert-file", str(pki / f"{name}-peer.crt"), "--peer-key-file", str(pki / f"{name}-peer.key"),
                         "--peer-trusted-ca-file", tls["cacert"], "--peer-client-cert-auth",
                         # make-certs.sh's CRL (empty until `make-certs.sh -o <dir>/pki -r NAME`),
                         # read again by the members when it changes, as the systemd unit does
                         "--client-crl-file", str(pki / "ca.crl"), "--peer-crl-file", str(pki / "ca.crl")]
            with _interrupt_after():
                p = spawn(argv, log, env)
                record(Proc(name, "member", p.pid, proc_start_time(p.pid), clients[name], str(log), data_dir=str(data),
                            extra={"peer_url": peers[name]}))
        endpoints = list(clients.values())
        doc["endpoints"] = endpoints
        _save(directory, doc)
        say(f"kvraft-local: {spec.members} members starting ({', '.join(endpoints)})")
        key = base64.b64encode(b"kvraft-local/ready").decode()
        for q in procs:
            _wait(f"member {q.name}", lambda q=q: (not q.alive()) or _post(q.url, "/v3/kv/range", {"key": key}, context) == 200,
                  timeout_s, [q.log])
            if not q.alive():  # a port taken since it was picked, a data dir it refuses
                raise ClusterError(f"member {q.name} exited at start; see {q.log}{_last_words(q.log)}")
        eps = ",".join(endpoints)
        # schedulers
        for i in range(spec.schedulers):
            name = f"sched-{i}"
            url = f"http://{hostaddr}:{free_port(hostaddr)}"
            log = directory / "logs" / f"{name}.log"
            argv = [py, "-m", "scheduler.service", "--endpoints", eps, "--name", name, "--listen-url", url,
                    "--election-ttl-s", str(spec.election_ttl_s), "--cycle-interval-s", "0.5"]
            argv += [arg for setting in spec.plugin_args for arg in ("--plugin-arg", setting)]
            if tls:
                argv += _client_flags(directory / "pki", "scheduler")
            with _interrupt_after():
                p = spawn(argv, log, env)
                record(Proc(name, "scheduler", p.pid, proc_start_time(p.pid), url, str(log)))
        # the dashboard (scheduler.dashboard), when this build has it
        if spec.dashboard and (ROOT / "scheduler" / "dashboard" / "main.py").exists():
            url = f"http://{hostaddr}:{free_port(hostaddr)}"
            log = directory / "logs" / "dashboard.log"
            argv = [py, "-m", "scheduler.dashboard.main", "--endpoints", eps, "--listen-url", url, "--allow-writes"]
            argv += [arg for q in procs if q.role == "scheduler" for arg in ("--scheduler-url", q.url)]
            if tls:
                argv += _client_flags(directory / "pki", "scheduler")
            with _interrupt_after():
                p = spawn(argv, log, env)
                record(Proc("dashboard", "dashboard", p.pid, proc_start_time(p.pid), url, str(log)))
        # agents: contiguous blocks per rack, so a rack holds several nodes; every rack has some
        for i in range(spec.agents):
            rack = f"rack-{i * spec.racks // spec.agents}"
            name = f"{spec.node_prefix}-{i}"
            host = net.address(i) if net else f"127.0.0.{10 + i}"
            url = f"http://{host}:{free_port() if net else free_port(host)}"
            home = directory / "agents" / name
            home.mkdir(parents=True, exist_ok=True)
            inventory = home / "gpus.yaml"
            inventory.write_text(f"count: {spec.gpus_per_agent}\nmodel: FAKE-H100\nuuid_prefix: {name}\n"
                                 f"memory_mib: 81559\nislands: [{spec.gpus_per_agent}]\n")
            log = directory / "logs" / f"{name}.log"
            argv = [py, "-m", "agent.main", "--endpoints", eps, "--name", name, "--data-dir", str(home / "data"),
                    "--runtime", spec.runtime, "--labels", f"rack={rack}", "--gpu-inventory", str(inventory),
                    "--lease-ttl-s", str(spec.lease_ttl_s), "--heartbeat-s", str(spec.heartbeat_s),
                    "--listen-url", url, "--restart-backoff-s", "1", "--node-status-s", "5",
                    "--eviction-hard", LOCAL_EVICTION_HARD]
            if tls:
                argv += _client_flags(directory / "pki", "agent")
            argv = (net.exec_prefix(i) if net else []) + argv
            with _interrupt_after():
                p = spawn(argv, log, env)
                record(Proc(name, "agent", p.pid, proc_start_time(p.pid), url, str(log), rack=rack,
                            data_dir=str(home / "data"),
                            extra={"address": host, "gpus": spec.gpus_per_agent, "argv": argv}))
        for q in procs:
            if q.role in ("agent", "scheduler", "dashboard"):
                _wait(f"{q.role} {q.name}", lambda q=q: (not q.alive()) or http_ok(q.url), timeout_s, [q.log])
                if not q.alive():
                    raise ClusterError(f"{q.role} {q.name} exited at start; see {q.log}{_last_words(q.log)}")
        _wait_ready_nodes([q for q in procs if q.role == "agent"], endpoints, context, timeout_s)
        if spec.schedulers:
            _wait("a scheduler leader", lambda: any(_is_leader(p.url) for p in procs if p.role == "scheduler"),
                  timeout_s, [p.log for p in procs if p.role == "scheduler"])
    except BaseException:
        _stop(procs, directory)
        if net:
            netns_teardown(net)
        raise
    return doc


def _last_words(log: str | Path) -> str:
    """A process that exited at start: the last line of its log, which says why (a flag it
    refused, an address in use), as ``: ...``; "" when there is none."""
    try:
        lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f": {lines[-1][:300]}" if lines else ""


def _make_certs(pki: Path, members: list[str]) -> dict[str, str]:
    """A CA and certificates for every member and for the scheduler, agent and admin clients
    (``deploy/make-certs.sh``; the CA is reused if ``pki`` has one)."""
    script = ROOT / "deploy" / "make-certs.sh"
    argv = ["bash", str(script), "-o", str(pki), "-d", "30", "-c", "scheduler", "-c", "agent", "-c", "admin",
            *(f"{m}=127.0.0.1" for m in members)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ClusterError(f"--tls: making certificates failed: {done.stderr.strip()[-500:]}")
    return {"cacert": str(pki / "ca.crt"), "cert": str(pki / "admin.crt"), "key": str(pki / "admin.key")}


def _client_flags(pki: Path, who: str) -> list[str]:
    return ["--cacert", str(pki / "ca.crt"), "--cert", str(pki / f"{who}.crt"), "--key", str(pki / f"{who}.key")]


def tls_context(tls: dict[str, str]) -> ssl.SSLContext:
    """A client context with the cluster's CA and the admin certificate (``doc["tls"]``)."""
    context = ssl.create_default_context(cafile=tls["cacert"])
    context.load_cert_chain(tls["cert"], tls["key"])
    return context


def _is_leader(url: str) -> bool:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=2)
    try:
        conn.request("GET", "/health")
        r = conn.getresponse()
        return r.status == 200 and bool(json.loads(r.read() or b"{}").get("leader"))
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def status(directory: Path) -> dict[str, Any]:
    doc = load_state(directory.resolve())
    out = []
    for p in _procs(doc):
        alive = p.alive()
        row: dict[str, Any] = {"name": p.name, "role": p.role, "pid": p.pid, "url": p.url, "alive": alive}
        if p.role == "agent":
            row["rack"] = p.rack
        if alive and p.role == "member" and doc.get("tls"):
            row["healthy"] = _post(p.url, "/v3/maintenance/status", {}, tls_context(doc["tls"])) == 200
        elif alive:
            row["healthy"] = http_ok(p.url, "/health" if p.role != "member" else "/health", 2.0)
        else:
            row["healthy"] = False
        out.append(row)
    dash = next((p.url for p in _procs(doc) if p.role == "dashboard"), None)
    return {"dir": doc["dir"], "endpoints": doc.get("endpoints", []), "processes": out, "dashboard": dash,
            **({"tls": doc["tls"]} if doc.get("tls") else {})}


def start_node(directory: Path, name: str, timeout_s: float = 120.0) -> int:
    """Start a node's agent again with the flags ``up`` gave it (after ``kill-node``, or an
    agent killed alone): it re-registers (or resumes its lease) and re-attaches to the tasks
    still running under their supervisors. Returns the new PID."""
    directory = directory.resolve()
    load_state(directory)
    with _working_on(directory):
        return _start_node(directory, name, timeout_s)


def _start_node(directory: Path, name: str, timeout_s: float) -> int:
    doc = load_state(directory)
    procs = _procs(doc)
    by_name = {p.name: p for p in procs if p.role == "agent"}
    if name not in by_name:
        raise ClusterError(f"no node {name!r} in {directory} (nodes: {', '.join(sorted(by_name))})")
    old = by_name[name]
    if old.alive():
        raise ClusterError(f"the agent of {name} is running (pid {old.pid})")
    if not any(p.alive() for p in procs if p.role == "member"):
        raise ClusterError(f"no member of the cluster is running (down, or killed): start it with "
                           f"kvraft-local up --dir {directory}")
    argv = old.extra.get("argv")
    if not argv:
        raise ClusterError(f"{name}: no recorded command line (cluster made by an older kvraft-local)")
    child = spawn(list(argv), Path(old.log), _env())
    old.pid, old.start_time = child.pid, proc_start_time(child.pid)
    doc["processes"] = [asdict(p) for p in procs]
    _save(directory, doc)
    _wait(f"agent {name}", lambda: (not old.alive()) or http_ok(old.url), timeout_s, [old.log])
    if not old.alive():
        raise ClusterError(f"agent {name} exited at start; see {old.log}{_last_words(old.log)}")
    return child.pid


def kill_node(directory: Path, name: str) -> list[int]:
    """SIGKILL a node agent and every process it started (supervisors, tasks, MPI daemons and
    ranks): what losing the machine looks like on one box."""
    doc = load_state(directory.resolve())
    agents = {p.name: p for p in _procs(doc) if p.role == "agent"}
    if name not in agents:
        raise ClusterError(f"no node {name!r} in {directory} (nodes: {', '.join(sorted(agents))})")
    p = agents[name]
    victims = agent_descendants(p.pid if p.alive() else None, Path(p.data_dir))
    if p.alive():
        victims.add(p.pid)
    kill_pids(victims, signal.SIGKILL)
    left = wait_gone(victims, 10.0)
    # anything the tasks spawned during the first sweep
    again = agent_descendants(None, Path(p.data_dir)) - victims
    kill_pids(again, signal.SIGKILL)
    if left:
        raise ClusterError(f"processes still alive after SIGKILL: {sorted(left)}")
    return sorted(victims | again)


def _stop(procs: list[Proc], directory: Path) -> list[int]:
    stopped: list[int] = []
    order = {"dashboard": 0, "scheduler": 0, "agent": 1, "member": 2}
    for role in sorted(order, key=order.__getitem__):
        group = [p for p in procs if p.role == role]
        pids = {p.pid for p in group if p.alive()}
        if role == "agent":
            for p in group:
                pids |= agent_descendants(p.pid if p.alive() else None, Path(p.data_dir)) if p.data_dir else set()
        kill_pids(pids, signal.SIGTERM)
        left = wait_gone(pids, 10.0)
        kill_pids(left, signal.SIGKILL)
        wait_gone(left, 10.0)
        stopped += sorted(pids)
    return stopped


def _reset_agents(procs: list[Proc]) -> None:
    """``kvraft-agent reset`` for the cluster's nodes, once every agent and task is stopped:
    the cgroups of tasks killed with their agent (``kvraft-agent/<node>``) are left otherwise,
    as an agent keeps them across a stop (it re-attaches, or sweeps them when it starts), and a
    torn-down cluster's agents never start again; they piled up one set per node name."""
    nodes = [p.name for p in procs if p.role == "agent"]
    if nodes:
        subprocess.run([sys.executable, "-m", "agent", "reset", *nodes], env=_env(), cwd=ROOT,
                       capture_output=True, timeout=60, check=False)


def down(directory: Path) -> list[int]:
    directory = directory.resolve()
    load_state(directory)
    with _working_on(directory):
        return _down(directory)


def _down(directory: Path) -> list[int]:
    doc = load_state(directory)
    procs = _procs(doc)
    stopped = _stop(procs, directory)
    _reset_agents(procs)
    if doc.get("network", {}).get("mode") == "netns":
        netns_teardown(netns_plan(directory, len(doc["network"]["namespaces"])))
    doc["stopped_at"] = time.time()
    _save(directory, doc)
    return stopped
