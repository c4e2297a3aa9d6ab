"""Merge items by name across files: definitions, append, override, enabled-only items.

Mirrors Falco's rule_loader_collector: redefinition keeps the original position, append and
override update content, and every problem becomes a Diagnostic (collection goes on, so one
`detector validate` run shows them all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from detector.rules.diagnostics import Code, Diagnostic, did_you_mean
from detector.rules.model import ExceptionInfo, ListInfo, MacroInfo, Priority, RuleInfo
from detector.rules.reader import Item
from detector.rules.yamlload import YamlMap, parse_bool

ENGINE_VERSION = (0, 62, 0)  # the Falco engine version whose rules format we implement
EMULATED_PLUGINS = {"k8saudit": (0, 18, 0), "json": (0, 7, 4)}
_K8SAUDIT_VARIANTS = ("k8saudit-aks", "k8saudit-eks", "k8saudit-gke", "k8saudit-ovh", "k8saudit-gke-audit")

EXCEPTION_KEYS = {"name", "fields", "comps", "values"}
LIST_KEYS = {"list", "items", "append", "override"}
MACRO_KEYS = {"macro", "condition", "append", "override"}
RULE_KEYS = {"rule", "condition", "output", "desc", "priority", "source", "enabled", "capture",
             "capture_duration", "warn_evttypes", "skip-if-unknown-filter", "tags", "exceptions",
             "override", "append", "tests", "correlation"}
OVERRIDE_APPENDABLE = {"condition", "output", "desc", "tags", "exceptions"}
OVERRIDE_REPLACEABLE = OVERRIDE_APPENDABLE | {"priority", "enabled", "capture", "capture_duration",
                                              "warn_evttypes", "skip-if-unknown-filter", "correlation"}
PRIORITY_CHOICES = f" (use one of: {', '.join(p.label for p in Priority)}; or Info)"
_BARESTR = re.compile(r"[^()\"'\s=,]+")
_IDENT = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*")
_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)")


@dataclass
class Collection:
    """Everything collected so far, in definition order."""

    lists: dict[str, ListInfo] = field(default_factory=dict)
    macros: dict[str, MacroInfo] = field(default_factory=dict)
    rules: dict[str, RuleInfo] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    counter: int = 0
    # The condition and exceptions text of every rule and macro item read, kept or refused: a
    # list or macro that a refused rule uses is not "unused" (that rule's error is the news).
    written: list[str] = field(default_factory=list)


class Collector:
    """Feed items in load order with `add`; read the merged result from `collection`."""

    def __init__(self) -> None:
        self.collection = Collection()

    def report(self, code: Code, message: str, item: Item, key: str | None = None) -> None:
        self.collection.diagnostics.append(Diagnostic(code, message, item.where(key)))

    def tick(self) -> int:
        self.collection.counter += 1
        return self.collection.counter

    def add(self, item: Item) -> None:
        handler = {
            "required_engine_version": self._engine_version,
            "required_plugin_versions": self._plugin_versions,
            "list": self._list,
            "macro": self._macro,
            "rule": self._rule,
        }[item.kind]
        handler(item)

    # -- requirements ---------------------------------------------------------------------
    def _engine_version(self, item: Item) -> None:
        value = item.data["required_engine_version"]
        version = _engine_semver(value)
        if version is None:
            self.report(Code.ENGINE_VERSION, f"unable to parse engine version {value!r}", item,
                        "required_engine_version")
        elif version[0] != ENGINE_VERSION[0] or version > ENGINE_VERSION:
            have = ".".join(map(str, ENGINE_VERSION))
            self.report(Code.ENGINE_VERSION, f"rules require engine version {'.'.join(map(str, version))}, "
                        f"but engine version is {have}", item, "required_engine_version")
        self._unknown_keys(item, {"required_engine_version"})

    def _plugin_versions(self, item: Item) -> None:
        value = item.data["required_plugin_versions"]
        if not isinstance(value, list):
            self.report(Code.PLUGIN_VERSIONS, "required_plugin_versions must be a sequence", item)
            return
        for requirement in value:
            choices = _plugin_choices(requirement)
            if choices is None:
                self.report(Code.PLUGIN_VERSIONS, "each required plugin needs a name and a semver version",
                            item, "required_plugin_versions")
                continue
            if not any(_plugin_satisfied(name, version) for name, version in choices):
                wanted = " or ".join(f"{n} {'.'.join(map(str, v))}" for n, v in choices)
                self.report(Code.PLUGIN_UNKNOWN, f"rules require plugin {wanted}, which detector does not "
                            "emulate; loading anyway", item, "required_plugin_versions")

    # -- lists and macros -----------------------------------------------------------------
    def _list(self, item: Item) -> None:
        name, data = item.data["list"], item.data
        if not isinstance(name, str) or not name:
            self.report(Code.MISSING_KEY, "list has no name", item, "list")
            return
        self._unknown_keys(item, LIST_KEYS)
        if not _BARESTR.fullmatch(name):
            self.report(Code.INVALID_NAME, f"list has an invalid name {name!r}", item, "list")
        items = data.get("items")
        if "items" not in data or not isinstance(items if items is not None else [], list):
            self.report(Code.MISSING_KEY, "list needs an 'items' sequence", item, "items")
            return
        if any(isinstance(v, list | dict) for v in items or []):
            self.report(Code.BAD_VALUE, "list items must be scalars", item, "items")
            return
        values = [v if v is not None else "" for v in items or []]
        append = self._append_mode(item, "items")
        if append is None:
            return
        lists = self.collection.lists
        if append:
            if name not in lists:
                self.report(Code.NO_TARGET, "list uses 'append' or 'override.items: append' but no list by "
                            "that name already exists" + did_you_mean(name, lists), item)
                return
            lists[name].items.extend(values)
            lists[name].visibility = self.tick()
        elif name in lists:
            lists[name].items = values
            lists[name].visibility = self.tick()
            lists[name].location = item.where()
        else:
            index = self.tick()
            lists[name] = ListInfo(name, values, index, index, item.where())

    def _macro(self, item: Item) -> None:
        name, data = item.data["macro"], item.data
        if not isinstance(name, str) or not name:
            self.report(Code.MISSING_KEY, "macro has no name", item, "macro")
            return
        self._unknown_keys(item, MACRO_KEYS)
        self.collection.written.append(str(data.get("condition") or ""))
        if not _IDENT.fullmatch(name):
            self.report(Code.INVALID_NAME, f"macro name {name!r} cannot be referenced in a condition", item,
                        "macro")
        condition = data.get("condition")
        if not isinstance(condition, str) or not condition.strip():
            self.report(Code.MISSING_KEY, "macro needs a non-empty 'condition'", item, "condition")
            return
        append = self._append_mode(item, "condition")
        if append is None:
            return
        macros = self.collection.macros
        if append:
            if name not in macros:
                self.report(Code.NO_TARGET, "macro uses 'append' or 'override.condition: append' but no macro "
                            "by that name already exists" + did_you_mean(name, macros), item)
                return
            macros[name].condition += " " + condition
            macros[name].visibility = self.tick()
        elif name in macros:
            macros[name].condition = condition
            macros[name].condition_location = item.where("condition")
            macros[name].visibility = self.tick()
        else:
            index = self.tick()
            macros[name] = MacroInfo(name, condition, index, index, item.where(), item.where("condition"))

    def _append_mode(self, item: Item, key: str) -> bool | None:
        """True for append, False for define/replace, None when the item is invalid."""
        data = item.data
        append = parse_bool(data.get("append", "false"))
        if append is None:
            self.report(Code.BAD_VALUE, "'append' must be a boolean", item, "append")
            return None
        override = data.get("override")
        if override is None:
            if append:
                self.report(Code.DEPRECATED, "'append: true' is deprecated; use 'override' instead", item,
                            "append")
            return append
        if append:
            self.report(Code.BAD_OVERRIDE, "keys 'override' and 'append: true' cannot be used together", item,
                        "override")
            return None
        if not isinstance(override, dict) or set(override) != {key} or override[key] not in ("append", "replace"):
            self.report(Code.BAD_OVERRIDE, f"override must be {{{key}: append|replace}}", item, "override")
            return None
        return bool(override[key] == "append")

    # -- rules ----------------------------------------------------------------------------
    def _rule(self, item: Item) -> None:
        name = item.data["rule"]
        if not isinstance(name, str) or not name:
            self.report(Code.MISSING_KEY, "rule has no name", item, "rule")
            return
        self._unknown_keys(item, RULE_KEYS)
        data = item.data
        self.collection.written += [str(data.get("condition") or ""), str(data.get("exceptions") or "")]
        if "override" in data:
            self._rule_override(item, name)
        elif parse_bool(data.get("append", "false")):
            self._rule_append(item, name)
        elif not any(k in data for k in ("condition", "output", "desc", "priority")):
            self._rule_enabled_only(item, name)
        else:
            self._rule_define(item, name)

    def _rule_define(self, item: Item, name: str) -> None:
        data = item.data
        for key in ("condition", "output", "desc", "priority"):
            if not isinstance(data.get(key), str) or not data[key].strip():
                self.report(Code.MISSING_KEY, f"rule needs a non-empty '{key}'", item, key if key in data else None)
                return
        priority = Priority.parse(data["priority"])
        if priority is None:
            self.report(Code.INVALID_PRIORITY, f"invalid priority {data['priority']!r}{PRIORITY_CHOICES}", item,
                        "priority")
            return
        parsed = self._rule_fields(item)
        if parsed is None:
            return
        enabled, tags, exceptions, skip_unknown = parsed
        source = data.get("source")
        rules = self.collection.rules
        old = rules.get(name)
        if old is not None and old.source and source and old.source != source:
            self.report(Code.SOURCE_CHANGED, "rule has been re-defined with a different source", item, "source")
            return
        index = old.index if old is not None else self.tick()
        rules[name] = RuleInfo(
            name=name, condition=data["condition"], output=data["output"].strip(), desc=data["desc"],
            priority=priority, source=source, enabled=enabled, tags=tags, exceptions=exceptions,
            index=index, visibility=self.tick() if old is not None else index, location=item.where(),
            condition_location=item.where("condition"), output_location=item.where("output"),
            skip_if_unknown_filter=skip_unknown, tests=list(data.get("tests") or []),
            correlation=data.get("correlation"),
        )

    def _rule_fields(self, item: Item) -> tuple[bool, set[str], list[ExceptionInfo], bool] | None:
        data = item.data
        enabled = parse_bool(data.get("enabled", "true"))
        skip_unknown = parse_bool(data.get("skip-if-unknown-filter", "false"))
        if enabled is None or skip_unknown is None:
            self.report(Code.BAD_VALUE, "'enabled' and 'skip-if-unknown-filter' must be booleans", item)
            return None
        tags = data.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            self.report(Code.BAD_VALUE, "'tags' must be a sequence of strings", item, "tags")
            return None
        exceptions = self._exceptions(item, data.get("exceptions"), new=True)
        if exceptions is None:
            return None
        return enabled, set(tags), exceptions, skip_unknown

    def _target(self, item: Item, name: str, message: str) -> RuleInfo | None:
        rule = self.collection.rules.get(name)
        if rule is None:
            self.report(Code.NO_TARGET, message + did_you_mean(name, self.collection.rules), item)
            return None
        source = item.data.get("source")
        if rule.source and source and rule.source != source:
            self.report(Code.SOURCE_CHANGED, "rule has been re-defined with a different source", item, "source")
            return None
        return rule

    def _rule_append(self, item: Item, name: str) -> None:
        self.report(Code.DEPRECATED, "'append: true' is deprecated; use 'override' instead", item, "append")
        data = item.data
        if "condition" not in data and "exceptions" not in data:
            self.report(Code.BAD_OVERRIDE, "appended rule must have exceptions or condition property", item)
            return
        rule = self._target(item, name, "rule uses 'append' but no rule by that name already exists")
        if rule is None:
            return
        if "condition" in data:
            if not isinstance(data["condition"], str):
                self.report(Code.BAD_VALUE, "'condition' must be a string", item, "condition")
                return
            rule.condition += " " + data["condition"]
        if "exceptions" in data and not self._merge_exceptions(item, rule):
            return
        rule.visibility = self.tick()

    def _rule_enabled_only(self, item: Item, name: str) -> None:
        if "enabled" not in item.data:
            self.report(Code.MISSING_KEY, "rule needs 'condition', 'output', 'desc' and 'priority'", item)
            return
        self.report(Code.DEPRECATED, "an item with only 'enabled' is deprecated; use "
                    "'override: {enabled: replace}'", item, "enabled")
        rule = self._target(item, name, "rule has 'enabled' key but no rule by that name already exists")
        enabled = parse_bool(item.data["enabled"])
        if rule is None or enabled is None:
            if enabled is None:
                self.report(Code.BAD_VALUE, "'enabled' must be a boolean", item, "enabled")
            return
        rule.enabled = enabled
        rule.visibility = self.tick()

    def _rule_override(self, item: Item, name: str) -> None:
        data = item.data
        override = data["override"]
        if parse_bool(data.get("append", "false")):
            self.report(Code.BAD_OVERRIDE, "keys 'override' and 'append: true' cannot be used together", item,
                        "override")
            return
        if not isinstance(override, dict) or not override:
            self.report(Code.BAD_OVERRIDE, "'override' must be a mapping of key: append|replace", item, "override")
            return
        for key, mode in override.items():
            problem = _override_problem(key, mode, data)
            if problem:
                self.report(Code.BAD_OVERRIDE, problem, item, "override")
                return
        for key in OVERRIDE_REPLACEABLE & set(data):
            if key not in override:
                self.report(Code.BAD_OVERRIDE, f"unexpected key '{key}': no corresponding entry under "
                            "'override' is defined", item, key)
                return
        mode_word = "append" if "append" in override.values() else "replace"
        rule = self._target(item, name, f"rule uses 'override.<key>: {mode_word}' but no rule by that name "
                            "already exists")
        if rule is None:
            return
        appends = [k for k, m in override.items() if m == "append"]
        replaces = [k for k, m in override.items() if m == "replace"]
        if self._apply_appends(item, rule, appends):
            self._apply_replaces(item, rule, replaces)
        rule.visibility = self.tick()

    def _apply_appends(self, item: Item, rule: RuleInfo, keys: list[str]) -> bool:
        data = item.data
        for key in keys:
            value = data[key]
            if key == "exceptions":
                if not self._merge_exceptions(item, rule):
                    return False
            elif key == "tags":
                if not isinstance(value, list):
                    self.report(Code.BAD_VALUE, "'tags' must be a sequence of strings", item, "tags")
                    return False
                rule.tags |= {str(v) for v in value}
            elif not isinstance(value, str):
                self.report(Code.BAD_VALUE, f"'{key}' must be a string", item, key)
                return False
            else:
                setattr(rule, key, getattr(rule, key) + " " + value)
        return True

    def _apply_replaces(self, item: Item, rule: RuleInfo, keys: list[str]) -> None:
        data = item.data
        for key in keys:
            value = data[key]
            if key == "priority":
                priority = Priority.parse(value) if isinstance(value, str) else None
                if priority is None:
                    self.report(Code.INVALID_PRIORITY, f"invalid priority {value!r}{PRIORITY_CHOICES}", item,
                                "priority")
                    return
                rule.priority = priority
            elif key in ("enabled", "skip-if-unknown-filter"):
                flag = parse_bool(value)
                if flag is None:
                    self.report(Code.BAD_VALUE, f"'{key}' must be a boolean", item, key)
                    return
                setattr(rule, "enabled" if key == "enabled" else "skip_if_unknown_filter", flag)
            elif key == "tags":
                rule.tags = {str(v) for v in value} if isinstance(value, list) else set()
            elif key == "exceptions":
                exceptions = self._exceptions(item, value, new=True)
                if exceptions is not None:
                    rule.exceptions = exceptions
            elif key == "correlation":
                rule.correlation = value
            elif key in ("condition", "output", "desc"):
                if not isinstance(value, str) or not value.strip():
                    self.report(Code.BAD_VALUE, f"'{key}' must be a non-empty string", item, key)
                    return
                setattr(rule, key, value.strip() if key == "output" else value)
                if key == "condition":
                    rule.condition_location = item.where("condition")

    # -- exceptions -----------------------------------------------------------------------
    def _exceptions(self, item: Item, value: Any, new: bool) -> list[ExceptionInfo] | None:
        if value is None:
            return []
        if not isinstance(value, list):
            self.report(Code.BAD_EXCEPTION, "rule exceptions must be a sequence", item, "exceptions")
            return None
        result: list[ExceptionInfo] = []
        for entry in value:
            info = self._exception(item, entry, new)
            if info is None:
                return None
            if any(e.name == info.name for e in result):
                self.report(Code.DUPLICATE_EXCEPTION, f"multiple definitions of exception {info.name!r}", item,
                            "exceptions")
            result.append(info)
        return result

    def _exception(self, item: Item, entry: Any, new: bool) -> ExceptionInfo | None:
        if not isinstance(entry, dict):
            self.report(Code.BAD_EXCEPTION, "rule exception must be a mapping", item, "exceptions")
            return None
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            self.report(Code.BAD_EXCEPTION, "rule exception needs a non-empty 'name'", item, "exceptions")
            return None
        for key in entry:
            if key not in EXCEPTION_KEYS:
                self.report(Code.UNKNOWN_KEY, f"exception {name!r}: unknown key '{key}' is ignored (an exception "
                            "has name, fields, comps and values)" + did_you_mean(str(key), EXCEPTION_KEYS),
                            item, "exceptions")
        values = entry.get("values") or []
        if not isinstance(values, list):
            self.report(Code.BAD_EXCEPTION, f"exception {name!r}: 'values' must be a sequence", item, "exceptions")
            return None
        fields, comps = entry.get("fields"), entry.get("comps")
        where = item.where("exceptions")
        info = ExceptionInfo(name, fields, comps, values, where)
        if new:
            problem = exception_problem(info)
            if problem:
                self.report(Code.BAD_EXCEPTION, f"exception {name!r}: {problem}", item, "exceptions")
                return None
        return info

    def _merge_exceptions(self, item: Item, rule: RuleInfo) -> bool:
        value = item.data.get("exceptions")
        if not isinstance(value, list):
            self.report(Code.BAD_EXCEPTION, "rule exceptions must be a sequence", item, "exceptions")
            return False
        for entry in value:
            info = self._exception(item, entry, new=False)
            if info is None:
                return False
            existing = next((e for e in rule.exceptions if e.name == info.name), None)
            if existing is None:
                problem = exception_problem(info) or (None if info.values else "a new exception needs values")
                if problem:
                    self.report(Code.BAD_EXCEPTION, f"exception {info.name!r}: {problem}", item, "exceptions")
                    return False
                rule.exceptions.append(info)
                continue
            if info.fields is not None or info.comps is not None:
                self.report(Code.BAD_EXCEPTION, "can not append exception fields/comps to existing exception, "
                            "only values", item, "exceptions")
                return False
            if not info.values:
                self.report(Code.EMPTY_EXCEPTION, f"overriding/appending exception {info.name!r} with no values",
                            item, "exceptions")
            existing.values.extend(info.values)
        return True

    def _unknown_keys(self, item: Item, allowed: set[str]) -> None:
        for key in item.data:
            if key not in allowed:
                self.report(Code.UNKNOWN_KEY, f"unknown key '{key}'; the key will be ignored"
                            + did_you_mean(key, allowed), item, key)


EXCEPTION_OPS = {"exists", "<=", "<", ">=", ">", "==", "=", "!=", "glob", "iglob", "contains", "icontains",
                 "bcontains", "startswith", "bstartswith", "endswith", "regex", "intersects", "in", "pmatch"}
_STR_OPS_WITH_MODIFIERS = {"==", "=", "!=", "glob", "iglob", "contains", "icontains", "startswith",
                           "endswith", "regex"}
LIST_COMPS = {"in", "intersects", "pmatch"}


def is_modifier_op(comp: str) -> bool:
    """`startswith oneof` and friends (Falco 0.44)."""
    parts = comp.split()
    return len(parts) == 2 and parts[0] in _STR_OPS_WITH_MODIFIERS and parts[1] in ("oneof", "anyof", "allof")


def exception_problem(info: ExceptionInfo) -> str | None:
    """Falco's validate_exception_info, as a message (None when valid)."""
    fields, comps = info.fields, info.comps
    if fields is None:
        return "exception needs 'fields'"
    if isinstance(fields, list):
        if comps is None:
            info.comps = comps = ["="] * len(fields)
        if not isinstance(comps, list):
            return "fields and comps lists must have equal length"
        if len(comps) != len(fields):
            return "fields and comps lists must have equal length"
        for comp in comps:
            text = str(comp).strip()
            if text not in EXCEPTION_OPS and not is_modifier_op(text):
                return f"{text!r} is not a supported comparison operator"
        return None
    if not isinstance(fields, str):
        return "'fields' must be a string or a sequence"
    if comps is None:
        info.comps = comps = "in"
    if not isinstance(comps, str):
        return "fields and comps must both be strings"
    if comps.strip() not in LIST_COMPS and not is_modifier_op(comps.strip()):
        return "when fields is a single value, comps must be one of (in, pmatch, intersects)"
    return None


