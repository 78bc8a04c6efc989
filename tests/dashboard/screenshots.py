"""Take the dashboard's screenshots (docs/img/dashboard-1280.png, -390.png, -job-1280.png)
from a realistic cluster: a real 3-member kvraft, 4 racks x 8 nodes x 8 GPUs (fake agents),
a scheduler, three tenants, jobs of every phase, one dead node and one cordoned.

Run: ``.venv/bin/python tests/dashboard/screenshots.py docs/img`` (needs /usr/bin/chromium)."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scheduler_daemon"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dash_harness import CHROMIUM, CHROMIUM_ARGS, start_dashboard  # noqa: E402
from harness import FAST_FLAGS, Procs, jobctl, phase, wait_for  # noqa: E402

from kvraft.client import SyncClient  # noqa: E402
from kvraft.server.local import LocalCluster  # noqa: E402

TENANTS = """\
kind: Tenant
name: vision
nominal_gpus: 96
borrow_limit_gpus: 32
---
kind: Tenant
name: nlp
nominal_gpus: 64
---
kind: Tenant
name: research
nominal_gpus: 16
borrow_limit_gpus: 0
"""

JOBS = [  # name, tenant, tasks, gpus per task, command
    ("resnet-dp", "vision", 4, 8, "sleep 3600"), ("vit-large", "vision", 2, 8, "sleep 3600"),
    ("detr-ft", "vision", 1, 4, "sleep 3600"), ("llm-7b", "nlp", 4, 8, "sleep 3600"),
    ("bert-sweep-1", "nlp", 1, 2, "sleep 3600"), ("bert-sweep-2", "nlp", 1, 2, "sleep 3600"),
    ("digits-dp", "research", 2, 4, "sleep 3600"), ("rl-agent", "research", 1, 1, "sleep 3600"),
    ("eval-nightly", "vision", 1, 1, "sleep 1"), ("tokenize", "nlp", 1, 1, "exit 3"),
]
PENDING = [("llm-70b", "nlp", 16, 8, "sleep 3600"), ("ablation", "research", 2, 8, "sleep 3600")]


def job_yaml(name: str, tenant: str, tasks: int, gpus: int, command: str) -> str:
    return (f"name: {name}\ntenant: {tenant}\ntasks:\n  - {{name: worker, replicas: {tasks}, "
            f"command: {json.dumps(command.split())}, resources: {{gpus: {gpus}, cpu: 1, memory: 1Gi}}}}\n")


def main(out_dir: str) -> int:
    from playwright.sync_api import sync_playwright

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="kvraft-shots-"))
    cluster = LocalCluster(3, base / "kv", extra_args=FAST_FLAGS)
    cluster.start(timeout_s=120)
    eps = [m.client_url for m in cluster.members.values()]
    procs = Procs(base, eps)
    try:
        for r in range(4):
            procs.agent(f"rack{r}", "--nodes", "8", "--first", str(8 * r), "--rack", f"rack-{r}", "--prefix", "gpu-")
        procs.agent("doomed", "--nodes", "1", "--prefix", "gpu-x", "--rack", "rack-3")
        sched = procs.scheduler("sched-a")
        (base / "tenants.yaml").write_text(TENANTS)
        assert jobctl(eps, "apply", "-f", str(base / "tenants.yaml"))[0] == 0
        for j in JOBS:
            assert jobctl(eps, "submit", "-f", "-", stdin=job_yaml(*j))[0] == 0
        wait_for(lambda: all(phase(eps, j[0]) in ("Running", "Succeeded", "Failed") for j in JOBS), 120, "jobs placed")
        for j in PENDING:
            assert jobctl(eps, "submit", "-f", "-", stdin=job_yaml(*j))[0] == 0
        procs.kill("doomed", signal.SIGKILL)  # its heartbeat expires: a dead node
        assert jobctl(eps, "cordon", "gpu-30")[0] == 0
        with SyncClient(eps) as c:
            loss, acc = 2.3, 0.1
            for e in range(1, 21):
                loss, acc = loss * 0.8 + 0.02, acc + (0.97 - acc) * 0.35
                c.put("/jobs/digits-dp/progress", json.dumps({
                    "epoch": e, "loss": round(loss, 4), "train_acc": round(acc - 0.01, 4), "test_acc": round(acc, 4),
                    "seconds": 0.8, "ranks": 2, "backend": "mpi"}).encode())
        url = start_dashboard(procs, "dash", "--scheduler-url", sched, "--allow-writes")
        time.sleep(8)  # the dead node's lease runs out; two scheduler scrapes for decisions/s
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            for width, height in ((1280, 900), (390, 844)):
                ctx = b.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
                page = ctx.new_page()
                page.goto(url)
                page.wait_for_selector('.node[data-node="gpu-31"]')
                page.wait_for_selector("#kvraft .badge")
                page.wait_for_function("document.querySelector('.queue li.pending [data-testid=pending-reason]')"
                                       "?.textContent !== 'Queued'")
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / f"dashboard-{width}.png"), full_page=width == 1280)
                if width == 1280:
                    page.goto(url + "#job=digits-dp")
                    page.wait_for_selector("#detail-body svg.chart")
                    page.screenshot(path=str(out / "dashboard-job-1280.png"))
                ctx.close()
            b.close()
        print("screenshots in", out)
        return 0
    finally:
        procs.stop_all()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
