"""What etcd 3.4's JSON gateway (Go's ``encoding/json`` under grpc-gateway v1's ``jsonpb``)
accepts and refuses, with Go's error text, where Python's ``json`` and ``base64`` differ.

* ``load_body``: the request body as Go's ``json.Decoder`` reads it: the FIRST JSON value,
  anything after it ignored (``{"key":"YQ=="} x`` is a valid range); a value cut short is
  ``unexpected EOF``; an empty (Go-whitespace only) body is ``EMPTY``. Numbers that are
  not integers come back as ``GoNumber`` holding their literal text, since Go's messages
  quote that text (``cannot unmarshal number 2.0 into Go value of type int64``).
* ``check_syntax``: Go's scanner over one buffer, raising its ``SyntaxError`` text
  (``invalid character '}' after decimal point in numeric literal``); both the decoder's
  reading of the body and ``json.Unmarshal`` of a string's contents (jsonpb unmarshals
  an int64 given as a JSON string by handing the text between the quotes to
  ``json.Unmarshal``: ``"null"`` is 0, ``"+5"`` is an error).
* ``parse_int_text``: that ``json.Unmarshal`` of a string's contents into an int64/uint64.
* ``b64decode``: ``base64.StdEncoding.Decode`` as ``encoding/json`` uses it for ``[]byte``:
  CR and LF skipped anywhere, padding required, nothing after it, errors naming the byte.
* ``go_quote``: ``strconv.Quote`` (jsonpb's ``%q`` in ``unknown value "..." for enum``).

Only error paths and unusual input take the slow Python scanner; a body Python's ``json``
reads is Go-valid except for NaN/Infinity (refused here as Go does).
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Iterator
from typing import Any

from kvraft.apply.errors import InvalidArgument

__all__ = [
    "EMPTY", "GoNumber", "b64decode", "check_syntax", "go_quote", "iter_values", "kind_of", "load_body", "next_value",
    "parse_int_text",
]

MAX_DEPTH = 10000
_SPACE = b" \t\r\n"


class GoNumber:
    """A JSON number that is not a plain integer literal (``2.0``, ``1e3``), kept as its
    text: no integer field accepts it, and Go's error message quotes it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"GoNumber({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GoNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


class _Empty:
    def __repr__(self) -> str:
        return "EMPTY"


EMPTY: Any = _Empty()
"""An empty body: the decoder's io.EOF, which the gateway takes as an empty message."""


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _parse_int(text: str) -> Any:
    # beyond Python's int-from-text digit limit: no Go integer holds it either
    return int(text) if len(text) < 4000 else GoNumber(text)


def _loads(text: str) -> Any:
    return json.loads(text, parse_float=GoNumber, parse_int=_parse_int, parse_constant=_reject_constant)


_DECODER = json.JSONDecoder(parse_float=GoNumber, parse_int=_parse_int, parse_constant=_reject_constant)


