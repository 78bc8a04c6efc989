"""``-w table``: olekukonko/tablewriter as etcdctl configures it (header upper-cased and
centred, cells right-aligned, ``+---+`` borders, a cell over 30 columns wrapped onto more
lines). Only member list, endpoint status/health/hashkv and snapshot status support it, as
in etcdctl."""

from __future__ import annotations

import unicodedata

from kvraft.cli.printers.base import (
    DBHashKV,
    DBStatus,
    EndpointHashKV,
    EndpointHealth,
    EndpointStatus,
    Printer,
    db_hash_kv_rows,
    db_status_rows,
    endpoint_hashkv_rows,
    endpoint_health_rows,
    endpoint_status_rows,
    member_list_rows,
)
from kvraft.client import MemberListResponse

__all__ = ["MAX_CELL_WIDTH", "TablePrinter", "render_table", "wrap_cell"]

MAX_CELL_WIDTH = 30
"""tablewriter's ``MAX_ROW_WIDTH``: a longer cell is wrapped (etcdctl keeps auto-wrap on)."""
_OVERLONG_PENALTY = 100_000


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def wrap_cell(text: str, limit: int) -> list[str]:
    """The lines of a cell as the tablewriter etcd 3.4 vendors wraps it: words split at
    each single space (so ``"a  b "`` has empty words, kept), the limit raised to the
    longest word, and the breaks that minimise the sum over lines but the last of the
    squared space left (a line over the limit costs a large penalty more)."""
    words = text.replace("\n", " ").split(" ")
    limit = max(limit, *(len(word.encode()) for word in words))  # (Go's len: bytes)
    n = len(words)
    # width of words[i..j] joined by single spaces, counted in code points (Go: runes)
    starts = [0]
    for word in words:
        starts.append(starts[-1] + len(word) + 1)

    def span(i: int, j: int) -> int:
        return starts[j + 1] - starts[i] - 1

    cost = [0] * n
    breaks = [n] * n
    for i in range(n - 1, -1, -1):
        if span(i, n - 1) <= limit or i == n - 1:
            continue  # the rest fits on the last line, which costs nothing
        best = None
        for j in range(i + 1, n):
            gap = limit - span(i, j - 1)
            c = gap * gap + cost[j] + (_OVERLONG_PENALTY if gap < 0 else 0)
            if best is None or c < best:
                best, breaks[i] = c, j
        cost[i] = best if best is not None else 0
    lines, i = [], 0
    while i < n:
        lines.append(" ".join(words[i : breaks[i]]))
        i = breaks[i]
    return lines


def render_table(header: list[str], rows: list[list[str]]) -> str:
    titles = [h.replace("_", " ").upper() for h in header]
    widths = [min(_width(t), MAX_CELL_WIDTH) for t in titles]
    wrapped: list[list[list[str]]] = []
    for row in rows:  # in order: each cell is wrapped at its column's width so far, as tablewriter does
        cells = []
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], min(_width(cell), MAX_CELL_WIDTH))
            lines = wrap_cell(cell, widths[i])
            widths[i] = max(widths[i], *(_width(line) for line in lines))
            cells.append(lines)
        wrapped.append(cells)
    widths = [max(w, _width(t)) for w, t in zip(widths, titles, strict=True)]
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [border]
    heads = []
    for title, w in zip(titles, widths, strict=True):
        pad = w - _width(title)
        left = pad // 2
        heads.append(" " + " " * left + title + " " * (pad - left) + " ")
    lines.append("|" + "|".join(heads) + "|")
    lines.append(border)
    for cells in wrapped:
        for y in range(max(len(c) for c in cells)):
            texts = [c[y] if y < len(c) else "" for c in cells]
            lines.append("|" + "|".join(" " + " " * (w - _width(t)) + t + " " for t, w in zip(texts, widths, strict=True)) + "|")
    lines.append(border)
    return "\n".join(lines) + "\n"


class TablePrinter(Printer):
    name = "table"

    def member_list(self, resp: MemberListResponse) -> None:
        self.out.write(render_table(*member_list_rows(resp)))

    def endpoint_health(self, items: list[EndpointHealth]) -> None:
        self.out.write(render_table(*endpoint_health_rows(items)))

    def endpoint_status(self, items: list[EndpointStatus]) -> None:
        self.out.write(render_table(*endpoint_status_rows(items)))

    def endpoint_hashkv(self, items: list[EndpointHashKV]) -> None:
        self.out.write(render_table(*endpoint_hashkv_rows(items)))

    def db_status(self, status: DBStatus) -> None:
        self.out.write(render_table(*db_status_rows(status)))

    def db_hash_kv(self, kv: DBHashKV) -> None:
        self.out.write(render_table(*db_hash_kv_rows(kv)))
