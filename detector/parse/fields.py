"""The field table: every field a condition or output may name, and how it is extracted.

Names and semantics follow Falco's k8saudit (0.18.0) and json plugins; where upstream is
buggy we implement the documented intent (see docs/falco-compatibility.md). Extensions are
marked "detector:" in their descriptions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import jmespath
import jmespath.exceptions
import msgspec
import orjson

from detector.errors import ConditionSyntaxError
from detector.event import AuditEvent, decode_bounded
from detector.parse import containers
from detector.parse.extract import (
    MISSING,
    Value,
    as_text,
    clamped_nanos,
    epoch_nanos,
    epoch_seconds,
    exec_command,
    get_path,
    image_repository,
    json_pointer,
    query_values,
    request_value,
    text_map,
    texts,
    walk_values,
)
from detector.parse.fieldspec import (
    ArgKind,
    Extractor,
    FieldOptions,
    FieldSpec,
    FieldType,
    attribute,
    const,
    with_presence,
)


def _annotation(key: str) -> Extractor:
    def extract(ev: AuditEvent) -> Value:
        values = ev.annotation_values
        if values is None:
            values = ev.annotation_values = annotation_values(ev.annotations)
        return values.get(key)

    return extract


def _cluster_name(ev: AuditEvent) -> Value:
    """The cluster the envelope named, else Falco's `cluster_name` annotation."""
    return ev.cluster if ev.cluster is not None else _cluster_annotation(ev)


_cluster_annotation = _annotation("cluster_name")


def annotation_values(raw: msgspec.Raw) -> dict[str, str]:
    """The event's annotations as text (Falco's rule for other JSON values); {} if not an object."""
    return text_map(orjson.loads(bytes(raw))) if raw else {}


def _ref(attr: str) -> Extractor:
    getter: Extractor = attribute(f"objectRef.{attr}")
    return getter


_user_name: Extractor = attribute("user.username")


def _groups(raw: msgspec.Raw) -> Value:
    """A users' groups (kept as JSON by the decoder): any JSON value of an item as its text."""
    if not raw:
        return None
    value = decode_bounded(msgspec.json.decode, raw)
    return texts(value) if isinstance(value, list) else None


def _user_groups(ev: AuditEvent) -> Value:
    return _groups(ev.user.groups)


def _impuser_name(ev: AuditEvent) -> Value:
    user = ev.impersonatedUser
    return None if user is None else user.username


def _impuser_groups(ev: AuditEvent) -> Value:
    user = ev.impersonatedUser
    return None if user is None else _groups(user.groups)


def _response_code(ev: AuditEvent) -> Value:
    status = ev.responseStatus
    return None if status is None or status.code is None else str(status.code)


def _response_reason(ev: AuditEvent) -> Value:
    status = ev.responseStatus
    return None if status is None else status.reason


def _request(*keys: str) -> Extractor:
    def extract(ev: AuditEvent) -> Value:
        value = request_value(ev, *keys)
        return None if value is MISSING else as_text(value)

    return extract


def _request_list(*keys: str) -> Extractor:
    def extract(ev: AuditEvent) -> Value:
        value = request_value(ev, *keys)
        return texts(value) if type(value) is list else None

    return extract


def _response_name(ev: AuditEvent) -> Value:
    if ev.parsed_body is None and b'"responseObject"' not in ev.line():
        return None
    value = get_path(ev.body(), ("responseObject", "metadata", "name"))
    return None if value is MISSING else as_text(value)


def _target_pod_name(ev: AuditEvent) -> Value:
    ref = ev.objectRef
    if ref.resource != "pods" or ref.subresource:
        return None
    return _response_name(ev)


def _uri_param(arg: Any, _opts: FieldOptions) -> Extractor:
    def extract(ev: AuditEvent) -> Value:
        values = query_values(ev.requestURI, arg)
        return values[0] if values else None

    return extract


def _exec_command(ev: AuditEvent) -> Value:
    return exec_command(ev)  # masked once per event, shared with the alert's redaction


def _subjects(ev: AuditEvent) -> list[Any] | None:
    value = request_value(ev, "subjects")
    return value if type(value) is list else None


