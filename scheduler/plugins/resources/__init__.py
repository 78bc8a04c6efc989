"""ResourceFit: does a task fit on the node (health, GPUs, CPU, memory), how many tasks fit,"""

from scheduler.plugins.resources.plugin import NAME, ResourceFit, ResourcesArgs, new

__all__ = ["NAME", "ResourceFit", "ResourcesArgs", "new"]
