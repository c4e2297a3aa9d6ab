"""`ka.req.pod.{containers,initContainers,ephemeralContainers}.*`: one family per list.

Each field walks `requestObject.spec.<family>[*]` (or the one container named by an index
argument) exactly like Falco's getValuesRecursive, except where upstream is buggy:
`image.repository` keeps registry ports, `eff_run_as_*` read the securityContext, and
`add_capabilities` yields one value per capability.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detector.event import AuditEvent
from detector.parse.extract import MISSING, Value, get_path, image_repository, request_value, texts, walk_values
from detector.parse.fieldspec import ArgKind, Extractor, FieldOptions, FieldSpec

FAMILIES = ("containers", "initContainers", "ephemeralContainers")
Builder = Callable[[Any, FieldOptions], Extractor]


def _family(ev: AuditEvent, family: str, index: int | None) -> list[Any] | None:
    items = request_value(ev, "spec", family)
    if items is MISSING:
        return None
    if type(items) is not list:
        return [items] if index is None else None
    if index is None:
        return items
    return items[index : index + 1] or None


def _walked(family: str, keys: tuple[str, ...], keep_missing: bool) -> Builder:
    """Values at `keys` in each container; `keep_missing` makes one gap absent the field."""

    def build(arg: Any, _opts: FieldOptions) -> Extractor:
        index = None if arg is None else int(arg)

        def extract(ev: AuditEvent) -> Value:
            items = request_value(ev, "spec", family)
            if items is MISSING:
                return None
            values = walk_values(items, keys, index)
            if values is None:
                return None
            if keep_missing:
                return None if any(v is None for v in values) else texts(values)
            return texts([v for v in values if v is not None])

        return extract

    return build


def _repositories(family: str) -> Builder:
    images = _walked(family, ("image",), keep_missing=True)

    def build(arg: Any, opts: FieldOptions) -> Extractor:
        get_images = images(arg, opts)

        def extract(ev: AuditEvent) -> Value:
            values = get_images(ev)
            return None if not isinstance(values, tuple) else tuple(image_repository(v) for v in values)

        return extract

    return build


def _joined(family: str, key: str) -> Builder:
    """`command`/`args`: each container's array joined by one space; a non-array is absent."""

    def build(arg: Any, _opts: FieldOptions) -> Extractor:
        index = None if arg is None else int(arg)

        def extract(ev: AuditEvent) -> Value:
            out = []
            for item in _family(ev, family, index) or ():
                value = item.get(key, MISSING) if type(item) is dict else MISSING
                if value is MISSING:
                    continue
                if type(value) is not list or not all(type(v) is str for v in value):
                    return None
                out.append(" ".join(value))
            return tuple(out) or None

        return extract

    return build


def _effective(family: str, key: str) -> Builder:
    """Container securityContext value, else the pod's, else "0" (root: the image default
    cannot be known from the audit event, so assume the worst)."""

    def build(arg: Any, _opts: FieldOptions) -> Extractor:
        index = None if arg is None else int(arg)

        def extract(ev: AuditEvent) -> Value:
            items = _family(ev, family, index)
            if items is None:
                return None
            pod = request_value(ev, "spec", "securityContext", key)
            out = []
            for item in items:
                value = get_path(item, ("securityContext", key))
                if value is MISSING or value is None:
                    value = pod if pod is not MISSING and pod is not None else "0"
                out.append(value)
            return texts(out)

        return extract

    return build


def _capabilities(family: str) -> Builder:
    def build(arg: Any, _opts: FieldOptions) -> Extractor:
        index = None if arg is None else int(arg)

        def extract(ev: AuditEvent) -> Value:
            out: list[Any] = []
            for item in _family(ev, family, index) or ():
                added = get_path(item, ("securityContext", "capabilities", "add"))
                if type(added) is list:
                    out.extend(added)
            return texts(out)

        return extract

    return build


def _host_ports(family: str) -> Builder:
    def build(arg: Any, _opts: FieldOptions) -> Extractor:
        index = None if arg is None else int(arg)

        def extract(ev: AuditEvent) -> Value:
            out = []
            for item in _family(ev, family, index) or ():
                ports = item.get("ports", MISSING) if type(item) is dict else MISSING
                if ports is MISSING:
                    continue
                if type(ports) is not list:
                    return None
                for port in ports:
                    if type(port) is dict:
                        value = port.get("hostPort", port.get("containerPort"))
                        if value is not None:
                            out.append(value)
            return texts(out)

        return extract

    return build


def _family_specs(family: str) -> list[FieldSpec]:
    label = {"containers": "container", "initContainers": "init container",
             "ephemeralContainers": "ephemeral container"}[family]
    sc = ("securityContext",)
    table: list[tuple[str, str, Builder]] = [
        ("name", f"{label} names", _walked(family, ("name",), keep_missing=True)),
        ("image", f"{label} images", _walked(family, ("image",), keep_missing=True)),
        ("image.repository", f"{label} image repositories (tag and digest removed)", _repositories(family)),
        ("command", f"{label} commands, each joined by spaces", _joined(family, "command")),
        ("args", f"{label} args, each joined by spaces", _joined(family, "args")),
        ("privileged", f"{label} securityContext.privileged values",
         _walked(family, (*sc, "privileged"), keep_missing=False)),
        ("allow_privilege_escalation", f"{label} securityContext.allowPrivilegeEscalation values",
         _walked(family, (*sc, "allowPrivilegeEscalation"), keep_missing=False)),
        ("read_only_fs", f"{label} securityContext.readOnlyRootFilesystem values",
         _walked(family, (*sc, "readOnlyRootFilesystem"), keep_missing=False)),
        ("run_as_user", f"{label} securityContext.runAsUser values",
         _walked(family, (*sc, "runAsUser"), keep_missing=False)),
        ("run_as_group", f"{label} securityContext.runAsGroup values",
         _walked(family, (*sc, "runAsGroup"), keep_missing=False)),
        ("eff_run_as_user", f"effective runAsUser per {label} (container, else pod, else 0)",
         _effective(family, "runAsUser")),
        ("eff_run_as_group", f"effective runAsGroup per {label} (container, else pod, else 0)",
         _effective(family, "runAsGroup")),
        ("proc_mount", f"{label} securityContext.procMount values",
         _walked(family, (*sc, "procMount"), keep_missing=False)),
        ("add_capabilities", f"capabilities added by {label}s, one value per capability",
         _capabilities(family)),
    ]
    if family != "ephemeralContainers":
        table.append(("host_port", f"{label} host ports (hostPort, else containerPort)", _host_ports(family)))
    return [
        FieldSpec(f"ka.req.pod.{family}.{sub}", desc[0].upper() + desc[1:], build, is_list=True,
                  arg=ArgKind.INDEX)
        for sub, desc, build in table
    ]


def container_specs() -> list[FieldSpec]:
    """All fields of the three container families."""
    return [spec for family in FAMILIES for spec in _family_specs(family)]
