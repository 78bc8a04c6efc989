"""Output printers, one module per ``-w`` format, separate from command logic."""

from __future__ import annotations

from typing import TextIO

from kvraft.cli.errors import EXIT_BAD_FEATURE, CommandError
from kvraft.cli.printers.base import (
    DBStatus,
    EndpointHashKV,
    EndpointHealth,
    EndpointStatus,
    Printer,
)
from kvraft.cli.printers.fields import FieldsPrinter
from kvraft.cli.printers.json import JsonPrinter
from kvraft.cli.printers.simple import SimplePrinter
from kvraft.cli.printers.table import TablePrinter

__all__ = [
    "DBStatus",
    "EndpointHashKV",
    "EndpointHealth",
    "EndpointStatus",
    "FORMATS",
    "Printer",
    "make_printer",
]

FORMATS = {"simple": SimplePrinter, "json": JsonPrinter, "fields": FieldsPrinter, "table": TablePrinter}


def make_printer(fmt: str, out: TextIO, err: TextIO, *, hex_output: bool = False) -> Printer:
    cls = FORMATS.get(fmt)
    if cls is None:
        if fmt == "protobuf":
            raise CommandError(EXIT_BAD_FEATURE, "protobuf not supported as output format by kvctl")
        raise CommandError(EXIT_BAD_FEATURE, "unsupported output format")
    return cls(out, err, hex_output=hex_output)
