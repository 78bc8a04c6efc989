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
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from kvraft.apply.errors import InvalidArgument

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
    "go_syntax_error",
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


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(value: Any, go_type: str) -> InvalidArgument:
    kind = _json_kind(value)
    if kind == "number" and go_type in ("int64", "uint64", "int32"):
        return InvalidArgument(f"json: cannot unmarshal number {value} into Go value of type {go_type}")
    return InvalidArgument(f"json: cannot unmarshal {kind} into Go value of type {go_type}")


_LITERALS = {"n": "null", "t": "true", "f": "false"}


def go_syntax_error(text: str, pos: int, expecting_key: bool = False) -> str:
    """Go's ``encoding/json`` syntax-error text for the first bad byte at ``pos``."""
    if pos >= len(text):
        return "unexpected end of JSON input"
    ch = text[pos]
    literal = _LITERALS.get(ch)
    if literal is not None and not expecting_key:
        for offset, want in enumerate(literal):
            got = text[pos + offset] if pos + offset < len(text) else None
            if got is None:
                return "unexpected end of JSON input"
            if got != want:
                return f"invalid character '{got}' in literal {literal} (expecting '{want}')"
    where = "looking for beginning of object key string" if expecting_key else "looking for beginning of value"
    return f"invalid character '{ch}' {where}"


def _parse_int_text(text: str, kind: str) -> int:
    stripped = text.strip()
    try:
        number = int(stripped, 10)
    except ValueError:
        # The gateway hands the string's contents to a JSON number parser.
        index = 0
        if stripped[:1] == "-":
            index = 1
        while index < len(stripped) and stripped[index].isdigit():
            index += 1
        if index == 0 or (index == 1 and stripped[:1] == "-"):
            raise InvalidArgument(go_syntax_error(stripped, index)) from None
        if index < len(stripped):
            try:
                float(stripped)
            except ValueError:
                raise InvalidArgument(
                    f"invalid character '{stripped[index]}' after top-level value"
                ) from None
            raise InvalidArgument(
                f"json: cannot unmarshal number {stripped} into Go value of type {_GO_TYPE[kind]}"
            ) from None
        raise InvalidArgument("unexpected end of JSON input") from None
    return _check_bounds(number, kind, stripped)


def _check_bounds(number: int, kind: str, shown: Any) -> int:
    low, high = _INT_BOUNDS[kind]
    if not low <= number <= high:
        raise InvalidArgument(f"json: cannot unmarshal number {shown} into Go value of type {_GO_TYPE[kind]}")
    return number


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
        raw = text.encode("utf-8", "replace")
        bad = [index for index, byte in enumerate(raw) if byte not in alphabet]
        if bad:
            index = bad[0]
        else:
            index = (len(raw) // 4) * 4 if "=" not in text else max(raw.find(b"="), 0)
        raise InvalidArgument(f"illegal base64 data at input byte {index}") from None


def _scalar(value: Any, kind: str, packed: bool) -> Any:
    if kind == BYTES:
        if isinstance(value, str):
            return value.encode() if packed else _b64(value)
        if packed and isinstance(value, (bytes, bytearray)):
            return bytes(value)
        raise _type_error(value, "[]uint8")
    if kind in (INT64, UINT64):
        if isinstance(value, bool):
            raise _type_error(value, _GO_TYPE[kind])
        if isinstance(value, int):
            return _check_bounds(value, kind, value)
        if isinstance(value, float):
            if value.is_integer():
                return _check_bounds(int(value), kind, value)
            raise _type_error(value, _GO_TYPE[kind])
        if isinstance(value, str):
            return _parse_int_text(value, kind)
        raise _type_error(value, _GO_TYPE[kind])
    if kind == BOOL:
        if isinstance(value, bool):
            return value
        raise _type_error(value, "bool")
    if isinstance(value, str):
        return value
    raise _type_error(value, "string")


def _enum(value: Any, spec: Enum) -> int:
    if isinstance(value, str):
        if value in spec.values:
            return spec.values[value]
        raise InvalidArgument(f'unknown value "{value}" for enum {spec.go_name}')
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _type_error(value, "int32")


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


def decode_message(obj: Any, schema: Message, packed: bool = False) -> Any:
    if not isinstance(obj, dict):
        raise _type_error(obj, "map[string]json.RawMessage")
    out: dict[str, Any] = {}
    for name, kind in schema.fields.items():
        raw = obj.get(name)
        out[name] = _default(kind) if raw is None else _value(raw, kind, packed)
    return schema.build(out) if schema.build is not None else out


def decode_body(body: bytes, content_type: str, schema: Message) -> Any:
    """Decode a request body (JSON unless ``content_type`` is msgpack) against ``schema``."""
    if content_type == MSGPACK:
        try:
            obj = msgpack.unpackb(body, raw=False) if body else {}
        except Exception as exc:  # msgpack raises several unrelated types
            raise InvalidArgument(f"msgpack: {exc}") from None
        return decode_message(obj, schema, packed=True)
    if not body.strip():
        return decode_message({}, schema)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument("invalid character looking for beginning of value") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        expecting_key = exc.msg.startswith("Expecting property name")
        if exc.msg.startswith("Extra data"):
            raise InvalidArgument(f"invalid character '{text[exc.pos]}' after top-level value") from None
        raise InvalidArgument(go_syntax_error(text, exc.pos, expecting_key)) from None
    except RecursionError:
        raise InvalidArgument("exceeded max depth") from None
    except ValueError:  # e.g. an integer literal longer than Python converts
        raise InvalidArgument("json: cannot unmarshal number into Go value of type int64") from None
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
