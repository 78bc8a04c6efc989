"""The dashboard in Debian's chromium (playwright) on a real 3-member kvraft with a scheduler
and fake agents: the page loads live, a new agent's node appears, a job's pending reason is
shown and the job moves Pending -> Running -> Succeeded on the page, its panel shows the
timeline, placement and the trainer's loss, and a writer can requeue, suspend, resume and cancel it."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from typing import Any

from dash_harness import start_dashboard
from harness import Procs, job, jobctl, wait_for

from kvraft.client import SyncClient

GPUS_OF_JS = """job => [...document.querySelectorAll(".node")].reduce((n, el) =>
  n + el.dataset.jobs.split(" ").filter(x => x.startsWith(job + ":")).reduce((a, x) => a + +x.split(":")[1], 0), 0)"""

PHASES_JS = """name => {
  window.__phases = [];
  const look = () => {
    const el = document.querySelector(`#jobs tr[data-job="${name}"] [data-testid=phase]`);
    const p = el ? el.textContent : null;
    if (p && window.__phases[window.__phases.length - 1] !== p) window.__phases.push(p);
  };
  look();
  new MutationObserver(look).observe(document.getElementById("jobs"), {childList: true, subtree: true});
}"""


def one(name: str, gpus: int, command: str) -> str:
    cmd = json.dumps(command.split())
    return (f"name: {name}\ntenant: team-a\ntasks:\n  - {{name: worker, replicas: 1, command: {cmd}, "
            f"resources: {{gpus: {gpus}, cpu: 1, memory: 1Gi}}}}\n")


def test_page_loads_members_and_a_new_node_appears(procs: Procs, page: Any) -> None:
    procs.agent("agents", "--nodes", "2", "--gpus-per-node", "4", "--racks", "1")
    url = start_dashboard(procs, "dash")
    page.goto(url)
    page.wait_for_selector('.node[data-node="node-1"]')
    # the page itself carries the state once the dashboard has listed kvraft (drawn, then removed)
    wait_for(lambda: b'id="first-state"' in urllib.request.urlopen(url, timeout=30).read(), what="state in page")
    assert page.locator("#first-state").count() == 0
    assert page.get_attribute('.node[data-node="node-0"]', "data-gpus") == "4"
    page.wait_for_function("document.getElementById('conn').textContent === 'live'")
    page.wait_for_function("document.querySelectorAll('#kvraft tr[data-member]').length === 3")
    page.wait_for_selector("#kvraft .badge")  # the leader
    assert "2/2 nodes ready" in page.inner_text("#summary")
    # a new agent registers: its node is on the page within 2 s of its write
    procs.agent("late", "--nodes", "1", "--gpus-per-node", "8", "--prefix", "late-", "--rack", "rack-9")
    registered = time.monotonic()
    page.wait_for_selector('#rack-rack-9 .node[data-node="late-0"]')
    assert time.monotonic() - registered <= 2.0
    assert page.get_attribute('.node[data-node="late-0"]', "data-gpus") == "8"


def test_job_pending_reason_then_live_to_succeeded_and_cancel(procs: Procs, page: Any) -> None:
    eps = procs.endpoints
    procs.agent("agents", "--nodes", "2", "--gpus-per-node", "4", "--racks", "1")
    sched = procs.scheduler("sched")
    url = start_dashboard(procs, "dash", "--allow-writes", "--scheduler-url", sched)
    page.goto(url)
    page.wait_for_selector('.node[data-node="node-0"]')
    page.wait_for_function("document.querySelector('[data-testid=sched-leader]')?.textContent === 'sched'")
    # 8 GPUs in one task: no node has them, so the job waits, and the page says why
    assert jobctl(eps, "submit", "-f", "-", stdin=one("big", 8, "sleep 6"))[0] == 0
    page.wait_for_selector('#jobs tr[data-job="big"]')
    page.evaluate(PHASES_JS, "big")
    selector = '.queue li.pending[data-job="big"] [data-testid=pending-reason]'
    reason = page.locator(selector)
    # looked up afresh each time: every render replaces the queue's HTML, so a handle taken
    # once can be a detached element that says 'Queued' for ever (a CI run timed out so)
    page.wait_for_function("sel => { const el = document.querySelector(sel); return !!el && el.textContent !== 'Queued'; }",
                           arg=selector)
    status = wait_for(lambda: (j := job(eps, "big")) and j["status"]["reason"] != "Queued" and j["status"], what="reason")
    assert status["phase"] == "Pending"
    assert reason.inner_text() == status["reason"]
    assert status["message"] in page.inner_text('.queue li.pending[data-job="big"]')
    # a node big enough joins: the job runs on its 8 GPUs, then succeeds, all seen live
    procs.agent("big-node", "--nodes", "1", "--gpus-per-node", "8", "--prefix", "big-", "--rack", "rack-1")
    page.wait_for_function(f"({GPUS_OF_JS})('big') === 8")
    with SyncClient(eps) as c:
        for e in (1, 2, 3):
            c.put("/jobs/big/progress", json.dumps({"epoch": e, "loss": 1.0 / e, "train_acc": 0.5 + e / 10,
                                                    "test_acc": 0.6 + e / 10}).encode())
    page.wait_for_function("window.__phases.includes('Succeeded')")
    phases = page.evaluate("window.__phases")
    assert phases[0] == "Pending" and "Running" in phases and phases[-1] == "Succeeded", phases
    assert phases.index("Running") < phases.index("Succeeded")
    page.wait_for_function(f"({GPUS_OF_JS})('big') === 0")
    # its run's accounting record (scheduler.accounting) reaches its tenant's queue card
    month = f'.queue[data-tenant="{job(eps, "big")["tenant"]}"] [data-testid=month-usage]'
    page.wait_for_selector(month)
    assert page.inner_text(month).startswith("this month "), page.inner_text(month)
    # the job's panel: phase, timeline, placement, the trainer's loss curve
    page.goto(url + "#job=big")
    page.wait_for_selector("[data-testid=detail-phase]")
    assert page.inner_text("[data-testid=detail-phase]") == "Succeeded"
    body = page.inner_text("#detail-body")
    assert "Scheduled" in body and "big-0" in body and "loss" in body
    assert page.locator("#detail-body svg.chart path.loss").count() == 1
    # the log tail comes through the node's agent endpoint (a stand-in agent on 127.0.0.1)
    asked: list[str] = []

    class Agent(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = b"epoch 1 loss 0.5\nepoch 2 loss 0.25\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    agent = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=agent.serve_forever, daemon=True).start()
    try:
        with SyncClient(eps) as c:
            rec = json.loads(c.get("/registry/nodes/big-0").kvs[0].value)
            rec["agent"]["url"] = f"http://127.0.0.1:{agent.server_address[1]}"
            c.put("/registry/nodes/big-0", json.dumps(rec).encode())
        wait_for(lambda: page.evaluate("fetch('/api/jobs/big/logs?tail=5').then(r => r.status)") == 200,
                 what="agent URL seen")
        page.click("#load-logs")
        page.wait_for_function("document.getElementById('logs').textContent.includes('epoch 2 loss 0.25')")
        assert asked[-1].startswith("/logs/big/worker-0?") and "tail=200" in asked[-1], asked
    finally:
        agent.shutdown()
    # a writer requeues a running job from its panel (the scheduler evicts the run), then cancels it
    assert jobctl(eps, "submit", "-f", "-", stdin=one("long", 4, "sleep 600"))[0] == 0
    page.goto(url + "#job=long")
    page.wait_for_selector("#requeue-job")
    page.on("dialog", lambda d: d.accept())
    page.click("#requeue-job")
    # the fake agent reports the stopped task at once, so the run is released then: Evicting passes quickly
    wait_for(lambda: (j := job(eps, "long")) and j["status"].get("evictions") == 1, what="long evicted and requeued")
    with SyncClient(eps) as c:
        events = [json.loads(kv.value) for kv in c.get("/registry/events/long/", prefix=True).kvs]
    assert [e["message"] for e in events if e["type"] == "Evicted"] == [
        "Evicted: requeued by dashboard; stopping with a 30 s grace period"], events
    # suspend and resume (jobctl suspend / resume): the button says which, the spec is marked
    page.wait_for_selector("#suspend-job")
    page.click("#suspend-job")
    wait_for(lambda: (j := job(eps, "long")) and j["spec"].get("suspend") is True, what="long suspended")
    page.wait_for_function("document.getElementById('suspend-job')?.textContent === 'Resume'")
    page.click("#suspend-job")
    wait_for(lambda: (j := job(eps, "long")) and j["spec"].get("suspend") is False, what="long resumed")
    page.wait_for_function("document.getElementById('suspend-job')?.textContent === 'Suspend'")
    page.wait_for_selector("#cancel-job")
    page.click("#cancel-job")
    wait_for(lambda: (j := job(eps, "long")) and j["status"]["phase"] == "Cancelled", what="long cancelled")
    page.wait_for_function("document.querySelector('[data-testid=detail-phase]')?.textContent === 'Cancelled'")
    # a job array's elements its limit keeps back are one row of the job list (squeue's folding),
    # its link opening the first held element
    sweep = one("sweep", 1, "sleep 600") + "array: 0-3%1\n"
    assert jobctl(eps, "submit", "-f", "-", stdin=sweep)[0] == 0
    page.goto(url)
    row = '#jobs tr[data-held="3"]'
    page.wait_for_selector(row)
    assert page.get_attribute(row, "data-job") == "sweep_1"
    cells = page.locator(f"{row} td").all_inner_texts()
    assert cells[0].strip() == "sweep_[1-3%1]" and cells[3] == "3 × 1" and cells[5] == "JobArrayTaskLimit", cells
    assert page.locator('#jobs tr[data-job="sweep_0"]').count() == 1  # the running element: its own row
    assert jobctl(eps, "cancel", "sweep")[0] == 0
    page.wait_for_function("!document.querySelector('#jobs tr[data-held]')")
