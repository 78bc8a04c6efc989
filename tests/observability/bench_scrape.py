"""What a member's ``/metrics`` scrape costs (docs/observability.md, "What a scrape costs").

One member (``LocalCluster(1)``) holding ``--keys`` keys; ``--scrapes`` sequential GETs of
``/health`` (the baseline) and ``/metrics``, alternated twice, timed from a Python client.

Run: ``flock -x /tmp/kvraft-cpu.lock .venv/bin/python tests/observability/bench_scrape.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request

from kvraft.server.local import LocalCluster, b64, post


def _time(url: str, scrapes: int) -> tuple[float, float, int]:
    took, size = [], 0
    for _ in range(scrapes):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            size = len(response.read())
        took.append(time.perf_counter() - started)
    took.sort()
    return statistics.median(took) * 1e3, took[max(0, int(0.99 * len(took)) - 1)] * 1e3, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=300)
    args = parser.parse_args()
    with LocalCluster(1) as cluster:  # its own temporary directory, removed at the end
        cluster.start()
        url = cluster.url(cluster.wait_leader())
        for i in range(args.keys):
            post(url, "/v3/kv/put", {"key": b64(f"k{i:06d}"), "value": b64("v" * 100)})
        for path in ("/health", "/metrics", "/health", "/metrics"):
            p50, p99, size = _time(url + path, args.scrapes)
            print(f"{path}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, {size} bytes")


if __name__ == "__main__":
    main()
