"""Safe, bounded YAML loading for every file detector reads: rules, tests, config, audit policy.

Rules files keep scalars as text. Falco's loader (yaml-cpp) reads every scalar as a string:
`items: [yes, 0755]` are the strings "yes" and "0755", and `comps: [=, in]` holds a bare `=`
that PyYAML's implicit resolvers would turn into its special "value" tag. So TextLoader is
SafeLoader with no implicit resolvers: every plain scalar is a str, and nothing but
str/list/dict is built. The other files keep YAML's usual types (TypedLoader), less that
"value" tag, so a rules file re-read for its `tests:` still loads.

A small file must not be able to cost much: a file is read up to a size cap, and aliases may
add at most MAX_ALIAS_NODES nodes in all (a "billion laughs" of nested `&a`/`*a` lists is
600 bytes and 10^9 nodes). Both are checked before anything is built, and the error names
the file and the line of the alias that went past the bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from detector.errors import DetectorError, Location

# libyaml's SafeLoader when PyYAML was built with it (several times faster on large rule
# files); the pure-Python SafeLoader otherwise. Either way we only compose nodes: no Python
# object is ever constructed from YAML tags. libyaml also stops at 1,000 nesting levels.
_SafeBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Nodes that aliases may add to a file, over the nodes written in it. Sharing an exceptions
# list among a few dozen rules fits; an exponential alias chain stops within milliseconds.
MAX_ALIAS_NODES = 10_000

# Bytes of one rules file: ~13x Falco's largest (falco_rules.yaml, 150 kB), and a hot reload of
# a file this size takes about 2 s. Tests files carry events, so they may be larger.
MAX_RULES_FILE_BYTES = 2 << 20
MAX_TESTS_FILE_BYTES = 16 << 20
MAX_CONFIG_FILE_BYTES = 1 << 20


class YamlError(DetectorError):
    """A YAML text is invalid; callers rewrap it into their own error family."""


class YamlLimitError(YamlError):
    """A YAML file exceeds a bound (its size, or what its aliases add)."""


class TextLoader(_SafeBase):  # type: ignore[misc]
    """A safe loader whose plain scalars all stay strings."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 - PyYAML's class attribute


class TypedLoader(_SafeBase):  # type: ignore[misc]
    """SafeLoader's types (bool, int, float, null...), but a bare `=` stays the string "="."""

    yaml_implicit_resolvers: dict[Any, Any] = {  # noqa: RUF012 - PyYAML's class attribute
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


class YamlMap(dict[str, Any]):
    """A mapping that knows the line/column of itself and of each key (1-based)."""

    line: int = 0
    column: int = 0
    key_lines: dict[str, tuple[int, int]]


def read_capped(path: Path, limit: int, what: str) -> str:
    """A file's UTF-8 text, refused past `limit` bytes without reading further.

    OSError and UnicodeDecodeError pass through; the size is a YamlLimitError."""
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise YamlLimitError(f"{what} is larger than {_size(limit)} (the limit for one file); not loaded",
                             Location(str(path)))
    return data.decode("utf-8")


def load_documents(text: str, path: str) -> list[Any]:
    """All documents of a rules text, as plain values (str scalars) with YamlMap mappings.

    Raises YamlError (YamlLimitError past a bound)."""
    try:
        check_aliases(text, path)
        nodes = list(yaml.compose_all(text, Loader=TextLoader))
    except yaml.YAMLError as exc:
        raise YamlError(*_described(exc, path)) from None
    return [None if node is None else _convert(node) for node in nodes]


def load_typed(text: str, path: str) -> Any:
    """The single document of a text with YAML's usual types (config, tests, policy files).

    Raises YamlError (YamlLimitError past a bound)."""
    try:
        check_aliases(text, path)
        return yaml.load(text, Loader=TypedLoader)  # TypedLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise YamlError(*_described(exc, path)) from None


@dataclass(frozen=True, slots=True)
class LineNode:
    """Where a value of a typed document starts (1-based line), with its items or keys: what
    `load_typed` drops, for messages about one entry of a tests file."""

    line: int
    items: tuple[LineNode, ...] = ()
    keys: dict[str, LineNode] = field(default_factory=dict)


def line_tree(text: str) -> LineNode | None:
    """The lines of the single document of a text already loaded with `load_typed` (None if empty)."""
    try:
        node = yaml.compose(text, Loader=TypedLoader)
    except yaml.YAMLError:
        return None
    return None if node is None else _lines_of(node)


def _lines_of(node: yaml.Node) -> LineNode:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.SequenceNode):
        return LineNode(line, tuple(_lines_of(item) for item in node.value))
    if isinstance(node, yaml.MappingNode):
        return LineNode(line, keys={str(k.value): _lines_of(v) for k, v in node.value
                                    if isinstance(k, yaml.ScalarNode)})
    return LineNode(line)


