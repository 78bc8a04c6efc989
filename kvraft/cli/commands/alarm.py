"""``alarm list | disarm``."""

from __future__ import annotations

import argparse
from typing import Any

from kvraft.cli.context import Context
from kvraft.cli.errors import EXIT_BAD_ARGS, CommandError
from kvraft.cli.parsing import subcommands

__all__ = ["register"]


async def run_list(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.args:
        raise CommandError(EXIT_BAD_ARGS, "alarm list command accepts no arguments")
    client = await ctx.client()
    ctx.printer.alarm(await client.alarm_list())


async def run_disarm(ctx: Context, ns: argparse.Namespace) -> None:
    if ns.args:
        raise CommandError(EXIT_BAD_ARGS, "alarm disarm command accepts no arguments")
    client = await ctx.client()
    ctx.printer.alarm(await client.alarm_disarm())


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    alarm = sub.add_parser("alarm", help="Alarm related commands")
    alarm.set_defaults(help_parser=alarm)
    verbs = subcommands(alarm, "verb")
    for name, handler, text in (("disarm", run_disarm, "Disarms all alarms"), ("list", run_list, "Lists all alarms")):
        p = verbs.add_parser(name, parents=[parent], help=text)
        p.add_argument("args", nargs="*", help=argparse.SUPPRESS)
        p.set_defaults(handler=handler)
