"""The dashboard's figures (docs/benchmarks.md, "## Dashboard"): first render with 1,000
nodes, the delay from a kvraft write to the DOM change, the dashboard's RSS.

A real 3-member kvraft; 1,000 fake nodes (20 racks x 50, 8 GPUs each) with heartbeats under one
and 250 running jobs (status + alloc) written straight into kvraft; ``kvraft-dashboard``
as its own process; Debian's chromium through playwright.

- first render: a fresh page's ``window.__firstRenderMs`` (performance.now() when the first
  snapshot is in the DOM, i.e. from navigation start), over ``--loads`` loads;
- change: ``time.time()`` just before a put of a cordon key, to ``Date.now()`` in a
  MutationObserver when that node's row gets its ``cordoned`` class, over ``--changes`` writes;
- RSS: ``VmRSS``/``VmHWM`` of the dashboard process after all that.

Run: ``flock -x /tmp/kvraft-cpu.lock .venv/bin/python tests/dashboard/bench_dashboard.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scheduler_daemon"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dash_harness import CHROMIUM, CHROMIUM_ARGS, start_dashboard  # noqa: E402
from harness import FAST_FLAGS, Procs  # noqa: E402

from kvraft.client import Op, SyncClient  # noqa: E402
from kvraft.server.local import LocalCluster  # noqa: E402

WATCH_JS = """node => {
  const el = () => document.querySelector(`.node[data-node="${node}"]`);
  const want = !el().classList.contains("cordoned");
  window.__seenAt = null;
  const obs = new MutationObserver(() => {
    const e = el();
    if (e && e.classList.contains("cordoned") === want) { obs.disconnect(); window.__seenAt = Date.now(); }
  });
  obs.observe(document.getElementById("racks"), {childList: true, subtree: true, attributes: true});
  return !want;
}"""


def populate(eps: list[str], nodes: int, racks: int, jobs: int) -> None:
    per_rack = nodes // racks
    with SyncClient(eps, request_timeout_s=30.0) as c:
        ops = []
        for i in range(nodes):
            name = f"gpu-{i}"
            rack = f"rack-{i // per_rack}"
            rec = {"name": name, "gpus": 8, "gpu_type": "H100", "cpu_milli": 96000, "memory_mib": 1 << 20,
                   "rack": rack, "spine": "spine-0", "islands": [8], "labels": {"rack": rack}, "healthy": True,
                   "conditions": [{"type": "Ready", "status": "True"}, {"type": "GPUHealthy", "status": "True"}],
                   "agent": {"url": "", "version": "bench"}}
            ops.append(Op.put(f"/registry/nodes/{name}", json.dumps(rec).encode()))
            ops.append(Op.put(f"/registry/leases/{name}", b"{}"))  # a heartbeat (no lease: it never expires)
        for j in range(jobs):  # job j runs on node 4j..4j+3, all 8 GPUs of each
            name = f"job-{j}"
            spec = {"name": name, "tenant": f"team-{j % 5}", "priority": 0, "submitted_at": time.time(),
                    "tasks": [{"name": "w", "replicas": 4, "command": ["sleep", "1"], "resources": {"gpus": 8}}]}
            placement = [{"task": f"w-{t}", "node": f"gpu-{4 * j + t}", "rack": f"rack-{(4 * j + t) // per_rack}",
                          "gpus": list(range(8))} for t in range(4)]
            ops.append(Op.put(f"/registry/jobs/{name}", json.dumps(spec).encode()))
            ops.append(Op.put(f"/registry/jobstatus/{name}", json.dumps(
                {"phase": "Running", "reason": "Running", "message": "", "placement": placement}).encode()))
            for p in placement:
                ops.append(Op.put(f"/registry/alloc/{p['node']}", json.dumps(
                    {"node": p["node"], "jobs": {name: {"gpus": p["gpus"]}}}).encode()))
        for i in range(0, len(ops), 100):
            c.txn().then(*ops[i:i + 100]).commit()


def rss_kib(pid: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--racks", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=250)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--changes", type=int, default=20)
    ns = ap.parse_args()
    from playwright.sync_api import sync_playwright

    base = Path(tempfile.mkdtemp(prefix="kvraft-dash-bench-"))
    cluster = LocalCluster(3, base / "kv", extra_args=FAST_FLAGS)
    cluster.start(timeout_s=120)
    eps = [m.client_url for m in cluster.members.values()]
    procs = Procs(base, eps)
    try:
        t = time.perf_counter()
        populate(eps, ns.nodes, ns.racks, ns.jobs)
        print(f"wrote {ns.nodes} nodes, {ns.jobs} jobs in {time.perf_counter() - t:.1f} s", flush=True)
        url = start_dashboard(procs, "dash")
        pid = procs.procs["dash"].pid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        time.sleep(2)  # the first member poll is in
        firsts: list[float] = []
        changes: list[float] = []
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            for _ in range(ns.loads + 1):  # the first load warms the browser's caches; not counted
                ctx = b.new_context(viewport={"width": 1280, "height": 900})
                page = ctx.new_page()
                page.goto(url)
                page.wait_for_function("window.__firstRenderMs !== undefined", timeout=60_000)
                firsts.append(page.evaluate("window.__firstRenderMs"))
                marks = page.evaluate("window.__marks")
                nav = page.evaluate("JSON.parse(JSON.stringify(performance.getEntriesByType('navigation')[0]))")
                print("marks", {k: round(v) for k, v in marks.items()}, "html", round(nav["responseEnd"]),
                      "dcl", round(nav["domContentLoadedEventEnd"]), flush=True)
                summary = page.inner_text("#summary")
                assert f"{ns.nodes}/{ns.nodes} nodes ready" in summary, summary
                assert page.locator(".rack").count() == ns.racks
                ctx.close()
            firsts = firsts[1:]
            print(f"first renders (ms): {[round(x) for x in firsts]}", flush=True)
            ctx = b.new_context(viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            page.goto(url)
            page.wait_for_function("window.__firstRenderMs !== undefined", timeout=60_000)
            with SyncClient(eps, request_timeout_s=30.0) as c:
                for i in range(ns.changes):
                    # a node of the first row of racks: in view (the others are drawn when scrolled to)
                    node = f"gpu-{(i * 37) % (4 * ns.nodes // ns.racks)}"
                    cordoned = page.evaluate(WATCH_JS, node)
                    t0 = time.time()
                    if cordoned:
                        c.delete(f"/registry/cordons/{node}")
                    else:
                        c.put(f"/registry/cordons/{node}", b'{"by": "bench"}')
                    page.wait_for_function("window.__seenAt !== null", timeout=60_000)
                    changes.append(page.evaluate("window.__seenAt") - t0 * 1000)
            ctx.close()
            b.close()
        rss, hwm = rss_kib(pid)
        q = statistics.quantiles
        print(json.dumps({
            "nodes": ns.nodes, "jobs": ns.jobs,
            "first_render_ms": {"median": round(statistics.median(firsts), 1), "max": round(max(firsts), 1),
                                "samples": [round(x, 1) for x in firsts]},
            "change_visible_ms": {"median": round(statistics.median(changes), 1),
                                  "p95": round(q(changes, n=20, method="inclusive")[18], 1), "max": round(max(changes), 1)},
            "dashboard_rss_mib": round(rss / 1024, 1), "dashboard_peak_rss_mib": round(hwm / 1024, 1),
        }, indent=1))
        return 0
    finally:
        procs.stop_all()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
