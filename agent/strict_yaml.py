"""PURE: PyYAML's safe loader, strict as kubectl's decoding is, for every YAML a person writes
here: job files (``jobctl submit``/``apply``) and the daemons' ``--config`` files.

A mapping key given twice, or one that is not a string, is an error naming its line. PyYAML
keeps the last of two equal keys (a second ``resources:`` replaced the first without a word),
and YAML 1.1 reads ``on``/``yes``/``no`` as booleans (``env: {ON: 1}`` became ``{"True":
"1"}``). A merge key (``<<: *base``) is not a key: what it brings in may be overridden.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["StrictLoader"]


class StrictLoader(yaml.SafeLoader):  # type: ignore[misc]
    """``yaml.load(text, Loader=StrictLoader)``: safe, and strict about mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base': its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"mapping key {key!r} is {type(key).__name__}, not a string (quote it)",
                    key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"mapping key {key!r} appears twice (also line {seen[key].line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]
