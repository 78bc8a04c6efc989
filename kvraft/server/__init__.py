"""The kvraft member process: config, node driver, peer transport, client API."""

__all__: list[str] = []
