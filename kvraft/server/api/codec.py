"""The wire codec: etcd's proto3-JSON gateway mapping, and the same shapes in msgpack.

Requests are decoded against a ``Message`` schema (proto field names, as the gateway uses)
and come out as plain dicts of Python values with defaults filled in. The rules follow
grpc-gateway v1 as shipped in etcd 3.4: ``bytes`` are standard base64 with padding,
``int64``/``uint64`` accept a JSON number or a decimal string, enums accept a name or a
number, ``null`` means the default, unknown fields are ignored. Type errors get Go's
``encoding/json`` wording, since clients and our compatibility tests see etcd's text.

Responses are built by the route modules through an ``Out`` (``JSON_OUT`` or
``MSGPACK_OUT``): ``out.b(bytes)`` and ``out.i(int)`` give base64 text and decimal strings
for JSON, and the raw values for msgpack. Route modules omit default values themselves.

msgpack requests carry the same field names with native values (bytes as bin, ints as
ints); a str where bytes are expected is taken as UTF-8.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from kvraft.apply.errors import InvalidArgument
from kvraft.server.api import gojson
from kvraft.server.api.gojson import GoNumber

__all__ = [
    "BOOL",
    "BYTES",
    "INT64",
    "JSON_OUT",
    "MSGPACK",
    "MSGPACK_OUT",
    "STRING",
    "UINT64",
    "Enum",
    "Message",
    "Out",
    "Repeated",
    "decode_body",
]

MSGPACK = "application/x-msgpack"

BYTES = "bytes"
INT64 = "int64"
UINT64 = "uint64"
BOOL = "bool"
STRING = "string"

_GO_TYPE = {BYTES: "[]uint8", INT64: "int64", UINT64: "uint64", BOOL: "bool", STRING: "string"}
_INT_BOUNDS = {INT64: (-(2**63), 2**63 - 1), UINT64: (0, 2**64 - 1)}


@dataclass(frozen=True)
class Enum:
    go_name: str
    values: dict[str, int]


@dataclass(frozen=True)
class Repeated:
    item: Any


@dataclass
class Message:
    """A request schema: proto field name -> kind (a kind name, Enum, Repeated or Message)."""

    go_name: str
    fields: dict[str, Any] = field(default_factory=dict)
    build: Callable[[dict[str, Any]], Any] | None = None


def _type_error(value: Any, go_type: str) -> InvalidArgument:
    kind = gojson.kind_of(value)
    if kind == "number" and (go_type in ("int64", "uint64", "int32") or go_type.startswith("etcdserverpb.")):
        shown = value.text if isinstance(value, GoNumber) else value
        return InvalidArgument(f"json: cannot unmarshal number {shown} into Go value of type {go_type}")
    return InvalidArgument(f"json: cannot unmarshal {kind} into Go value of type {go_type}")


def _parse_packed_int_text(text: str, kind: str) -> int:
    """A msgpack request's integer given as a string: decimal text (kvraft's own rule;
    JSON strings follow jsonpb's, ``gojson.parse_int_text``)."""
    stripped = text.strip()
    try:
        number = int(stripped, 10)
    except ValueError:
        raise InvalidArgument(f"json: cannot unmarshal string into Go value of type {_GO_TYPE[kind]}") from None
    return _check_bounds(number, kind, stripped)


def _check_bounds(number: int, kind: str, shown: Any) -> int:
    low, high = _INT_BOUNDS[kind]
    if not low <= number <= high:
        raise InvalidArgument(f"json: cannot unmarshal number {shown} into Go value of type {_GO_TYPE[kind]}")
    return number


def _scalar(value: Any, kind: str, packed: bool) -> Any:
    """One field's value, as encoding/json (under jsonpb) stores a JSON value into the
    field's Go type."""
    if kind == BYTES:
        if isinstance(value, str):
            return value.encode() if packed else gojson.b64decode(value.encode("utf-8", "surrogatepass"))
        if packed and isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, list) and not packed:  # encoding/json: an array of uint8 numbers
            return bytes(_byte(item) for item in value)
        raise _type_error(value, "[]uint8")
    if kind in (INT64, UINT64):
        go_type = _GO_TYPE[kind]
        if isinstance(value, bool):
            raise _type_error(value, go_type)
        if isinstance(value, int):
            return _check_bounds(value, kind, value)
        if isinstance(value, GoNumber):  # 2.0, 1e3: ParseInt refuses them
            return gojson.int_from_literal(value.text, go_type)
        if isinstance(value, float):  # msgpack only
            if value.is_integer():
                return _check_bounds(int(value), kind, value)
            raise _type_error(value, go_type)
        if isinstance(value, str):
            if packed:
                return _parse_packed_int_text(value, kind)
            return gojson.parse_int_text(gojson.raw_string_text(value), go_type)
        raise _type_error(value, go_type)
    if kind == BOOL:
        if isinstance(value, bool):
            return value
        raise _type_error(value, "bool")
    if isinstance(value, str):
        return value
    raise _type_error(value, "string")


