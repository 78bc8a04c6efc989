"""ShortestJobFirst: priority, then the shortest estimated remaining work first."""

from scheduler.plugins.sjf.plugin import NAME, ShortestJobFirst, SjfArgs, new

__all__ = ["NAME", "SjfArgs", "ShortestJobFirst", "new"]
