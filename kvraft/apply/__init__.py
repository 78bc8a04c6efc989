"""Apply: committed entries -> typed ops -> the MVCC store."""

__all__: list[str] = []
