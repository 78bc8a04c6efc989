"""Typed application state keys of the client API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["SERVER"]

SERVER: web.AppKey[Any] = web.AppKey("server", object)
"""The member this app serves (``kvraft.server.node.Node``)."""