def _subject_names(kind: str, with_namespace: bool = False) -> Extractor:
    def extract(ev: AuditEvent) -> Value:
        names = []
        for subject in _subjects(ev) or ():
            if type(subject) is not dict or subject.get("kind") != kind or "name" not in subject:
                continue
            if with_namespace:
                if "namespace" not in subject:
                    continue
                names.append(f"{as_text(subject['namespace'])}:{as_text(subject['name'])}")
            else:
                names.append(as_text(subject["name"]))
        return tuple(names) if names else None

    return extract


def _all_subjects(ev: AuditEvent) -> Value:
    subjects = _subjects(ev)
    return texts(subjects) if subjects else None


def _first_container(ev: AuditEvent) -> dict[str, Any] | None:
    items = request_value(ev, "spec", "containers")
    if type(items) is list and items and type(items[0]) is dict:
        return items[0]
    return None


def _container_image(ev: AuditEvent) -> Value:
    container = _first_container(ev)
    image = None if container is None else container.get("image")
    return None if image is None else as_text(image)


def _container_repository(ev: AuditEvent) -> Value:
    image = _container_image(ev)
    return None if not isinstance(image, str) else image_repository(image)


def _container_privileged(ev: AuditEvent) -> Value:
    items = request_value(ev, "spec", "containers")
    if type(items) is not list:
        return None
    for item in items:
        if get_path(item, ("securityContext", "privileged")) is True:
            return "true"
    return "false"


def _volume_hostpath(arg: Any, _opts: FieldOptions) -> Extractor:
    prefix = arg[:-1] if arg.endswith("*") else None

    def extract(ev: AuditEvent) -> Value:
        volumes = request_value(ev, "spec", "volumes")
        if type(volumes) is not list:
            return None
        for volume in volumes:
            path = get_path(volume, ("hostPath", "path"))
            if type(path) is str and (path == arg or (prefix is not None and path.startswith(prefix))):
                return "true"
        return "false"

    return extract


def _index(arg: Any) -> int | None:
    return None if arg is None else int(arg)


def _volumes(*keys: str) -> Callable[[Any, FieldOptions], Extractor]:
    def build(arg: Any, _opts: FieldOptions) -> Extractor:
        index = _index(arg)

        def extract(ev: AuditEvent) -> Value:
            volumes = request_value(ev, "spec", "volumes")
            if volumes is MISSING:
                return None
            values = walk_values(volumes, keys, index)
            return None if values is None else texts([v for v in values if v is not None])

        return extract

    return build


def _volume_types(arg: Any, _opts: FieldOptions) -> Extractor:
    index = _index(arg)

    def extract(ev: AuditEvent) -> Value:
        volumes = request_value(ev, "spec", "volumes")
        if type(volumes) is not list:
            return None
        if index is not None:
            volumes = volumes[index : index + 1]
        return texts([k for v in volumes if type(v) is dict for k in v if k != "name"])

    return extract


def _role_rules(key: str) -> Callable[[Any, FieldOptions], Extractor]:
    def build(arg: Any, _opts: FieldOptions) -> Extractor:
        index = _index(arg)

        def extract(ev: AuditEvent) -> Value:
            rules = request_value(ev, "rules")
            if type(rules) is not list:
                return None
            if index is not None:
                rules = rules[index : index + 1]
            values = [v for r in rules if type(r) is dict and type(r.get(key)) is list
                      for v in r[key]]
            return texts(values)

        return extract

    return build


def _role_rules_all(ev: AuditEvent) -> Value:
    rules = request_value(ev, "rules")
    return texts(rules) if type(rules) is list else None


def _service_ports(arg: Any, _opts: FieldOptions) -> Extractor:
    index = _index(arg)

    def extract(ev: AuditEvent) -> Value:
        ports = request_value(ev, "spec", "ports")
        if type(ports) is not list:
            return None
        if index is not None:
            ports = ports[index : index + 1]
        return texts(ports)

    return extract


def _source_ips(arg: Any, _opts: FieldOptions) -> Extractor:
    index = _index(arg)

    def extract(ev: AuditEvent) -> Value:
        ips = ev.sourceIPs
        if not ips:
            return None
        if index is not None:
            return (ips[index],) if index < len(ips) else None
        return tuple(ips)

    return extract


def _source_ip_at(position: int) -> Extractor:
    def extract(ev: AuditEvent) -> Value:
        ips = ev.sourceIPs
        return ips[position] if ips else None

    return extract


def _last_source_ip(ev: AuditEvent) -> Value:
    ips = ev.sourceIPs
    return ips[-1] if ips else None