def _override_problem(key: str, mode: Any, data: YamlMap) -> str | None:
    if mode not in ("append", "replace"):
        return f"invalid override operation {mode!r} for key '{key}'"
    if key not in data:
        return f"an {mode} override for '{key}' was specified but '{key}' is not defined"
    if mode == "append" and key not in OVERRIDE_APPENDABLE:
        return f"key '{key}' cannot be appended to, use 'replace' instead"
    if key not in OVERRIDE_REPLACEABLE:
        return f"key '{key}' cannot be overridden"
    return None


def _engine_semver(value: Any) -> tuple[int, int, int] | None:
    if isinstance(value, str) and value.strip().isdigit():
        return (0, int(value), 0)
    if isinstance(value, str):
        found = _SEMVER.fullmatch(value.strip())
        if found:
            return (int(found[1]), int(found[2]), int(found[3]))
    return None


def _plugin_choices(requirement: Any) -> list[tuple[str, tuple[int, int, int]]] | None:
    if not isinstance(requirement, dict):
        return None
    entries = [requirement, *(requirement.get("alternatives") or [])]
    choices = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            return None
        version = _SEMVER.fullmatch(str(entry.get("version", "")).strip())
        if version is None:
            return None
        choices.append((entry["name"], (int(version[1]), int(version[2]), int(version[3]))))
    return choices


def _plugin_satisfied(name: str, version: tuple[int, int, int]) -> bool:
    have = EMULATED_PLUGINS.get("k8saudit" if name in _K8SAUDIT_VARIANTS else name)
    return have is not None and (name in _K8SAUDIT_VARIANTS or (have[0] == version[0] and have >= version))