def _quote_char(c: int) -> str:
    """Go's ``quoteChar``: the byte as a rune in single quotes, escaped as strconv.Quote."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    return "'" + go_quote(chr(c))[1:-1] + "'"


_SIMPLE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
                   "\\": "\\\\", '"': '\\"'}  # fmt: skip


def go_quote(text: str) -> str:
    """``strconv.Quote``: printable runes as they are, others escaped."""
    out = ['"']
    for ch in text:
        if ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


class _Scanner:
    """Go's JSON grammar over bytes, with Go's error text. ``scan_value`` returns the
    offset just past one value; ``eof`` is the message for input that ends inside it."""

    def __init__(self, data: bytes, eof: str, space_at_eof: bool = False) -> None:
        self.data = data
        self.eof = eof
        self.space_at_eof = space_at_eof

    def fail(self, pos: int, context: str) -> InvalidArgument:
        if pos >= len(self.data):
            # json.Unmarshal ends its check by scanning one space: where a space is wrong
            # (a number or literal cut short) that is the error, not the end of input
            if self.space_at_eof and ("numeric literal" in context or context.startswith("in literal")):
                return InvalidArgument(f"invalid character ' ' {context}")
            return InvalidArgument(self.eof)
        return InvalidArgument(f"invalid character {_quote_char(self.data[pos])} {context}")

    def at(self, pos: int) -> int:
        return self.data[pos] if pos < len(self.data) else -1

    def skip_space(self, pos: int) -> int:
        while pos < len(self.data) and self.data[pos] in _SPACE:
            pos += 1
        return pos

    def scan_value(self, pos: int) -> int:
        """The offset just past the value at ``pos``; containers on an explicit stack (Go
        allows 10,000 levels, beyond Python's recursion limit)."""
        stack: list[int] = []  # the closing byte of each open container
        while True:
            c = self.at(pos)
            if c in (0x7B, 0x5B):  # { [
                if len(stack) >= MAX_DEPTH:
                    raise InvalidArgument("exceeded max depth")
                closing = 0x7D if c == 0x7B else 0x5D
                pos = self.skip_space(pos + 1)
                if self.at(pos) != closing:
                    stack.append(closing)
                    if closing == 0x7D:
                        pos = self._key(pos)
                    continue  # a value at pos
                pos += 1  # an empty container: a whole value
            else:
                pos = self._scalar(pos)
            while True:  # after a value: close containers, or the next element
                if not stack:
                    return pos
                pos = self.skip_space(pos)
                c, closing = self.at(pos), stack[-1]
                if c == closing:
                    stack.pop()
                    pos += 1
                    continue
                if c != 0x2C:
                    raise self.fail(pos, "after object key:value pair" if closing == 0x7D else "after array element")
                pos = self.skip_space(pos + 1)
                if closing == 0x7D:
                    pos = self._key(pos)
                break

    def _key(self, pos: int) -> int:
        """An object key and its colon at ``pos``; the offset of the value after them."""
        if self.at(pos) != 0x22:
            raise self.fail(pos, "looking for beginning of object key string")
        pos = self.skip_space(self.scan_string(pos + 1))
        if self.at(pos) != 0x3A:
            raise self.fail(pos, "after object key")
        return self.skip_space(pos + 1)

    def _scalar(self, pos: int) -> int:
        c = self.at(pos)
        if c == 0x22:
            return self.scan_string(pos + 1)
        if c == 0x2D or 0x30 <= c <= 0x39:
            return self.scan_number(pos)
        for literal in (b"true", b"false", b"null"):
            if c == literal[0]:
                for offset in range(1, len(literal)):
                    if self.at(pos + offset) != literal[offset]:
                        expecting = chr(literal[offset])
                        raise self.fail(pos + offset, f"in literal {literal.decode()} (expecting '{expecting}')")
                return pos + len(literal)
        raise self.fail(pos, "looking for beginning of value")

    def scan_string(self, pos: int) -> int:
        while True:
            c = self.at(pos)
            if c == 0x22:
                return pos + 1
            if c == 0x5C:
                e = self.at(pos + 1)
                if e == 0x75:  # \u
                    for offset in range(2, 6):
                        h = self.at(pos + offset)
                        if not (0x30 <= h <= 0x39 or 0x41 <= h <= 0x46 or 0x61 <= h <= 0x66):
                            raise self.fail(pos + offset, "in \\u hexadecimal character escape")
                    pos += 6
                    continue
                if e < 0 or chr(e) not in '"\\/bfnrt':
                    raise self.fail(pos + 1, "in string escape code")
                pos += 2
                continue
            if c < 0:
                raise InvalidArgument(self.eof)
            if c < 0x20:
                raise self.fail(pos, "in string literal")
            pos += 1

    def _digits(self, pos: int) -> int:
        while 0x30 <= self.at(pos) <= 0x39:
            pos += 1
        return pos

    def scan_number(self, pos: int) -> int:
        if self.at(pos) == 0x2D:
            pos += 1
            if not 0x30 <= self.at(pos) <= 0x39:
                raise self.fail(pos, "in numeric literal")
        pos = pos + 1 if self.at(pos) == 0x30 else self._digits(pos)
        if self.at(pos) == 0x2E:
            if not 0x30 <= self.at(pos + 1) <= 0x39:
                raise self.fail(pos + 1, "after decimal point in numeric literal")
            pos = self._digits(pos + 1)
        if self.at(pos) in (0x65, 0x45):
            pos += 1
            if self.at(pos) in (0x2B, 0x2D):
                pos += 1
            if not 0x30 <= self.at(pos) <= 0x39:
                raise self.fail(pos, "in exponent of numeric literal")
            pos = self._digits(pos)
        return pos


def check_syntax(data: bytes) -> None:
    """``json.Unmarshal``'s validity check: one value, then only whitespace."""
    scanner = _Scanner(data, "unexpected end of JSON input", space_at_eof=True)
    end = scanner.skip_space(scanner.scan_value(scanner.skip_space(0)))
    if end < len(data):
        raise scanner.fail(end, "after top-level value")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class RawStr(str):
    """A JSON string that was written with escapes, with ``raw``: the bytes between its
    quotes as sent (jsonpb reads int64 strings and enum names from those)."""

    raw: bytes


def _parse_raw(data: bytes, pos: int) -> tuple[Any, int]:
    """One Go-valid JSON value at ``pos`` (``_Scanner`` has checked it), its strings kept
    with their raw text. For bodies with escapes only; recursive (deep ones: RecursionError)."""
    scanner = _Scanner(data, "unexpected EOF")
    c = data[pos]
    if c == 0x7B or c == 0x5B:
        closing = 0x7D if c == 0x7B else 0x5D
        obj: dict[str, Any] = {}
        items: list[Any] = []
        pos = scanner.skip_space(pos + 1)
        while data[pos] != closing:
            if closing == 0x7D:
                key, pos = _parse_raw(data, pos)
                pos = scanner.skip_space(scanner.skip_space(pos) + 1)  # the colon
                obj[str(key)], pos = _parse_raw(data, pos)
            else:
                item, pos = _parse_raw(data, pos)
                items.append(item)
            pos = scanner.skip_space(pos)
            if data[pos] == 0x2C:
                pos = scanner.skip_space(pos + 1)
        return (obj if closing == 0x7D else items), pos + 1
    end = scanner._scalar(pos)
    token = data[pos:end]
    if c == 0x22:
        # a lone surrogate escape (\ud800) is U+FFFD in Go; Python keeps it, and it cannot be encoded
        text = _LONE_SURROGATE.sub("\ufffd", json.loads(token.decode("utf-8", "replace")))
        if b"\\" not in token:
            return text, end
        value = RawStr(text)
        value.raw = token[1:-1]
        return value, end
    return _loads(token.decode()), end


def _load_value(data: bytes, start: int, end: int) -> Any:
    """The Go-valid value ``data[start:end]`` as Python values."""
    if b"\\" in data[start:end]:
        return _parse_raw(data, start)[0]
    return _loads(data[start:end].decode("utf-8", "replace"))


def load_body(body: bytes) -> Any:
    """The first JSON value of a request body, as the gateway's decoder reads it."""
    if b"\\" not in body:
        try:
            return _loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            pass
    scanner = _Scanner(body, "unexpected EOF")
    start = scanner.skip_space(0)
    if start == len(body):
        return EMPTY
    end = scanner.scan_value(start)
    try:
        return _load_value(body, start, end)
    except RecursionError:  # Go-valid (at most 10,000 levels) but deeper than Python reads
        raise InvalidArgument("exceeded max depth") from None
    except ValueError as exc:  # Go-valid, Python not (e.g. lone surrogates)
        raise InvalidArgument(f"invalid JSON: {exc}") from None


_CUT = "\x00cut"  # a scanner's "eof" message: the value goes on past the bytes so far


def next_value(data: bytes, final: bool) -> tuple[Any, int] | None:
    """The first JSON value of a stream's bytes so far and the offset just past it, as Go's
    ``json.Decoder`` reads a body that is still arriving: None while no whole value is there
    yet (a number or literal at the end may go on); with ``final`` (no more bytes will come)
    None only for whitespace, and a value cut short is ``unexpected EOF``. Bytes that cannot
    begin or continue a value raise Go's syntax error at once."""
    scanner = _Scanner(data, "unexpected EOF" if final else _CUT)
    start = scanner.skip_space(0)
    if start == len(data):
        return None
    try:
        end = scanner.scan_value(start)
    except InvalidArgument as exc:
        if exc.message == _CUT:
            return None
        raise
    if not final and end == len(data) and data[start] not in b'{["':
        return None
    return load_body(data[start:end]), end


def iter_values(body: bytes) -> Iterator[Any]:
    """The JSON values of a streaming request body one by one, as the gateway's decoder
    reads them (back to back, whitespace optional between them); a value that does not
    parse raises Go's error when its turn comes (the values before it were yielded)."""
    if b"\\" in body:  # escapes: Go's reading, raw strings kept
        scanner = _Scanner(body, "unexpected EOF")
        start = scanner.skip_space(0)
        while start < len(body):
            end = scanner.scan_value(start)
            try:
                yield _load_value(body, start, end)
            except RecursionError:
                raise InvalidArgument("exceeded max depth") from None
            start = scanner.skip_space(end)
        return
    text = body.decode("utf-8", "surrogateescape")
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        if pos >= n:
            return
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError):
            start = len(text[:pos].encode("utf-8", "surrogateescape"))
            scanner = _Scanner(body, "unexpected EOF")
            end = scanner.scan_value(start)  # raises Go's syntax error
            value = load_body(body[start:end])  # Go-valid, Python not: Go's reading of it
            pos = len(body[:end].decode("utf-8", "surrogateescape"))
        yield value


