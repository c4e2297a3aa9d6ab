"""The requests `detector policy-check` asks the policy about, and whether a rule could match them.

A policy may log only some users, groups or namespaces, so asking about one made-up user is
not enough: the identities sampled are an ordinary person, a service account, every user the
policy names, a member of every group it names, and the users and groups the rule names. A
rule's condition is then evaluated on each request's identity, verb, resource and namespace
(everything else unknown, three-valued), so that only requests the rule could match count.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from detector.errors import DetectorError
from detector.event import AuditEvent
from detector.parse.audit import event_from_dict
from detector.policy.audit import AuditPolicy, Request
from detector.rules.ast import And, Check, FieldRef, Node, Not, Or
from detector.rules.compiler import CompileError, Compiler
from detector.rules.model import Predicate

# resource -> (API groups, namespaced): enough to ask the policy about the requests rules name.
KNOWN_RESOURCES: dict[str, tuple[tuple[str, ...], bool]] = {
    **{r: (("",), True) for r in ("pods", "configmaps", "secrets", "services", "serviceaccounts", "endpoints",
                                  "persistentvolumeclaims", "replicationcontrollers", "limitranges",
                                  "resourcequotas", "podtemplates")},
    # Events are served by two APIs: core v1 and events.k8s.io (kubectl events, newer clients).
    "events": (("", "events.k8s.io"), True),
    **{r: (("",), False) for r in ("namespaces", "nodes", "persistentvolumes", "componentstatuses")},
    **{r: (("apps",), True) for r in ("deployments", "daemonsets", "statefulsets", "replicasets",
                                      "controllerrevisions")},
    **{r: (("batch",), True) for r in ("jobs", "cronjobs")},
    **{r: (("rbac.authorization.k8s.io",), True) for r in ("roles", "rolebindings")},
    **{r: (("rbac.authorization.k8s.io",), False) for r in ("clusterroles", "clusterrolebindings")},
    **{r: (("admissionregistration.k8s.io",), False) for r in (
        "mutatingwebhookconfigurations", "validatingwebhookconfigurations", "validatingadmissionpolicies",
        "validatingadmissionpolicybindings", "mutatingadmissionpolicies", "mutatingadmissionpolicybindings")},
    "certificatesigningrequests": (("certificates.k8s.io",), False),
    "leases": (("coordination.k8s.io",), True),
    "ingresses": (("networking.k8s.io",), True),
    "networkpolicies": (("networking.k8s.io",), True),
    "customresourcedefinitions": (("apiextensions.k8s.io",), False),
    "tokenreviews": (("authentication.k8s.io",), False),
    "subjectaccessreviews": (("authorization.k8s.io",), False),
}
SAMPLE_VERBS = ("create", "update", "patch", "delete", "get", "list", "watch")
SAMPLE_USER = "someone@example.com"
SAMPLE_SERVICE_ACCOUNT = "system:serviceaccount:default:app"
AUTHENTICATED = "system:authenticated"
# Fields whose value a sampled request fixes; a check on any other field is unknown.
_CONCRETE = frozenset(("ka.user.name", "ka.user.groups", "ka.verb", "ka.target.resource", "ka.target.subresource",
                       "ka.target.namespace", "ka.target.apigroup"))
_CONCRETE_POINTERS = frozenset(("/user/username", "/user/groups", "/verb", "/objectRef/resource",
                                "/objectRef/subresource", "/objectRef/namespace", "/objectRef/apiGroup"))


@dataclass(frozen=True, slots=True)
class Identity:
    """A user as the API server's policy sees it: name and groups."""

    user: str
    groups: tuple[str, ...]
    label: str  # how reasons name it ("alice", "a member of developers")
    # Anyone (a sample person or service account, or a user the rule names), as opposed to a
    # user or group the policy singles out: those often have noise (kube-proxy's watches)
    # dropped, which makes a rule partial only when nothing of theirs is seen at all.
    generic: bool = False


