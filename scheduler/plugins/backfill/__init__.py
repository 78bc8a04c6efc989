"""Backfill: reservations so that big gangs are not starved, and EASY-style backfill."""

from scheduler.plugins.backfill.plugin import NAME, Backfill, BackfillArgs, new

__all__ = ["NAME", "Backfill", "BackfillArgs", "new"]
