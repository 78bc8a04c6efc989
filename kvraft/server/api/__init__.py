"""The client API: etcd v3 JSON gateway routes on aiohttp."""

__all__: list[str] = []
