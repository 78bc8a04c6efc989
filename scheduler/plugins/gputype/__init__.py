"""GpuType: a job that names a GPU type runs only on nodes of that type; a job"s node"""

from scheduler.plugins.gputype.plugin import NAME, GpuType, GpuTypeArgs, new

__all__ = ["NAME", "GpuType", "GpuTypeArgs", "new"]
