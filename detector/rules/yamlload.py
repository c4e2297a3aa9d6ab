"""Safe YAML loading for rules files, keeping scalars as text and remembering line numbers.

Falco's loader (yaml-cpp) reads every scalar as a string: `items: [yes, 0755]` are the
strings "yes" and "0755", and `comps: [=, in]` holds a bare `=` that PyYAML's implicit
resolvers would turn into its special "value" tag. So the loader is SafeLoader with no
implicit resolvers: every plain scalar is a str, and nothing but str/list/dict is built.
"""

from __future__ import annotations

from typing import Any

import yaml

from detector.errors import Location, RuleLoadError

# libyaml's SafeLoader when PyYAML was built with it (several times faster on large rule
# files); the pure-Python SafeLoader otherwise. Either way we only compose nodes: no Python
# object is ever constructed from YAML tags.
_SafeBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class TextLoader(_SafeBase):  # type: ignore[misc]
    """A safe loader whose plain scalars all stay strings."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 - PyYAML's class attribute


class YamlMap(dict[str, Any]):
    """A mapping that knows the line/column of itself and of each key (1-based)."""

    line: int = 0
    column: int = 0
    key_lines: dict[str, tuple[int, int]]


def load_documents(text: str, path: str) -> list[Any]:
    """All documents of a YAML text, as plain values with YamlMap mappings."""
    try:
        nodes = list(yaml.compose_all(text, Loader=TextLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise RuleLoadError(f"invalid YAML: {problem}", Location(path, line, column)) from None
    return [None if node is None else _convert(node) for node in nodes]


def _convert(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        plain = node.style in (None, "")  # the C and Python parsers spell "plain" differently
        if node.tag == "tag:yaml.org,2002:null" or (plain and node.value in ("", "~", "null")):
            return None
        return node.value
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item) for item in node.value]
    if isinstance(node, yaml.MappingNode):
        result = YamlMap()
        result.line = node.start_mark.line + 1
        result.column = node.start_mark.column + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = _convert(key_node)
            key = "" if key is None else str(key) if not isinstance(key, str) else key
            result[key] = _convert(value_node)
            result.key_lines[key] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return result
    raise TypeError(f"unexpected YAML node {node!r}")


def parse_bool(value: Any) -> bool | None:
    """yaml-cpp's convert<bool>: true/false/yes/no/on/off/y/n in any case; None if not a bool."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    lowered = value.lower()
    if lowered in ("true", "yes", "on", "y"):
        return True
    if lowered in ("false", "no", "off", "n"):
        return False
    return None
