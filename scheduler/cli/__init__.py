"""``jobctl``: submit and inspect jobs on a kvraft cluster (one module per verb; printers
separate)."""

__all__: list[str] = []
