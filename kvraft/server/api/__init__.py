"""The client API: etcd v3 JSON gateway routes on aiohttp (and msgpack)."""

from kvraft.server.api.app import make_app

__all__ = ["make_app"]
