"""In-tree plugins, one folder each; ``in_tree_registry()`` lists them all."""

from scheduler.plugins.registry import in_tree_registry

__all__ = ["in_tree_registry"]