def _byte(item: Any) -> int:
    """One element of a JSON array given for a ``bytes`` field (null is 0)."""
    if item is None:
        return 0
    if isinstance(item, int) and not isinstance(item, bool):
        if 0 <= item <= 255:
            return item
        raise InvalidArgument(f"json: cannot unmarshal number {item} into Go value of type uint8")
    if isinstance(item, GoNumber):
        return gojson.int_from_literal(item.text, "uint8")
    raise _type_error(item, "uint8")


_INT32 = (-(2**31), 2**31 - 1)


def _enum(value: Any, spec: Enum) -> int:
    """jsonpb: a JSON string is looked up by name; anything else is unmarshalled into the
    enum's Go type (an int32), whose name Go's messages carry."""
    if isinstance(value, str):
        # jsonpb looks up the text between the quotes as written, escapes not undone
        # ("ASCEND\n" written with an escape is the 9-character name ASCEND\n)
        raw = gojson.raw_string_text(value).decode("utf-8", "replace")
        if raw in spec.values:
            return spec.values[raw]
        raise InvalidArgument(f"unknown value {gojson.go_quote(raw)} for enum {spec.go_name}")
    if isinstance(value, float) and value.is_integer():  # msgpack only
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if _INT32[0] <= value <= _INT32[1]:
            return value
        raise InvalidArgument(f"json: cannot unmarshal number {value} into Go value of type {spec.go_name}")
    raise _type_error(value, spec.go_name)


def _default(kind: Any) -> Any:
    if isinstance(kind, Repeated):
        return []
    if isinstance(kind, Message):
        return None
    if isinstance(kind, Enum):
        return 0
    return {BYTES: b"", INT64: 0, UINT64: 0, BOOL: False, STRING: ""}[kind]


def _value(value: Any, kind: Any, packed: bool) -> Any:
    if value is None:
        return _default(kind)
    if isinstance(kind, str):
        return _scalar(value, kind, packed)
    if isinstance(kind, Enum):
        return _enum(value, kind)
    if isinstance(kind, Repeated):
        if not isinstance(value, list):
            raise _type_error(value, "[]json.RawMessage")
        return [_value(item, kind.item, packed) for item in value if item is not None]
    return decode_message(value, kind, packed)


def json_name(name: str) -> str:
    """protoc's JSON name of a field: lowerCamelCase of the proto name (``range_end`` ->
    ``rangeEnd``; ``ID``, ``TTL`` and ``peerURLs`` stay as they are)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def decode_message(obj: Any, schema: Message, packed: bool = False) -> Any:
    """A message from a JSON object: each field by its proto name or its JSON (camelCase)
    name, the latter winning when both are present (jsonpb accepts both)."""
    if not isinstance(obj, dict):
        raise _type_error(obj, "map[string]json.RawMessage")
    out: dict[str, Any] = {}
    for name, kind in schema.fields.items():
        camel = _CAMEL.get(name)
        if camel is None:
            camel = _CAMEL[name] = json_name(name)
        raw = obj[camel] if camel in obj else obj.get(name)
        out[name] = _default(kind) if raw is None else _value(raw, kind, packed)
    return schema.build(out) if schema.build is not None else out


_CAMEL: dict[str, str] = {}


def decode_body(body: bytes, content_type: str, schema: Message) -> Any:
    """Decode a request body (JSON unless ``content_type`` is msgpack) against ``schema``."""
    if content_type == MSGPACK:
        try:
            obj = msgpack.unpackb(body, raw=False) if body else {}
        except Exception as exc:  # msgpack raises several unrelated types
            raise InvalidArgument(f"msgpack: {exc}") from None
        return decode_message(obj, schema, packed=True)
    obj = gojson.load_body(body)
    if obj is gojson.EMPTY or obj is None:  # io.EOF, or jsonpb's "null": an empty message
        obj = {}
    return decode_message(obj, schema)


class Out:
    """How a response spells bytes and 64-bit integers, and how it is serialized."""

    content_type: str

    def b(self, value: bytes) -> Any:
        raise NotImplementedError

    def i(self, value: int) -> Any:
        raise NotImplementedError

    def dumps(self, obj: Any) -> bytes:
        raise NotImplementedError


class _JsonOut(Out):
    content_type = "application/json"

    def b(self, value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    def i(self, value: int) -> str:
        return str(value)

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


class _MsgpackOut(Out):
    content_type = MSGPACK

    def b(self, value: bytes) -> bytes:
        return value

    def i(self, value: int) -> int:
        return value

    def dumps(self, obj: Any) -> bytes:
        data: bytes = msgpack.packb(obj, use_bin_type=True)  # msgpack has no type hints
        return data


JSON_OUT: Out = _JsonOut()
MSGPACK_OUT: Out = _MsgpackOut()
