"""Go formatting that etcdctl's output is made of: ``%q``, go-humanize ``Bytes``,
``time.Duration.String``, Go duration parsing, ``%x`` hex with ``\\x`` prefixes."""

from __future__ import annotations

import math

from kvraft.client.goduration import parse_duration

__all__ = ["go_quote", "go_unquote", "hex_bytes", "humanize_bytes", "format_duration", "parse_duration"]

_ESCAPES = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v", 34: '\\"', 92: "\\\\"}


def go_quote(data: bytes | str) -> str:
    """Go's ``strconv.Quote`` (``%q``) of a byte string: valid printable UTF-8 stays,
    control characters use short escapes or ``\\x``/``\\u``, invalid bytes ``\\x``."""
    raw = data.encode() if isinstance(data, str) else data
    out = ['"']
    text = raw.decode("utf-8", errors="surrogateescape")
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an invalid byte, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code in _ESCAPES:
            out.append(_ESCAPES[code])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable() and code != 0x20:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_UNESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"', "'": "'"}


def go_unquote(quoted: str) -> str:
    """Inverse of ``go_quote`` for double-quoted or back-quoted Go string literals."""
    if len(quoted) >= 2 and quoted[0] == quoted[-1] == "`":
        return quoted[1:-1]
    if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
        raise ValueError(f"invalid syntax: {quoted}")
    body, out, i = quoted[1:-1], bytearray(), 0
    while i < len(body):
        ch = body[i]
        if ch == '"':
            raise ValueError(f"invalid syntax: {quoted}")
        if ch != "\\":
            out += ch.encode()
            i += 1
            continue
        kind = body[i + 1] if i + 1 < len(body) else ""
        if kind in _UNESCAPES:
            out += _UNESCAPES[kind].encode()
            i += 2
        elif kind == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        elif kind in ("u", "U"):
            width = 4 if kind == "u" else 8
            out += chr(int(body[i + 2 : i + 2 + width], 16)).encode()
            i += 2 + width
        elif kind.isdigit():
            out.append(int(body[i + 1 : i + 4], 8))
            i += 4
        else:
            raise ValueError(f"invalid syntax: {quoted}")
    return out.decode("utf-8", errors="surrogateescape")


def hex_bytes(data: bytes) -> str:
    """etcdctl ``--hex``: every byte as ``\\xNN``."""
    return "".join(f"\\x{b:02x}" for b in data)


def humanize_bytes(size: int) -> str:
    """go-humanize ``Bytes``: SI units, one decimal below 10 (``20 kB``, ``1.5 MB``)."""
    if size < 10:
        return f"{size} B"
    exponent = math.floor(math.log(size) / math.log(1000))
    suffix = ["B", "kB", "MB", "GB", "TB", "PB", "EB"][exponent]
    value = math.floor(size / (1000**exponent) * 10 + 0.5) / 10
    return f"{value:.1f} {suffix}" if value < 10 else f"{value:.0f} {suffix}"


def format_duration(seconds: float) -> str:
    """Go's ``time.Duration.String`` (``1.231782ms``, ``955.337µs``, ``1m0.5s``)."""
    nanos = round(seconds * 1e9)
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos < 1000:
        return f"{sign}{nanos}ns"
    if nanos < 1_000_000:
        return sign + _trim(f"{nanos / 1e3:.3f}") + "µs"
    if nanos < 1_000_000_000:
        return sign + _trim(f"{nanos / 1e6:.6f}") + "ms"
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim(f"{rest / 1e9:.9f}") + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return sign + secs


def _trim(number: str) -> str:
    return number.rstrip("0").rstrip(".") if "." in number else number
