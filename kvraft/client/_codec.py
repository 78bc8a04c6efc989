"""Request encoding and response decoding for the two wire formats.

JSON is etcd's gateway mapping: bytes become standard base64 text; integers are sent as
JSON numbers (both etcd and kvraft accept numbers or strings). msgpack (kvraft only,
``Content-Type: application/x-msgpack``) sends the same field names with native values.
Responses are decoded to plain dicts; ``kvraft.client.types`` reads either shape.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack

__all__ = ["JSON", "MSGPACK", "Codec", "codec_for"]

JSON = "application/json"
MSGPACK = "application/x-msgpack"


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class Codec:
    """One wire format: ``content_type``, ``dumps(request)``, ``loads(body)``, and an
    incremental ``feed(chunk) -> messages`` for streaming answers."""

    content_type: str = JSON

    def dumps(self, doc: dict[str, Any]) -> bytes:
        return json.dumps(_jsonable(doc), separators=(",", ":")).encode()

    def loads(self, body: bytes) -> Any:
        return json.loads(body) if body.strip() else {}

    def stream_decoder(self) -> _StreamDecoder:
        return _JsonStream()


class _MsgpackCodec(Codec):
    content_type = MSGPACK

    def dumps(self, doc: dict[str, Any]) -> bytes:
        packed: bytes = msgpack.packb(doc, use_bin_type=True)
        return packed

    def loads(self, body: bytes) -> Any:
        return msgpack.unpackb(body, raw=False) if body else {}

    def stream_decoder(self) -> _StreamDecoder:
        return _MsgpackStream()


class _StreamDecoder:
    def feed(self, chunk: bytes) -> list[Any]:
        raise NotImplementedError


class _JsonStream(_StreamDecoder):
    """Newline-delimited ``{"result": ...}`` objects; a message may span chunks, and
    grpc-gateway may send the ``\\n`` as its own chunk, so split on newlines only."""

    def __init__(self) -> None:
        self._buffer = b""
        self._decoder = json.JSONDecoder()

    def feed(self, chunk: bytes) -> list[Any]:
        self._buffer += chunk
        out: list[Any] = []
        text = self._buffer.decode("utf-8", errors="surrogateescape")
        pos = 0
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos >= len(text):
                break
            try:
                obj, end = self._decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                break
            out.append(obj)
            pos = end
        self._buffer = text[pos:].encode("utf-8", errors="surrogateescape")
        return out


class _MsgpackStream(_StreamDecoder):
    """Concatenated msgpack maps (self-delimiting, no separator needed); a nil between
    them is a keepalive heartbeat (``kvraft.client._liveness``), skipped as JSON's
    whitespace is."""

    def __init__(self) -> None:
        self._unpacker = msgpack.Unpacker(raw=False)

    def feed(self, chunk: bytes) -> list[Any]:
        self._unpacker.feed(chunk)
        return [message for message in self._unpacker if message is not None]


JSON_CODEC = Codec()
MSGPACK_CODEC = _MsgpackCodec()


def codec_for(content_type: str) -> Codec:
    return MSGPACK_CODEC if content_type.split(";")[0].strip() == MSGPACK else JSON_CODEC
