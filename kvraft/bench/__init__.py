"""``python -m kvraft.bench``: an etcd-benchmark-like load generator for any v3 endpoint."""

__all__: list[str] = []