def _client_ip(arg: Any, opts: FieldOptions) -> Extractor:
    hops = opts.trusted_proxies if arg is None else int(arg)
    if hops == 0:
        return _last_source_ip  # the usual setting; runs on every event in the shipped rules

    def extract(ev: AuditEvent) -> Value:
        ips = ev.sourceIPs
        if not ips:
            return None
        # Each trusted proxy appended one address; the client is the one before them, and
        # never beyond the first (which the client itself may have forged).
        return ips[max(len(ips) - 1 - hops, 0)]

    return extract


_POINTER_FAST: dict[str, Extractor] = {
    "/stage": attribute("stage"),
    "/verb": attribute("verb"),
    "/auditID": attribute("auditID"),
    "/requestURI": attribute("requestURI"),
    "/level": attribute("level"),
    "/userAgent": attribute("userAgent"),
    "/user/username": _user_name,
    "/objectRef/resource": _ref("resource"),
    "/objectRef/namespace": _ref("namespace"),
    "/objectRef/name": _ref("name"),
    "/objectRef/subresource": _ref("subresource"),
}
_ANNOTATION_POINTER = re.compile(r"/annotations/([^/]*)")


def _json_value(arg: Any, _opts: FieldOptions) -> Extractor:
    fast = _POINTER_FAST.get(arg)
    if fast is not None:
        return fast
    match = _ANNOTATION_POINTER.fullmatch(arg)
    if match:
        return _annotation(match.group(1).replace("~1", "/").replace("~0", "~"))

    def extract(ev: AuditEvent) -> Value:
        value = json_pointer(ev.body(), arg)
        return None if value is MISSING else as_text(value)

    return extract


def _json_obj(ev: AuditEvent) -> Value:
    return orjson.dumps(ev.body(), option=orjson.OPT_INDENT_2).decode()


# The last event's text and nanoseconds. Falco's `jevt.rawtime=0` sits in many of its rules, so
# one event asks several times. Compared by identity: the memo holds the text alive, so no
# other event's text can be that object. One tuple, replaced whole: safe from any thread.
_last_rawtime: tuple[str | None, str] = (None, "")


def _rawtime(ev: AuditEvent) -> Value:
    global _last_rawtime  # noqa: PLW0603 - a one-entry memo (above)
    ts, parsed = ev.stageTimestamp, ev.time
    if ts is None or parsed is None:
        return None
    last = _last_rawtime
    if last[0] is ts:
        return last[1]
    value = _spell_rawtime(ts, parsed)
    _last_rawtime = (ts, value)
    return value


def _spell_rawtime(ts: str, parsed: datetime) -> str:
    # Evaluated on every event by rules such as Falco's `jevt.rawtime exists`: the API server's
    # own form `...:SS.ffffffZ` is spelled out without big-integer arithmetic.
    if len(ts) == 27 and ts[26] == "Z" and ts[19] == ".":
        seconds = epoch_seconds(ts[:19], parsed)
        if seconds > 0:
            return f"{seconds}{ts[20:26]}000"
    return str(epoch_nanos(ts, parsed))


def _has_rawtime(ev: AuditEvent) -> Value:
    """Not None exactly when `_rawtime` is not: Falco's rules test `jevt.rawtime exists` on
    every event, and this answers it without spelling out the nanoseconds."""
    return ev.stageTimestamp if ev.time is not None else None


with_presence(_rawtime, _has_rawtime)


def _compile_jmespath(arg: Any) -> Any:
    try:
        return jmespath.compile(arg)
    except jmespath.exceptions.JMESPathError as exc:
        raise ConditionSyntaxError(f"invalid JMESPath expression {arg!r}: {exc}") from None


def _search(expression: Any, ev: AuditEvent) -> Any:
    """Evaluate a compiled JMESPath expression; a runtime type error (e.g. a function applied to
    null in this event) makes the field absent, like any other extraction error in Falco."""
    try:
        return expression.search(ev.body())
    except jmespath.exceptions.JMESPathError:
        return None


def _jmes_value(arg: Any, _opts: FieldOptions) -> Extractor:
    expression = _compile_jmespath(arg)

    def extract(ev: AuditEvent) -> Value:
        result = _search(expression, ev)
        if result is None or result == []:
            return None
        return as_text(result)

    return extract


