"""A lean HTTP/1.1 keep-alive client for load generation.

The load generator shares the machine with the cluster it measures, so it must cost little
per request: requests are pre-rendered bytes, responses are parsed only as far as the
status line, the length (Content-Length or chunked) and the body. One request is in
flight per connection (no pipelining), like a browser or etcd's gateway clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import urlsplit

__all__ = ["HttpConnection", "post_json", "render_post"]

JSON = "application/json"


def render_post(host: str, path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class HttpConnection:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.authority = f"{self.host}:{self.port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
            self._writer = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one pre-rendered request; returns (status, body). Reconnects once if the
        server closed the idle connection."""
        if self._writer is None:
            await self.connect()
        try:
            return await self._roundtrip(raw)
        except (ConnectionError, asyncio.IncompleteReadError):
            await self.close()
            await self.connect()
            return await self._roundtrip(raw)

    async def _roundtrip(self, raw: bytes) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if status == 100:
            return await self._roundtrip(b"")
        if chunked:
            return status, await self._read_chunked()
        if length < 0:
            body = await self._reader.read()
            await self.close()
            return status, body
        return status, await self._reader.readexactly(length)

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                # trailers end with an empty line
                while (await self._reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)


async def post_json(conn: HttpConnection, path: str, doc: dict[str, Any], timeout_s: float | None = None,
                    error_chars: int | None = None) -> dict[str, Any]:
    """POST a JSON document to an etcd v3 gateway; the answer's ``result`` (a stream's first
    message) or the document itself. A non-200 status raises RuntimeError (the body cut to
    ``error_chars``). With ``timeout_s`` a request that fails or times out closes the
    connection (its answer may still come: the connection cannot be reused)."""
    request = conn.request(render_post(conn.authority, path, json.dumps(doc).encode(), JSON))
    if timeout_s is None:
        status, body = await request
    else:
        try:
            async with asyncio.timeout(timeout_s):
                status, body = await request
        except BaseException:
            await conn.close()
            raise
    text = body.decode()
    if text.startswith('{"result"'):
        text = text.strip().splitlines()[0]
    parsed = json.loads(text)
    if status != 200:
        raise RuntimeError(f"{path}: HTTP {status} {str(parsed)[:error_chars]}")
    return parsed.get("result", parsed)  # type: ignore[no-any-return]