def identity_of(user: str) -> Identity:
    """A user with the groups the API server gives such a name."""
    if user == "system:anonymous":
        return Identity(user, ("system:unauthenticated",), user)
    if user.startswith("system:serviceaccount:"):
        namespace = user.split(":")[2] if user.count(":") >= 3 else ""
        groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED)
        return Identity(user, groups if namespace else (groups[0], AUTHENTICATED), user)
    if user.startswith("system:node:"):
        return Identity(user, ("system:nodes", AUTHENTICATED), user)
    return Identity(user, (AUTHENTICATED,), user)


def member_of(group: str) -> Identity:
    """A sample user in `group`, named as such users are (service accounts, nodes, anonymous)."""
    label = f"a member of {group}"
    if group == "system:unauthenticated":
        return Identity("system:anonymous", (group,), label)
    if group == "system:serviceaccounts":
        return Identity(SAMPLE_SERVICE_ACCOUNT, identity_of(SAMPLE_SERVICE_ACCOUNT).groups, label)
    if group.startswith("system:serviceaccounts:"):
        return Identity(f"system:serviceaccount:{group.split(':', 2)[2]}:app",
                        ("system:serviceaccounts", group, AUTHENTICATED), label)
    if group == "system:nodes":
        return Identity("system:node:node-1", (group, AUTHENTICATED), label)
    if group == AUTHENTICATED:
        return Identity(SAMPLE_USER, (AUTHENTICATED,), SAMPLE_USER)
    return Identity(f"member-of-{group}@example.com", (group, AUTHENTICATED), label)


def identities(policy: AuditPolicy, condition: Node) -> list[Identity]:
    """The identities worth asking about for a rule under a policy, each once."""
    users = [u for r in policy.rules for u in r.users]
    groups = [g for r in policy.rules for g in r.user_groups]
    named_users, named_groups = _named_identities(condition)
    generic = [_generic(identity_of(u)) for u in (SAMPLE_USER, SAMPLE_SERVICE_ACCOUNT, *named_users)]
    generic += [_generic(member_of(g)) for g in named_groups]
    out = generic + [identity_of(u) for u in users] + [member_of(g) for g in groups]
    unique: dict[tuple[str, tuple[str, ...]], Identity] = {}
    for identity in out:
        unique.setdefault((identity.user, identity.groups), identity)
    return list(unique.values())


def _generic(identity: Identity) -> Identity:
    return Identity(identity.user, identity.groups, identity.label, generic=True)


def _named_identities(node: Node) -> tuple[list[str], list[str]]:
    """User names compared for equality and groups compared in the condition."""
    users: list[str] = []
    groups: list[str] = []
    for check in _checks(node):
        values = check.rhs if isinstance(check.rhs, tuple) else (check.rhs,) if isinstance(check.rhs, str) else ()
        if check.lhs == FieldRef("ka.user.name") and check.op in ("=", "==", "in"):
            users += values
        elif check.lhs == FieldRef("ka.user.groups") and check.op in ("in", "intersects"):
            groups += values
    return users, groups


def _checks(node: Node) -> Iterable[Check]:
    match node:
        case And(items) | Or(items):
            for item in items:
                yield from _checks(item)
        case Not(item):
            yield from _checks(item)
        case Check():
            yield node
        case _:
            return


