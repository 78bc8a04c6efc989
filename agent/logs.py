"""Task log lines: the CRI format the supervisor writes and Docker's json-file format.

CRI: ``2016-10-06T00:17:09.669794202Z stdout F text`` (``P`` = partial line, joined with the
next). Docker json-file: ``{"log": "text\\n", "stream": "stdout", "time": "..."}``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

__all__ = ["line_time", "parse_line"]

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def parse_line(line: bytes) -> tuple[bytes, str, bool, bytes] | None:
    """``(timestamp, stream, partial, text)`` of one stored log line, or None if unreadable."""
    if line.startswith(b"{"):
        try:
            doc = json.loads(line)
        except ValueError:
            return None
        text = doc.get("log", "")
        partial = not text.endswith("\n")
        return doc.get("time", "").encode(), str(doc.get("stream", "stdout")), partial, text.rstrip("\n").encode()
    parts = line.split(b" ", 3)
    if len(parts) < 4:
        return None
    ts, stream, tag, text = parts
    return ts, stream.decode(errors="replace"), tag == b"P", text


def line_time(line: bytes) -> float | None:
    """The Unix time of a stored log line (its CRI or json-file timestamp: RFC 3339 with up to
    nine fraction digits, Go's RFC3339Nano), or None if it has none that reads."""
    parsed = parse_line(line)
    m = _RFC3339.fullmatch(parsed[0].decode(errors="replace")) if parsed is not None else None
    if m is None:
        return None
    try:
        t = datetime.fromisoformat(m[1] + ("+00:00" if m[3] == "Z" else m[3])).timestamp()
    except ValueError:  # 2026-13-45...
        return None
    return t + (int(m[2].ljust(9, "0")) / 1e9 if m[2] else 0.0)
