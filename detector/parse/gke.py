"""A GKE audit `LogEntry` (Cloud Logging, `protoPayload` of type AuditLog, `serviceName`
`k8s.io`) mapped back to the audit.k8s.io/v1 Event the API server wrote.

Only what the entry carries is mapped; docs/clouds.md lists what GKE leaves out (groups,
impersonation, the query string of the request URI, requestReceivedTimestamp, ...). Above all,
the response code comes from `status` (and from a Status object in `response`), never made up,
so rules on 401/403/404 fire; the event time is the entry's `timestamp`, not `receiveTimestamp`.
"""

from __future__ import annotations

from typing import Any

from detector.errors import BadInput

AUDIT_LOG_TYPE = "type.googleapis.com/google.cloud.audit.AuditLog"
K8S_SERVICE = "k8s.io"
# google.rpc.Code -> the HTTP status the API server answered (google.rpc's documented mapping).
RPC_TO_HTTP = {
    1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400,
    12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}
# Subresources whose successful request is a protocol upgrade (kube-apiserver audits 101).
_STREAM_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
# `namespaces/<ns>/<x>` names the namespace's own subresource, not a resource in it (as in
# kube-apiserver's RequestInfoFactory).
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


def is_k8s_audit_entry(entry: dict[str, Any]) -> bool:
    """Whether a LogEntry holds a Kubernetes API audit record."""
    proto = entry.get("protoPayload")
    return (isinstance(proto, dict) and proto.get("@type") == AUDIT_LOG_TYPE
            and proto.get("serviceName") == K8S_SERVICE)


def entry_cluster(entry: dict[str, Any]) -> str | None:
    """`resource.labels.cluster_name` of the entry (the `k8s_cluster` monitored resource)."""
    resource = entry.get("resource")
    labels = resource.get("labels") if isinstance(resource, dict) else None
    name = labels.get("cluster_name") if isinstance(labels, dict) else None
    return name if isinstance(name, str) and name else None


def event_from_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The audit Event of a k8s.io AuditLog entry (BadInput `bad_envelope` if it has none of
    what an event needs: a method, a time, an id)."""
    proto: dict[str, Any] = entry["protoPayload"]
    method = proto.get("methodName")
    stamp = entry.get("timestamp")
    operation = _dict(entry.get("operation"))
    audit_id = operation.get("id") or entry.get("insertId")
    if not isinstance(method, str) or not isinstance(stamp, str) or not isinstance(audit_id, str):
        raise BadInput("bad_envelope", "GKE audit entry without methodName, timestamp or operation.id/insertId")
    verb = method.rsplit(".", 1)[-1]
    ref, uri = _object_ref(proto.get("resourceName"))
    event: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": _level(proto), "auditID": audit_id,
        "stage": "ResponseStarted" if operation.get("first") and not operation.get("last") else "ResponseComplete",
    }
    if uri is not None:
        event["requestURI"] = uri
    event["verb"] = verb
    event["user"] = _user(proto.get("authenticationInfo"))
    meta = _dict(proto.get("requestMetadata"))
    if isinstance(meta.get("callerIp"), str):
        event["sourceIPs"] = [meta["callerIp"]]
    if isinstance(meta.get("callerSuppliedUserAgent"), str):
        event["userAgent"] = meta["callerSuppliedUserAgent"]
    if ref:
        event["objectRef"] = ref
    event["responseStatus"] = _response_status(proto, verb, ref.get("subresource"))
    for key, body in (("requestObject", proto.get("request")), ("responseObject", proto.get("response"))):
        if body is not None:
            event[key] = body
    event["stageTimestamp"] = stamp
    labels = entry.get("labels")
    if isinstance(labels, dict) and labels:
        event["annotations"] = labels  # the audit event's annotations (authorization.k8s.io/decision, ...)
    return event


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _level(proto: dict[str, Any]) -> str:
    if proto.get("response") is not None:
        return "RequestResponse"
    return "Request" if proto.get("request") is not None else "Metadata"


def _user(info: Any) -> dict[str, Any]:
    email = info.get("principalEmail") if isinstance(info, dict) else None
    return {"username": email} if isinstance(email, str) else {}


def _object_ref(name: Any) -> tuple[dict[str, str], str | None]:
    """objectRef and the request path of `resourceName` (`core/v1/namespaces/ns/pods/name/exec`,
    `rbac.authorization.k8s.io/v1/clusterroles/name`); ({}, None) for anything else."""
    if not isinstance(name, str):
        return {}, None
    parts = name.split("/")
    if len(parts) < 3 or not all(parts):
        return {}, None
    group, version, rest = parts[0], parts[1], parts[2:]
    ref: dict[str, str] = {}
    if rest[0] == "namespaces" and len(rest) > 1:
        ref["namespace"] = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    ref["resource"] = rest[0]
    if len(rest) > 1:
        ref["name"] = rest[1]
    if len(rest) > 2:
        ref["subresource"] = "/".join(rest[2:])
    if group != "core":
        ref["apiGroup"] = group
    ref["apiVersion"] = version
    prefix = "/api/v1" if group == "core" else f"/apis/{group}/{version}"
    return {k: ref[k] for k in ("resource", "namespace", "name", "apiGroup", "apiVersion", "subresource")
            if k in ref}, f"{prefix}/{'/'.join(parts[2:])}"


def _response_status(proto: dict[str, Any], verb: str, subresource: str | None) -> dict[str, Any]:
    """The HTTP code: a Status object's own code in `response`, else google.rpc `status` mapped
    (absent or 0 is OK: 101 for an exec/attach/portforward stream, 201 for a create, else 200)."""
    response = proto.get("response")
    if isinstance(response, dict) and type(response.get("code")) is int and (
            response.get("kind") == "Status" or str(response.get("@type", "")).endswith(".Status")):
        return _status(response["code"], response.get("message"))
    status = proto.get("status")
    code = status.get("code", 0) if isinstance(status, dict) else 0
    message = status.get("message") if isinstance(status, dict) else None
    if code == 0:
        if subresource in _STREAM_SUBRESOURCES:
            return _status(101, message)
        return _status(201 if verb == "create" else 200, message)
    return _status(RPC_TO_HTTP.get(code, 500) if type(code) is int else 500, message)


def _status(code: int, message: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"metadata": {}, "code": code}
    if isinstance(message, str) and message:
        status["message"] = message
    return status