def _jmes_values(arg: Any, _opts: FieldOptions) -> Extractor:
    expression = _compile_jmespath(arg)

    def extract(ev: AuditEvent) -> Value:
        result = _search(expression, ev)
        if result is None:
            return None
        items = result if type(result) is list else [result]
        return texts([item for item in items if item is not None])

    return extract


def _time_iso(ev: AuditEvent) -> Value:
    if ev.time is None or ev.stageTimestamp is None:
        return None
    seconds, nanos = divmod(clamped_nanos(ev.stageTimestamp, ev.time), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


# The local-time fields format the clamped nanoseconds, as the alert's own time does: a stage
# time in year 0001 or 9999 with a zone offset has no datetime in UTC or the local zone.
def _time_local(ev: AuditEvent) -> Value:
    if ev.time is None or ev.stageTimestamp is None:
        return None
    seconds, nanos = divmod(clamped_nanos(ev.stageTimestamp, ev.time), 1_000_000_000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{nanos:09d}"


def _datetime_local(ev: AuditEvent) -> Value:
    if ev.time is None or ev.stageTimestamp is None:
        return None
    seconds, nanos = divmod(clamped_nanos(ev.stageTimestamp, ev.time), 1_000_000_000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{nanos:09d}"


def _hostname(_ev: AuditEvent) -> Value:
    import socket  # noqa: PLC0415 - only outputs that print it pay for it

    return socket.gethostname()


def _specs() -> list[FieldSpec]:
    s = FieldSpec
    key, index = ArgKind.KEY, ArgKind.INDEX
    return [
        s("ka.auditid", "The audit ID (auditID)", const(attribute("auditID"))),
        s("ka.stage", "Stage of the request (RequestReceived, ResponseStarted, ResponseComplete, Panic)",
          const(attribute("stage")), index_key="stage"),
        s("ka.level", "detector: audit level of the event (Metadata, Request, RequestResponse)",
          const(attribute("level"))),
        s("ka.auth.decision", "Authorization decision (annotation authorization.k8s.io/decision)",
          const(_annotation("authorization.k8s.io/decision"))),
        s("ka.auth.reason", "Authorization reason (annotation authorization.k8s.io/reason)",
          const(_annotation("authorization.k8s.io/reason"))),
        s("ka.auth.openshift.decision", "OpenShift authentication decision annotation",
          const(_annotation("authentication.openshift.io/decision"))),
        s("ka.auth.openshift.username", "OpenShift authentication username annotation",
          const(_annotation("authentication.openshift.io/username"))),
        s("ka.validations.admission.policy.failure", "ValidatingAdmissionPolicy failure annotation",
          const(_annotation("validation.policy.admission.k8s.io/validation_failure"))),
        s("ka.security.pod.violations", "Pod Security audit violations annotation",
          const(_annotation("pod-security.kubernetes.io/audit-violations"))),
        s("ka.user.name", "Authenticated user name (user.username)", const(_user_name)),
        s("ka.user.groups", "Groups of the authenticated user", const(_user_groups), is_list=True),
        s("ka.impuser.name", "Impersonated user name", const(_impuser_name)),
        s("ka.impuser.groups", "detector: groups of the impersonated user", const(_impuser_groups),
          is_list=True),
        s("ka.verb", "The action (get, list, create, ...)", const(attribute("verb")), index_key="verb"),
        s("ka.uri", "The request URI as sent", const(attribute("requestURI"))),
        s("ka.uri.param", "First value of a query parameter of the request URI, decoded",
          _uri_param, arg=key),
        s("ka.exec.command", "detector: full exec/attach command (every command= parameter, "
          "joined by spaces) with credentials masked", const(_exec_command)),
        s("ka.target.name", "Target object name (objectRef.name)", const(_ref("name"))),
        s("ka.target.namespace", "Target object namespace", const(_ref("namespace"))),
        s("ka.target.resource", "Target object resource", const(_ref("resource")),
          index_key="resource"),
        s("ka.target.subresource", "Target object subresource", const(_ref("subresource")),
          index_key="subresource"),
        s("ka.target.apigroup", "detector: target API group (objectRef.apiGroup)",
          const(_ref("apiGroup"))),
        s("ka.target.pod.name", "Pod name from the response, for requests on pods without subresource",
          const(_target_pod_name)),
        s("ka.req.binding.subjects", "Subjects of a role binding, each as JSON", const(_all_subjects),
          is_list=True),
        s("ka.req.binding.subjects.user_names", "User subject names of a binding",
          const(_subject_names("User")), is_list=True),
        s("ka.req.binding.subjects.serviceaccount_names", "ServiceAccount subject names of a binding",
          const(_subject_names("ServiceAccount")), is_list=True),
        s("ka.req.binding.subjects.serviceaccount_ns_names",
          "ServiceAccount subjects of a binding as namespace:name",
          const(_subject_names("ServiceAccount", with_namespace=True)), is_list=True),
        s("ka.req.binding.subjects.group_names", "Group subject names of a binding",
          const(_subject_names("Group")), is_list=True),
        s("ka.req.binding.role", "Role a binding refers to (roleRef.name)",
          const(_request("roleRef", "name"))),
        s("ka.req.binding.subject.has_name", "Deprecated; always true", lambda _a, _o: lambda _ev: "true",
          arg=key),
        s("ka.req.configmap.name", "ConfigMap name (objectRef.name)", const(_ref("name"))),
        s("ka.req.configmap.obj", "ConfigMap data as JSON", const(_request("data"))),
        s("ka.req.container.image", "Deprecated: image of the first container",
          const(_container_image)),
        s("ka.req.container.image.repository", "Deprecated: repository of the first container image",
          const(_container_repository)),
        s("ka.req.container.privileged", "Deprecated: true if any container is privileged",
          const(_container_privileged)),
        s("ka.req.container.host_network", "Deprecated alias of ka.req.pod.host_network",
          const(_request("spec", "hostNetwork"))),
        s("ka.req.pod.host_ipc", "hostIPC of the pod spec", const(_request("spec", "hostIPC"))),
        s("ka.req.pod.host_network", "hostNetwork of the pod spec", const(_request("spec", "hostNetwork"))),
        s("ka.req.pod.host_pid", "hostPID of the pod spec", const(_request("spec", "hostPID"))),
        s("ka.req.pod.run_as_user", "Pod securityContext.runAsUser",
          const(_request("spec", "securityContext", "runAsUser"))),
        s("ka.req.pod.run_as_group", "Pod securityContext.runAsGroup",
          const(_request("spec", "securityContext", "runAsGroup"))),
        s("ka.req.pod.fs_group", "Pod securityContext.fsGroup",
          const(_request("spec", "securityContext", "fsGroup"))),
        s("ka.req.pod.supplemental_groups", "Pod securityContext.supplementalGroups",
          const(_request_list("spec", "securityContext", "supplementalGroups")), is_list=True),
        s("ka.req.role.rules", "Rules of a role, each as JSON", const(_role_rules_all), is_list=True),
        s("ka.req.role.rules.apiGroups", "API groups of the role rules", _role_rules("apiGroups"),
          is_list=True, arg=index),
        s("ka.req.role.rules.nonResourceURLs", "Non-resource URLs of the role rules",
          _role_rules("nonResourceURLs"), is_list=True, arg=index),
        s("ka.req.role.rules.verbs", "Verbs of the role rules", _role_rules("verbs"), is_list=True, arg=index),
        s("ka.req.role.rules.resources", "Resources of the role rules", _role_rules("resources"),
          is_list=True, arg=index),
        s("ka.req.service.type", "Service type", const(_request("spec", "type"))),
        s("ka.req.service.ports", "Service ports, each as JSON (upstream returns one JSON array)",
          _service_ports, is_list=True, arg=index),
        s("ka.req.pod.volumes.hostpath", "hostPath paths of the pod volumes", _volumes("hostPath", "path"),
          is_list=True, arg=index),
        s("ka.req.volume.hostpath", "Deprecated: true if a volume mounts the given host path (trailing * = prefix)",
          _volume_hostpath, arg=key),
        s("ka.req.pod.volumes.flexvolume_driver", "flexVolume drivers of the pod volumes",
          _volumes("flexVolume", "driver"), is_list=True, arg=index),
        s("ka.req.pod.volumes.volume_type", "Volume types of the pod volumes", _volume_types,
          is_list=True, arg=index),
        s("ka.resp.name", "Response object name", const(_response_name)),
        s("ka.response.code", "Response status code", const(_response_code)),
        s("ka.response.reason", "Response status reason", const(_response_reason)),
        s("ka.useragent", "User agent of the client", const(attribute("userAgent"))),
        s("ka.sourceips", "Source IPs of the request (upstream reads a wrong path and is always absent)",
          _source_ips, is_list=True, arg=index, type=FieldType.IPADDR),
        s("ka.sourceip.first", "detector: first source IP (from X-Forwarded-For when a proxy or the "
          "client set it: can be forged)", const(_source_ip_at(0)), type=FieldType.IPADDR),
        s("ka.sourceip.last", "detector: last source IP: the TCP peer the API server saw",
          const(_source_ip_at(-1)), type=FieldType.IPADDR),
        s("ka.client.ip", "detector: client address: the last source IP, skipping [N] trusted proxies "
          "(default: the trusted_proxies setting)", _client_ip, arg=index, type=FieldType.IPADDR),
        s("ka.cluster.name", "Cluster name: from the event's envelope (EKS log group, GKE resource labels, AKS "
          "resourceId, webhook path), else the annotation cluster_name (detector: the envelope)",
          const(_cluster_name)),
        *containers.container_specs(),
        *_json_specs(),
        s("jmes.value", "detector: JMESPath expression over the whole event; strings as text, "
          "other values as JSON; null or [] is absent", _jmes_value, arg=key),
        s("jmes.values", "detector: JMESPath expression over the whole event as a list field "
          "(one value per element of an array result)", _jmes_values, arg=key, is_list=True),
        s("evt.time", "Event time (stageTimestamp) as HH:MM:SS.nnnnnnnnn, local time", const(_time_local)),
        s("evt.time.iso8601", "Event time as ISO 8601 UTC", const(_time_iso)),
        s("evt.datetime", "Event date and time, local", const(_datetime_local)),
        s("evt.rawtime", "Event time in nanoseconds since the epoch", const(_rawtime)),
        s("evt.hostname", "Host name of the machine running detector", const(_hostname)),
        s("evt.source", "Event source (k8s_audit)", const(lambda _ev: "k8s_audit")),
        s("evt.pluginname", "Name of the source plugin (k8saudit)", const(lambda _ev: "k8saudit")),
        s("evt.plugininfo", "The raw event JSON", const(lambda ev: ev.line().decode(errors="replace"))),
    ]


def _json_specs() -> list[FieldSpec]:
    specs = []
    for prefix in ("json", "jevt"):
        specs += [
            FieldSpec(f"{prefix}.value", "JSON pointer (RFC 6901) into the event", _json_value, arg=ArgKind.KEY),
            FieldSpec(f"{prefix}.obj", "The whole event as indented JSON", const(_json_obj)),
            FieldSpec(f"{prefix}.rawtime", "Event time in nanoseconds since the epoch", const(_rawtime)),
        ]
    return specs


# Fields that read only the eagerly decoded part of the event.
_CHEAP = {
    "ka.auditid", "ka.stage", "ka.level", "ka.auth.decision", "ka.auth.reason", "ka.auth.openshift.decision",
    "ka.auth.openshift.username", "ka.validations.admission.policy.failure", "ka.security.pod.violations",
    "ka.user.name", "ka.impuser.name", "ka.verb", "ka.uri",
    "ka.target.name", "ka.target.namespace", "ka.target.resource", "ka.target.subresource", "ka.target.apigroup",
    "ka.req.configmap.name", "ka.response.code", "ka.response.reason", "ka.useragent", "ka.sourceips",
    "ka.sourceip.first", "ka.sourceip.last", "ka.client.ip", "ka.cluster.name", "json.rawtime", "jevt.rawtime",
    "evt.rawtime", "evt.source", "evt.pluginname",
}
FIELDS: dict[str, FieldSpec] = {
    spec.name: replace(spec, cheap=spec.name in _CHEAP) for spec in _specs()
}

# Fast paths the rule index can key on, whatever spelling a rule uses.
INDEX_ALIASES: dict[tuple[str, str | None], str] = {
    ("jevt.value", "/stage"): "stage",
    ("json.value", "/stage"): "stage",
    ("jevt.value", "/verb"): "verb",
    ("json.value", "/verb"): "verb",
    ("jevt.value", "/objectRef/resource"): "resource",
    ("json.value", "/objectRef/resource"): "resource",
    ("jevt.value", "/objectRef/subresource"): "subresource",
    ("json.value", "/objectRef/subresource"): "subresource",
}


def index_key(name: str, arg: str | None) -> str | None:
    """The index key a field (with its argument) stands for, if any."""
    spec = FIELDS.get(name)
    if spec is not None and spec.index_key is not None:
        return spec.index_key
    return INDEX_ALIASES.get((name, arg))