def requests(keys: dict[str, frozenset[str | None]], people: list[Identity],
             sample_namespaces: tuple[str, ...]) -> list[tuple[Identity, Request]]:
    """Every request a branch constrained by `keys` could be about, with who makes it."""
    who = [_generic(identity_of(str(u))) for u in keys["user"] if u is not None] if "user" in keys else people
    verbs = sorted(str(v) for v in keys.get("verb", frozenset(SAMPLE_VERBS)) if v is not None)
    out: list[tuple[Identity, Request]] = []
    resources = keys.get("resource")
    if resources is None:
        out += [(i, Request(i.user, i.groups, v, path="/api")) for i in who for v in verbs]
        resources = frozenset(KNOWN_RESOURCES)
    subresources = sorted(s or "" for s in keys.get("subresource", frozenset((None,))))
    for resource in sorted(str(r) for r in resources if r is not None):
        api_groups, namespaced = KNOWN_RESOURCES.get(resource, (("",), True))
        groups = sorted(str(g) for g in keys.get("group", frozenset(api_groups)) if g is not None)
        default = frozenset(sample_namespaces if namespaced else ("",))
        namespaces = sorted(str(n) for n in keys.get("namespace", default) if n is not None) or [""]
        for person, verb, sub, api, ns in itertools.product(who, verbs, subresources, groups, namespaces):
            out.append((person, Request(person.user, person.groups, verb, api, resource, sub, ns)))
    return out


Tri = Callable[[AuditEvent], "bool | None"]


class Matcher:
    """Three-valued evaluation of conditions on sampled requests (True, False, None = unknown).

    Each condition is compiled once into closures; the sampled events are built once."""

    def __init__(self) -> None:
        self._compiler = Compiler()
        self._compiled: dict[int, tuple[Node, Tri]] = {}

    def could_match(self, node: Node, request: Request) -> bool:
        """False only when the request's identity, verb, resource or namespace rule it out."""
        entry = self._compiled.get(id(node))
        if entry is None or entry[0] is not node:
            entry = self._compiled[id(node)] = (node, self._tri(node))
        return entry[1](sample_event(request)) is not False

    def _tri(self, node: Node) -> Tri:
        match node:
            case And(items):
                return _all([self._tri(i) for i in items])
            case Or(items):
                return _any([self._tri(i) for i in items])
            case Not(item):
                inner = self._tri(item)
                return lambda ev: _negate(inner(ev))
            case Check():
                predicate = self._predicate(node)
                return _unknown if predicate is None else predicate
            case _:
                return _unknown

    def _predicate(self, check: Check) -> Predicate | None:
        if not _concrete(check.lhs) or (isinstance(check.rhs, FieldRef) and not _concrete(check.rhs)):
            return None
        try:
            return self._compiler.check(check)
        except (CompileError, DetectorError):
            return None


def _unknown(_event: AuditEvent) -> bool | None:
    return None


def _negate(value: bool | None) -> bool | None:
    return None if value is None else not value


def _all(parts: list[Tri]) -> Tri:
    def conjunction(event: AuditEvent) -> bool | None:
        result: bool | None = True
        for part in parts:
            value = part(event)
            if value is False:
                return False
            if value is None:
                result = None
        return result
    return conjunction


def _any(parts: list[Tri]) -> Tri:
    def disjunction(event: AuditEvent) -> bool | None:
        result: bool | None = False
        for part in parts:
            value = part(event)
            if value is True:
                return True
            if value is None:
                result = None
        return result
    return disjunction


@functools.lru_cache(maxsize=65536)
def sample_event(request: Request) -> AuditEvent:
    """The audit event of a sampled request (metadata only); shared by every rule checked."""
    return event_from_dict(_event_dict(request))


def _concrete(expr: object) -> bool:
    if not isinstance(expr, FieldRef):
        return False
    if expr.name in ("jevt.value", "json.value"):
        return expr.arg in _CONCRETE_POINTERS
    return expr.arg is None and expr.name in _CONCRETE


def _event_dict(request: Request) -> dict[str, object]:
    event: dict[str, object] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "policy-check", "level": "Metadata",
        "stage": "ResponseComplete", "verb": request.verb, "stageTimestamp": "2026-01-01T00:00:00.000000Z",
        "user": {"username": request.user, "groups": list(request.groups)},
        "requestURI": request.path or "/",
    }
    if request.group is not None:
        ref = {"resource": request.resource, "subresource": request.subresource, "namespace": request.namespace,
               "apiGroup": request.group}
        event["objectRef"] = {k: v for k, v in ref.items() if v}
    return event
