"""``-w table``: olekukonko/tablewriter as etcdctl configures it (header upper-cased and
centred, cells right-aligned, ``+---+`` borders). Only member list, endpoint
status/health/hashkv and snapshot status support it, as in etcdctl."""

from __future__ import annotations

import unicodedata

from kvraft.cli.printers.base import (
    DBStatus,
    EndpointHashKV,
    EndpointHealth,
    EndpointStatus,
    Printer,
    db_status_rows,
    endpoint_hashkv_rows,
    endpoint_health_rows,
    endpoint_status_rows,
    member_list_rows,
)
from kvraft.client import MemberListResponse

__all__ = ["TablePrinter", "render_table"]


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def render_table(header: list[str], rows: list[list[str]]) -> str:
    titles = [h.replace("_", " ").upper() for h in header]
    widths = [_width(t) for t in titles]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], _width(cell))
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [border]
    cells = []
    for title, w in zip(titles, widths, strict=True):
        pad = w - _width(title)
        left = pad // 2
        cells.append(" " + " " * left + title + " " * (pad - left) + " ")
    lines.append("|" + "|".join(cells) + "|")
    lines.append(border)
    for row in rows:
        lines.append("|" + "|".join(" " + " " * (w - _width(c)) + c + " " for c, w in zip(row, widths, strict=True)) + "|")
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
