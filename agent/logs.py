"""Task log lines: the CRI format the supervisor writes and Docker's json-file format.

CRI: ``2016-10-06T00:17:09.669794202Z stdout F text`` (``P`` = partial line, joined with the
next). Docker json-file: ``{"log": "text\\n", "stream": "stdout", "time": "..."}``.
"""

from __future__ import annotations

import json

__all__ = ["parse_line"]


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
