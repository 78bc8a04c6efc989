"""Real processes on 127.0.0.1, shared by the package's tests: a 3-member kvraft (member m0 also serves
``--listen-metrics-urls``; m1 logs to stderr and a file), one ``kvraft-scheduler``, one
``kvraft-agent`` (process runtime, a fake 2-GPU inventory) and ``kvraft-dashboard``. Every
process is stopped by PID in teardown, and the agent's task processes are killed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from kvraft.local.cluster import LOCAL_EVICTION_HARD as TEST_EVICTION_HARD
from kvraft.server.local import LocalCluster, free_port

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
FAST_FLAGS = ["--heartbeat-interval", "50", "--election-timeout", "500"]


def wait_for(cond: Callable[[], Any], timeout_s: float = 90.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def get(url: str, timeout_s: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@dataclass
class Scrape:
    """One ``/metrics`` page parsed by prometheus_client's own text parser."""

    text: str
    types: dict[str, str] = field(default_factory=dict)  # family name -> type
    samples: list[Sample] = field(default_factory=list)

    @classmethod
    def of(cls, base_url: str) -> Scrape:
        code, text = get(base_url.rstrip("/") + "/metrics")
        assert code == 200, (base_url, code, text[:500])
        page = cls(text)
        for family in text_string_to_metric_families(text):
            page.types[family.name] = family.type
            page.samples.extend(family.samples)
        return page

    def names(self) -> set[str]:
        """Every series name the page can carry: its samples' names, and those its families
        declare even while they have no sample yet (a counter by label with no label seen)."""
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
        declared = {family + suffix for family, kind in self.types.items() for suffix in suffixes.get(kind, ("",))}
        return {s.name for s in self.samples} | declared

    def value(self, metric: str, **labels: str) -> float:
        hits = [s.value for s in self.samples
                if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(hits) == 1, (metric, labels, hits)
        return float(hits[0])

    def labelled(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name]


@dataclass
class Stack:
    cluster: LocalCluster
    base: Path
    endpoints: list[str]
    metrics_url: str  # m0's --listen-metrics-urls
    zap_file: Path  # m1's --log-outputs file
    node: str
    agent_data: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], *, ready_line: bool = False) -> subprocess.Popen[bytes]:
        log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child
        self.logs[name] = self.base / f"{name}.log"
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE if ready_line else log, stderr=log,
                                stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        log.close()
        self.procs[name] = proc
        return proc

    def jobctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "scheduler.cli.main", "--endpoints", ",".join(self.endpoints), *args],
                              input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))

    def member_url(self, name: str) -> str:
        return self.cluster.url(name)

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from tests.agent.conftest import kill_task_processes

    base = tmp_path_factory.mktemp("obs")
    cluster = LocalCluster(3, base / "kv", extra_args=FAST_FLAGS)
    metrics_url = f"http://127.0.0.1:{free_port()}"
    zap_file = base / "m1-zap.log"
    cluster.members["m0"].extra += ["--listen-metrics-urls", metrics_url]
    cluster.members["m1"].extra += ["--log-outputs", f"stderr,{zap_file}"]
    node = f"obs{os.getpid()}"  # agent cgroups are per node name: never share one with another test
    s = Stack(cluster, base, [m.client_url for m in cluster.members.values()], metrics_url, zap_file, node,
              base / "agent-data")
    try:
        cluster.start(timeout_s=120)
        eps = ",".join(s.endpoints)
        s.urls["scheduler"] = f"http://127.0.0.1:{free_port()}"
        s.start("scheduler", [PY, "-m", "scheduler.service", "--endpoints", eps, "--name", "obs-sched",
                              "--listen-url", s.urls["scheduler"], "--election-ttl-s", "3", "--cycle-interval-s", "0.5"])
        inventory = base / "gpus.yaml"
        inventory.write_text(f"count: 2\nmodel: FAKE-H100\nuuid_prefix: {node}\nmemory_mib: 81559\nislands: [2]\n")
        s.urls["agent"] = f"http://127.0.0.1:{free_port()}"
        s.start("agent", [PY, "-m", "agent", "--endpoints", eps, "--name", node, "--data-dir", str(s.agent_data),
                          "--runtime", "process", "--labels", "rack=rack-0", "--gpu-inventory", str(inventory),
                          "--listen-url", s.urls["agent"], "--lease-ttl-s", "4", "--heartbeat-s", "1",
                          "--relist-s", "0.5", "--node-status-s", "1", "--request-timeout-s", "10",
                          "--eviction-hard", TEST_EVICTION_HARD])
        dash = s.start("dashboard", [PY, "-m", "scheduler.dashboard.main", "--endpoints", eps,
                                     "--listen-url", "http://127.0.0.1:0", "--scheduler-url", s.urls["scheduler"],
                                     "--poll-s", "0.5"], ready_line=True)
        assert dash.stdout is not None
        line = dash.stdout.readline().decode().strip()  # "dashboard: http://127.0.0.1:PORT/"
        assert line.startswith("dashboard: http://127.0.0.1:"), (line, s.logs["dashboard"].read_text()[-2000:])
        s.urls["dashboard"] = line.split(" ", 1)[1].rstrip("/")
        for name in ("scheduler", "agent", "dashboard"):
            wait_for(lambda n=name: get(s.urls[n] + "/health")[0] == 200 or s.procs[n].poll() is not None,
                     120, f"{name} healthy")
            assert s.procs[name].poll() is None, s.logs[name].read_text()[-3000:]
        yield s
    finally:
        s.stop()
        kill_task_processes(s.agent_data)
        cluster.stop()
