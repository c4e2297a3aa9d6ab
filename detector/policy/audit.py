"""The audit.k8s.io/v1 Policy: loading with clear errors, and the API server's matching
(first matching rule wins; see ../shared/k8s/policies.md, from apiserver's checker.go)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.errors import ConfigError, Location
from detector.rules.yamlload import MAX_CONFIG_FILE_BYTES, YamlError, load_typed, read_capped

STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")


class Level(enum.IntEnum):
    """Audit levels in increasing detail."""

    NONE = 0
    METADATA = 1
    REQUEST = 2
    REQUEST_RESPONSE = 3

    @classmethod
    def parse(cls, text: Any) -> Level | None:
        return {"None": cls.NONE, "Metadata": cls.METADATA, "Request": cls.REQUEST,
                "RequestResponse": cls.REQUEST_RESPONSE}.get(text) if isinstance(text, str) else None

    @property
    def label(self) -> str:
        return ("None", "Metadata", "Request", "RequestResponse")[self]


@dataclass(frozen=True, slots=True)
class GroupResources:
    group: str
    resources: tuple[str, ...]
    resource_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PolicyRule:
    number: int  # 1-based, as users count rules
    level: Level
    users: tuple[str, ...]
    user_groups: tuple[str, ...]
    verbs: tuple[str, ...]
    resources: tuple[GroupResources, ...]
    namespaces: tuple[str, ...] | None
    non_resource_urls: tuple[str, ...]
    omit_stages: frozenset[str]


@dataclass(frozen=True, slots=True)
class Request:
    """The attributes of a request the policy looks at."""

    user: str
    groups: tuple[str, ...]
    verb: str
    group: str | None = None  # API group; None for a non-resource URL
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    level: Level
    omit_stages: frozenset[str]
    rule: int | None  # the matching rule's number; None when no rule matched (level None)


@dataclass(frozen=True, slots=True)
class AuditPolicy:
    path: str
    rules: tuple[PolicyRule, ...]

    def decide(self, request: Request) -> Decision:
        for rule in self.rules:
            if _matches(rule, request):
                return Decision(rule.level, rule.omit_stages, rule.number)
        return Decision(Level.NONE, frozenset(), None)


def load_policy(path: str) -> AuditPolicy:
    """Read and validate a Policy file; problems are ConfigErrors naming the file and rule."""
    try:
        data = load_typed(read_capped(Path(path), MAX_CONFIG_FILE_BYTES, "the audit policy"), path)
    except OSError as exc:
        raise ConfigError(f"cannot read audit policy: {exc.strerror or exc}", Location(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read audit policy: {_not_text(path, exc)}", Location(path)) from None
    except YamlError as exc:
        raise ConfigError(exc.message, exc.location) from None
    if not isinstance(data, dict) or data.get("kind") != "Policy":
        raise ConfigError("not an audit Policy (kind: Policy)", Location(path))
    if data.get("apiVersion") not in ("audit.k8s.io/v1", "audit.k8s.io/v1beta1", "audit.k8s.io/v1alpha1"):
        raise ConfigError(f"unsupported apiVersion {data.get('apiVersion')!r}", Location(path))
    global_omit = _stages(data.get("omitStages"), Location(path, item="omitStages"))
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigError("a Policy needs at least one rule", Location(path))
    return AuditPolicy(path, tuple(_rule(r, n, global_omit, path) for n, r in enumerate(raw_rules, start=1)))


def _not_text(path: str, exc: UnicodeDecodeError) -> str:
    """Why a policy file is not UTF-8 text, with the usual cause (a compressed copy) named."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(2)
    except OSError:
        magic = b""
    if magic == b"\x1f\x8b":
        return "it is gzip-compressed (the API server reads the policy as YAML text: decompress it first)"
    return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"


def _rule(raw: Any, number: int, global_omit: frozenset[str], path: str) -> PolicyRule:
    where = Location(path, item=f"rule {number}")
    if not isinstance(raw, dict):
        raise ConfigError("a rule must be a mapping", where)
    level = Level.parse(raw.get("level"))
    if level is None:
        raise ConfigError(f"level must be None, Metadata, Request or RequestResponse (got {raw.get('level')!r})",
                          where)
    resources = tuple(_group_resources(g, where) for g in _list(raw.get("resources"), "resources", where))
    namespaces = raw.get("namespaces")
    return PolicyRule(
        number=number, level=level,
        users=_strings(raw.get("users"), "users", where),
        user_groups=_strings(raw.get("userGroups"), "userGroups", where),
        verbs=_strings(raw.get("verbs"), "verbs", where),
        resources=resources,
        namespaces=None if namespaces is None else _strings(namespaces, "namespaces", where),
        non_resource_urls=_strings(raw.get("nonResourceURLs"), "nonResourceURLs", where),
        omit_stages=global_omit | _stages(raw.get("omitStages"), where),
    )


def _group_resources(raw: Any, where: Location) -> GroupResources:
    if not isinstance(raw, dict):
        raise ConfigError("each resources entry must be a mapping", where)
    return GroupResources(str(raw.get("group") or ""), _strings(raw.get("resources"), "resources", where),
                          _strings(raw.get("resourceNames"), "resourceNames", where))


def _list(value: Any, key: str, where: Location) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list", where)
    return value


def _strings(value: Any, key: str, where: Location) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in _list(value, key, where))


def _stages(value: Any, where: Location) -> frozenset[str]:
    stages = _strings(value, "omitStages", where)
    for stage in stages:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r} in omitStages", where)
    return frozenset(stages)


def _matches(rule: PolicyRule, request: Request) -> bool:
    if rule.users and request.user not in rule.users:
        return False
    if rule.user_groups and not set(rule.user_groups) & set(request.groups):
        return False
    if rule.verbs and request.verb not in rule.verbs:
        return False
    if rule.namespaces is not None or rule.resources:
        return request.group is not None and _resource_matches(rule, request)
    if rule.non_resource_urls:
        return request.group is None and any(_url_matches(spec, request.path) for spec in rule.non_resource_urls)
    return True


def _resource_matches(rule: PolicyRule, request: Request) -> bool:
    if rule.namespaces is not None and request.namespace not in rule.namespaces:
        return False
    if not rule.resources:
        return True
    full = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    for entry in rule.resources:
        if entry.group not in (request.group, "*"):
            continue
        if not entry.resources:
            return True
        if entry.resource_names and request.name not in entry.resource_names:
            continue
        for spec in entry.resources:
            if spec in (full, "*") or spec == f"{request.resource}/*" or (
                    spec.startswith("*/") and request.subresource and spec[2:] == request.subresource):
                return True
    return False


def _url_matches(spec: str, path: str) -> bool:
    if spec in ("*", path):
        return True
    return spec.endswith("*") and path.startswith(spec[:-1])
