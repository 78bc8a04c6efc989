"""Small synchronous clients for the cluster tests."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

from kvraft.server.local import LocalCluster, post

__all__ = ["Writer", "b64", "get", "put", "unb64", "wait_until"]


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def put(url: str, key: str, value: str, timeout_s: float = 10.0) -> tuple[int, Any]:
    return post(url, "/v3/kv/put", {"key": b64(key), "value": b64(value)}, timeout_s)


def get(url: str, key: str, range_end: str = "", serializable: bool = False) -> dict[str, str]:
    doc: dict[str, Any] = {"key": b64(key)}
    if range_end:
        doc["range_end"] = b64(range_end)
    if serializable:
        doc["serializable"] = True
    code, body = post(url, "/v3/kv/range", doc, 15.0)
    assert code == 200, body
    return {unb64(kv["key"]): unb64(kv.get("value", "")) for kv in body.get("kvs", [])}


def wait_until(predicate, timeout_s: float = 60.0, interval_s: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval_s)


def reconfigure(url: str, path: str, doc: dict[str, Any], timeout_s: float = 30.0) -> tuple[int, Any]:
    """A ``cluster/member/*`` call, repeated while the member answers "unhealthy cluster"
    (``--strict-reconfig-check``: a peer connection younger than the health interval, or
    one not yet seen lost); any other answer is returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        code, body = post(url, path, doc, 15.0)
        if code != 503 or body.get("message") != "etcdserver: unhealthy cluster" or time.monotonic() > deadline:
            return code, body
        time.sleep(0.5)


def add_learner(cluster: Any, via: str, name: str = "m3") -> tuple[Any, str]:
    """``member/add`` a learner through member ``via`` for a new (not started) process
    ``name``; (the process, the learner's ID as the gateway writes it)."""
    newcomer = cluster.add_process(name)
    code, body = reconfigure(cluster.url(via), "/v3/cluster/member/add",
                             {"peerURLs": [newcomer.peer_url], "isLearner": True})
    assert code == 200 and body["member"]["isLearner"] is True, body
    return newcomer, body["member"]["ID"]


class Writer:
    """Writes ``w/<n>`` keys round-robin through the running members in a thread and
    records which writes were acknowledged (HTTP 200)."""

    def __init__(self, cluster: LocalCluster, prefix: str = "w/") -> None:
        self.cluster = cluster
        self.prefix = prefix
        self.acked: dict[str, str] = {}
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            members = self.cluster.running()
            if not members:
                time.sleep(0.05)
                continue
            member = members[n % len(members)]
            key, value = f"{self.prefix}{n:06d}", f"v{n}"
            try:
                code, _ = put(member.client_url, key, value, timeout_s=5.0)
            except OSError:
                code = 0
            if code == 200:
                self.acked[key] = value
            else:
                self.failures += 1
                time.sleep(0.05)
            n += 1

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_acked(self, count: int, timeout_s: float = 60.0) -> None:
        start = len(self.acked)
        wait_until(lambda: len(self.acked) >= start + count, timeout_s, what=f"{count} more acked writes")
