"""Helpers for tests against real member processes on 127.0.0.1 (shared by tests/watch,
tests/lease, tests/auth): start a cluster with fast timers, call any member, stream a
watch with aiohttp."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from kvraft.server.local import LocalCluster, post

FLAGS = ["--heartbeat-interval", "50", "--election-timeout", "500", "--bcrypt-cost", "4"]


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def start_cluster(base: Path, size: int = 3, extra: list[str] | None = None) -> LocalCluster:
    cluster = LocalCluster(size, base, extra_args=FLAGS + list(extra or []))
    try:
        cluster.start(timeout_s=120)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def call(url: str, path: str, doc: Any, token: str | None = None, timeout_s: float = 15.0) -> tuple[int, Any]:
    if token is None:
        return post(url, path, doc, timeout_s=timeout_s)
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request("POST", path, body=json.dumps(doc),
                     headers={"Content-Type": "application/json", "Authorization": token})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode("utf-8", "replace")


def call_any(cluster: LocalCluster, path: str, doc: Any, token: str | None = None,
             deadline_s: float = 60.0) -> tuple[int, Any]:
    """Call running members in turn until one answers other than unavailable (code 14)
    or with a connection error; gives up after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while True:
        for member in cluster.running():
            try:
                status, body = call(member.client_url, path, doc, token)
            except OSError:
                continue
            if isinstance(body, dict) and body.get("code") == 14:
                continue
            return status, body
        if time.monotonic() > deadline:
            raise TimeoutError(f"no member answered {path}")
        time.sleep(0.2)


async def watch(session: aiohttp.ClientSession, url: str, requests: list[dict[str, Any]],
                token: str | None = None) -> AsyncIterator[dict[str, Any]]:
    """POST /v3/watch with ``requests`` concatenated; yield each ``result`` as it arrives
    (one JSON object per line, as etcd's gateway sends them)."""
    headers = {"Authorization": token} if token else {}
    body = "".join(json.dumps(r) for r in requests)
    async with session.post(url + "/v3/watch", data=body, headers=headers,
                            timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
        assert response.status == 200
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    doc = json.loads(line)
                    assert "result" in doc, doc
                    yield doc["result"]
