"""Rules files -> items as written: kind, raw mapping and location. No merging, no parsing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.errors import Location
from detector.rules.diagnostics import Code, Diagnostic
from detector.rules.yamlload import (
    MAX_RULES_FILE_BYTES,
    YamlError,
    YamlLimitError,
    YamlMap,
    load_documents,
    read_capped,
)

# Falco decides an item's kind by the first of these keys that is present.
KINDS = ("required_engine_version", "required_plugin_versions", "list", "macro", "rule")


@dataclass(frozen=True, slots=True)
class Item:
    """One top-level item of a rules file."""

    kind: str
    data: YamlMap
    path: str

    def where(self, key: str | None = None, item: str | None = None) -> Location:
        """Location of the item, or of one of its keys."""
        line, column = self.data.key_lines.get(key, (self.data.line, self.data.column)) if key else (
            self.data.line, self.data.column)
        name = item if item is not None else self.name
        return Location(self.path, line, column, name)

    @property
    def name(self) -> str | None:
        value = self.data.get(self.kind)
        return value if isinstance(value, str) and self.kind in ("list", "macro", "rule") else None


def read_items(path: Path, diagnostics: list[Diagnostic]) -> list[Item]:
    """All items of one file, in order; problems are appended to `diagnostics`."""
    shown = str(path)
    try:
        text = read_capped(path, MAX_RULES_FILE_BYTES, "the rules file")
    except (OSError, UnicodeDecodeError) as exc:
        diagnostics.append(Diagnostic(Code.UNREADABLE, f"cannot read rules file: {exc}", Location(shown)))
        return []
    except YamlLimitError as exc:
        diagnostics.append(Diagnostic(Code.TOO_LARGE, exc.message, Location(shown)))
        return []
    try:
        documents = load_documents(text, shown)
    except YamlError as exc:
        code = Code.TOO_LARGE if isinstance(exc, YamlLimitError) else Code.YAML_INVALID
        diagnostics.append(Diagnostic(code, exc.message, exc.location or Location(shown)))
        return []
    items: list[Item] = []
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, list):
            diagnostics.append(Diagnostic(Code.NOT_A_SEQUENCE, "rules content is not a YAML sequence of items",
                                          _location_of(document, shown)))
            continue
        items.extend(_items_of(document, shown, diagnostics))
    return items


def _items_of(document: list[Any], path: str, diagnostics: list[Diagnostic]) -> list[Item]:
    items = []
    for position, entry in enumerate(document, start=1):
        if entry is None:  # Falco skips null entries (a bare `-`)
            continue
        if not isinstance(entry, YamlMap):
            diagnostics.append(Diagnostic(
                Code.ITEM_NOT_MAPPING, f"item #{position} is not a mapping (each element should be a "
                "YAML associative array)", Location(path)))
            continue
        kind = next((k for k in KINDS if k in entry), None)
        if kind is None:
            keys = ", ".join(sorted(entry)) or "no keys"
            diagnostics.append(Diagnostic(Code.UNKNOWN_ITEM, f"unknown top level item ({keys}), ignored",
                                          Location(path, entry.line, entry.column)))
            continue
        items.append(Item(kind, entry, path))
    return items


def _location_of(value: Any, path: str) -> Location:
    if isinstance(value, YamlMap):
        return Location(path, value.line, value.column)
    return Location(path)
