"""Typed app state of the watch / lease / auth / lock / election routes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["FEATURES"]

FEATURES: web.AppKey[Any] = web.AppKey("features", object)
"""The member's ``kvraft.server.features.Features``."""