def check_aliases(text: str, path: str, limit: int = MAX_ALIAS_NODES) -> None:
    """Raise YamlLimitError at the alias whose expansion takes the file past `limit` added nodes.

    One pass over the parser's events, keeping the node count of each anchored value: nothing
    is expanded. Texts without an anchor (`&`) cannot hold a valid alias and are not parsed."""
    if "&" not in text:
        return
    sizes: dict[str, int] = {}
    open_counts: list[tuple[str | None, int]] = []  # per open collection: its anchor, nodes so far
    added = 0
    for event in yaml.parse(text, Loader=TextLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            open_counts.append((event.anchor, 1))
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, count = open_counts.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, count = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, count = None, sizes.get(event.anchor or "", 0)  # an unknown one fails when composed
            added += count
            if added > limit or any(event.anchor == outer for outer, _ in open_counts):
                raise YamlLimitError(_alias_problem(event.anchor, added > limit, limit), _at(event, path))
        else:
            continue
        if anchor:
            sizes[anchor] = count
        if open_counts:
            outer, total = open_counts[-1]
            open_counts[-1] = (outer, total + count)


def _alias_problem(anchor: str | None, too_many: bool, limit: int) -> str:
    if too_many:
        return f"alias *{anchor} expands the file past {limit:,} nodes added by aliases; not loaded"
    return f"alias *{anchor} refers to a value that contains it (a recursive structure); not loaded"


def _at(event: yaml.Event, path: str) -> Location:
    mark = event.start_mark
    return Location(path) if mark is None else Location(path, mark.line + 1, mark.column + 1)


def _described(exc: yaml.YAMLError, path: str) -> tuple[str, Location]:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    hint = next((text for needle, text in _HINTS if needle in problem), None)
    return f"invalid YAML: {problem}" + (f" (hint: {hint})" if hint else ""), Location(path, line, column)


# The usual causes of PyYAML's messages, for the hint after them (first match wins).
_HINTS = (
    ("mapping values are not allowed", "a plain value cannot contain ': '; quote the whole value "
     "(key: \"...\") or write it as a block (key: >, then the text on indented lines below)"),
    ("'\\t'", "YAML indents with spaces only; replace the tab by spaces"),
    ("tab character", "YAML indents with spaces only; replace the tab by spaces"),
    ("could not find expected ':'", "a key is missing its ':', or a value spanning lines is not indented "
     "more than its key; quote it or write it as a block (key: >)"),
    ("did not find expected key", "this line is indented differently from the keys above it"),
    ("expected <block end>", "this line is indented differently from the lines above it"),
    ("did not find expected '-' indicator", "this item is indented differently from the items above it"),
    ("found undefined alias", "an alias (*name) needs an anchor (&name) earlier in the file"),
    ("unknown escape character", "in double quotes a backslash starts an escape; write \\\\ or use single "
     "quotes"),
    ("found unexpected end of stream", "a quoted value is not closed"),
    ("that cannot start any token", "a value starting with this character must be quoted"),
)


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit:,} bytes"


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