_BOUNDS = {"int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1), "uint8": (0, 255)}
_INT_LITERAL = re.compile(rb"-?(0|[1-9][0-9]*)")


def kind_of(value: Any) -> str:
    """The JSON kind Go's error messages name (``cannot unmarshal <kind> into ...``)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, GoNumber)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def int_from_literal(text: str, go_type: str) -> int:
    """``strconv.ParseInt``/``ParseUint`` of a JSON number literal, as ``encoding/json``
    stores a number into an integer."""
    low, high = _BOUNDS[go_type]
    if len(text) <= 21 and _INT_LITERAL.fullmatch(text.encode()):
        number = int(text)
        if low <= number <= high:
            return number
    raise InvalidArgument(f"json: cannot unmarshal number {text} into Go value of type {go_type}")


def parse_int_text(raw: bytes, go_type: str) -> int:
    """``json.Unmarshal(raw, &int64)`` where ``raw`` is the text between a JSON string's
    quotes (jsonpb's rule for 64-bit integers given as strings)."""
    check_syntax(raw)
    text = raw.strip(_SPACE)
    if text == b"null":
        return 0
    if text[:1] in (b"-", *(bytes([d]) for d in range(0x30, 0x3A))):
        return int_from_literal(text.decode(), go_type)
    kind = kind_of(_loads(text.decode("utf-8", "replace")))
    raise InvalidArgument(f"json: cannot unmarshal {kind} into Go value of type {go_type}")


def raw_string_text(value: str) -> bytes:
    """The text between the quotes of a JSON string holding ``value``, as the client wrote
    it: jsonpb uses this raw text for int64 strings and enum names. A string of a body with
    escapes is a ``RawStr`` that kept it; in a body without any, raw and decoded agree."""
    if isinstance(value, RawStr):
        return value.raw
    return value.encode("utf-8", "surrogatepass")


_B64 = {c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
STRICT_B64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def b64decode(text: bytes) -> bytes:
    """Go's ``base64.StdEncoding.Decode``, raising ``illegal base64 data at input byte N``."""
    if STRICT_B64.fullmatch(text):
        return binascii.a2b_base64(text)
    stripped = text.replace(b"\r", b"").replace(b"\n", b"")
    _b64_error_index(text)  # raises for anything Go refuses
    return binascii.a2b_base64(stripped)


def _b64_error_index(src: bytes) -> None:
    """Walk Go's decoder over ``src`` quantum by quantum; raise at its first error."""
    si = 0
    n = len(src)
    while True:
        j = 0
        while j < 4:
            if si == n:
                if j == 0:
                    return
                raise InvalidArgument(f"illegal base64 data at input byte {si - j}")
            c = src[si]
            si += 1
            if c in _B64:
                j += 1
                continue
            if c in (0x0A, 0x0D):
                continue
            if c != 0x3D or j < 2:
                raise InvalidArgument(f"illegal base64 data at input byte {si - 1}")
            if j == 2:  # a second '=' must follow (newlines aside)
                while si < n and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == n:
                    raise InvalidArgument(f"illegal base64 data at input byte {n}")
                if src[si] != 0x3D:
                    raise InvalidArgument(f"illegal base64 data at input byte {si - 1}")
                si += 1
            while si < n and src[si] in (0x0A, 0x0D):
                si += 1
            if si < n:
                raise InvalidArgument(f"illegal base64 data at input byte {si}")
            return
