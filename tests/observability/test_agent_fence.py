"""The agent's fence (docs/design/agent.md) shows in /health and /metrics (issue 11's
leftover): kvraft unreachable past the lease TTL + ``--lease-loss-grace-s`` makes /health
answer 503 ``fenced`` and ``kvraft_agent_fenced`` 1; back in touch (renewed and relisted) the
fence lifts, ``kvraft_agent_fences_total`` keeps the count."""

from __future__ import annotations

import json
import signal

from kvraft.server.local import LocalCluster
from tests.agent.conftest import FAST_FLAGS, AgentProcess, kill_task_processes
from tests.observability.conftest import Scrape, get, wait_for


def _health(url: str) -> tuple[int, dict[str, object]]:
    code, body = get(url + "/health")
    return code, (json.loads(body) if body else {})


def test_fence_in_health_and_metrics(tmp_path) -> None:
    cluster = LocalCluster(1, tmp_path / "kv1", extra_args=FAST_FLAGS)
    agent = None
    try:
        cluster.start(timeout_s=90)
        agent = AgentProcess(cluster, tmp_path, "n-obs-fence", "process", "--lease-loss-grace-s", "1").start()
        url = agent.url
        wait_for(lambda: _health(url)[0] == 200, 90, "the agent registered")
        code, doc = _health(url)
        assert (doc["status"], doc["fenced"], doc["fences"]) == ("ok", False, 0)
        page = Scrape.of(url)
        assert (page.value("kvraft_agent_fenced"), page.value("kvraft_agent_fences_total")) == (0, 0)
        cluster.stop_member("m0", sig=signal.SIGKILL)
        # TTL 4 s + grace 1 s without a renewal: fenced
        wait_for(lambda: _health(url)[1].get("fenced") is True, 90, "the fence in /health")
        code, doc = _health(url)
        assert code == 503 and doc["status"] == "fenced" and doc["fences"] == 1, doc
        assert float(str(doc["lease_age_s"])) > 4
        page = Scrape.of(url)
        assert page.value("kvraft_agent_fenced") == 1 and page.value("kvraft_agent_fences_total") == 1
        assert page.value("kvraft_agent_lease_age_seconds") > 4
        assert "fenced" in agent.log_text()
        cluster.start_member("m0")
        cluster.wait_ready(90)
        wait_for(lambda: _health(url)[0] == 200, 120, "the fence lifted after renewal and relist")
        code, doc = _health(url)
        assert (doc["status"], doc["fenced"]) == ("ok", False) and int(str(doc["fences"])) >= 1, doc
        page = Scrape.of(url)  # (a second fence would need another 5 s without a renewal)
        assert page.value("kvraft_agent_fences_total") >= 1
        wait_for(lambda: Scrape.of(url).value("kvraft_agent_fenced") == 0, 60, "kvraft_agent_fenced 0")
        wait_for(lambda: Scrape.of(url).value("kvraft_agent_lease_age_seconds") < 4, 60, "renewals again")
    finally:
        if agent is not None:
            agent.teardown()
            kill_task_processes(agent.data_dir)
        cluster.stop()
