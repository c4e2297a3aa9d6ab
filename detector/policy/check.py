"""Judge each rule against an audit policy: can the events it needs exist at all?

A rule is *blind* when, for every request it could match, the policy either logs nothing
(level None), logs less than the rule reads (Metadata while the rule looks at request bodies),
or omits the stage the rule waits for. It is *partial* when that holds for some of the
resources or verbs it names but not all.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from detector.policy.audit import AuditPolicy, Decision, Level, Request
from detector.rules.ast import And, Check, FieldRef, Node, Not, Or, Transform, field_text
from detector.rules.index import constraints
from detector.rules.model import CompiledRule

# resource -> (API group, namespaced): enough to ask the policy about the requests rules name.
KNOWN_RESOURCES: dict[str, tuple[str, bool]] = {
    **{r: ("", True) for r in ("pods", "configmaps", "secrets", "services", "serviceaccounts", "endpoints",
                               "events", "persistentvolumeclaims", "replicationcontrollers", "limitranges",
                               "resourcequotas", "podtemplates")},
    **{r: ("", False) for r in ("namespaces", "nodes", "persistentvolumes", "componentstatuses")},
    **{r: ("apps", True) for r in ("deployments", "daemonsets", "statefulsets", "replicasets",
                                   "controllerrevisions")},
    **{r: ("batch", True) for r in ("jobs", "cronjobs")},
    **{r: ("rbac.authorization.k8s.io", True) for r in ("roles", "rolebindings")},
    **{r: ("rbac.authorization.k8s.io", False) for r in ("clusterroles", "clusterrolebindings")},
    **{r: ("admissionregistration.k8s.io", False) for r in (
        "mutatingwebhookconfigurations", "validatingwebhookconfigurations", "validatingadmissionpolicies",
        "validatingadmissionpolicybindings", "mutatingadmissionpolicies", "mutatingadmissionpolicybindings")},
    "certificatesigningrequests": ("certificates.k8s.io", False),
    "leases": ("coordination.k8s.io", True),
    "ingresses": ("networking.k8s.io", True),
    "networkpolicies": ("networking.k8s.io", True),
    "customresourcedefinitions": ("apiextensions.k8s.io", False),
    "tokenreviews": ("authentication.k8s.io", False),
    "subjectaccessreviews": ("authorization.k8s.io", False),
}
SAMPLE_VERBS = ("create", "update", "patch", "delete", "get", "list", "watch")
SAMPLE_USER = "someone@example.com"
_KEYS = {"ka.verb": "verb", "ka.target.resource": "resource", "ka.target.subresource": "subresource",
         "ka.stage": "stage", "ka.user.name": "user", "ka.target.namespace": "namespace",
         "ka.target.apigroup": "group"}
_POINTERS = {"/verb": "verb", "/objectRef/resource": "resource", "/objectRef/subresource": "subresource",
             "/stage": "stage", "/user/username": "user", "/objectRef/namespace": "namespace",
             "/objectRef/apiGroup": "group"}


class Verdict(enum.Enum):
    OK = "OK"
    PARTIAL = "PARTIAL"
    BLIND = "BLIND"


@dataclass(frozen=True, slots=True)
class RuleReport:
    rule: str
    enabled: bool
    verdict: Verdict
    reasons: tuple[str, ...]


def check_ruleset(rules: Iterable[CompiledRule], policy: AuditPolicy) -> list[RuleReport]:
    return [check_rule(rule, policy) for rule in rules]


def check_rule(rule: CompiledRule, policy: AuditPolicy) -> RuleReport:
    """The verdict for one rule, with the reasons for every blind spot.

    The condition is split into its alternatives (`a or b`, also inside `and`) so that the
    requests asked about are ones a branch can really match: a rule on "pods/ephemeralcontainers,
    or workloads" must not ask about "cronjobs/ephemeralcontainers"."""
    problems: dict[Request, str | None] = {}
    named = False
    for branch in branches(rule.condition):
        keys = constraints(branch, key_of=_policy_key)
        named = named or "resource" in keys or "verb" in keys
        need, reader = required_level(branch)
        stages = keys.get("stage")
        for request in _requests(keys, _policy_namespaces(policy)):
            problem = _problem(request, policy.decide(request), need, reader, stages)
            if problems.get(request, "") is not None:  # a request some branch can see stays seen
                problems[request] = problem
    blind = [r for r, p in problems.items() if p is not None]
    if len(blind) < len(problems):
        if blind and named:
            return RuleReport(rule.name, rule.enabled, Verdict.PARTIAL, _unique(problems[r] for r in blind))
        return RuleReport(rule.name, rule.enabled, Verdict.OK, ())
    return RuleReport(rule.name, rule.enabled, Verdict.BLIND, _unique(problems[r] for r in blind))


def branches(node: Node, limit: int = 64) -> list[Node]:
    """The alternatives of a condition (its disjunctive form), or `[node]` past `limit`."""
    match node:
        case Or(items):
            out = [b for item in items for b in branches(item, limit)]
            return out if len(out) <= limit else [node]
        case And(items):
            combos: list[list[Node]] = [[]]
            for item in items:
                combos = [[*c, b] for c in combos for b in branches(item, limit)]
                if len(combos) > limit:
                    return [node]
            return [And(tuple(c)) for c in combos]
        case _:
            return [node]


def _problem(request: Request, decision: Decision, need: Level, reader: str | None,
             stages: frozenset[str | None] | None) -> str | None:
    what = _describe(request)
    rule = f"policy rule {decision.rule}" if decision.rule is not None else "no policy rule matches"
    if decision.level is Level.NONE:
        return f"{what} is not logged (level None, {rule})"
    if decision.level < need:
        field = reader if reader is None or len(reader) <= 60 else reader[:57] + "..."
        return (f"{what} is logged at {decision.level.label} ({rule}) but the rule reads "
                f"{'response' if need is Level.REQUEST_RESPONSE else 'request'} bodies ({field})")
    if stages is not None and all(s in decision.omit_stages for s in stages if s is not None):
        omitted = ", ".join(sorted(s for s in stages if s is not None))
        return f"{what}: stage {omitted} is omitted ({rule})"
    return None


def _describe(request: Request) -> str:
    if request.group is None:
        return f"{request.verb} {request.path}"
    resource = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    where = f" in {request.namespace}" if request.namespace else ""
    return f"{request.verb} {resource}{where} by {request.user}"


def _policy_namespaces(policy: AuditPolicy) -> tuple[str, ...]:
    """Namespaces the policy treats specially: sampled alongside `default`."""
    named = {ns for rule in policy.rules for ns in rule.namespaces or () if ns}
    return ("default", *sorted(named - {"default"}))


def _requests(keys: dict[str, frozenset[str | None]], sample_namespaces: tuple[str, ...]) -> list[Request]:
    users = sorted(str(u) for u in keys.get("user", frozenset((SAMPLE_USER,))) if u is not None)
    verbs = sorted(str(v) for v in keys.get("verb", frozenset(SAMPLE_VERBS)) if v is not None)
    requests: list[Request] = []
    resources = keys.get("resource")
    if resources is None:
        requests += [Request(u, _groups(u), v, path="/api") for u in users for v in verbs]
        resources = frozenset(KNOWN_RESOURCES)
    subresources = sorted(s or "" for s in keys.get("subresource", frozenset((None,))))
    for resource in sorted(str(r) for r in resources if r is not None):
        group, namespaced = KNOWN_RESOURCES.get(resource, ("", True))
        groups = sorted(str(g) for g in keys.get("group", frozenset((group,))) if g is not None)
        default = frozenset(sample_namespaces if namespaced else ("",))
        namespaces = sorted(str(n) for n in keys.get("namespace", default) if n is not None) or [""]
        for user, verb, sub, api, ns in itertools.product(users, verbs, subresources, groups, namespaces):
            requests.append(Request(user, _groups(user), verb, api, resource, sub, ns))
    return requests


def _groups(user: str) -> tuple[str, ...]:
    if user == "system:anonymous":
        return ("system:unauthenticated",)
    if user.startswith("system:serviceaccount:"):
        return ("system:serviceaccounts", "system:authenticated")
    if user.startswith("system:node:"):
        return ("system:nodes", "system:authenticated")
    return ("system:authenticated",)


def _policy_key(name: str, arg: str | None) -> str | None:
    if name in ("jevt.value", "json.value"):
        return _POINTERS.get(arg or "")
    return _KEYS.get(name) if arg is None else None


def required_level(node: Node) -> tuple[Level, str | None]:
    """The least audit level at which `node` can be true, and a field that needs it.

    A check on a field the level does not carry is false (absent), so `and` needs the most
    any part needs, `or` the least, and `not` nothing (an absent field makes it true)."""
    match node:
        case Check(lhs, _, rhs):
            fields = [lhs] + ([rhs] if isinstance(rhs, FieldRef | Transform) else [])
            levels = [(_field_level(f), field_text(f)) for f in fields]
            return max(levels, key=lambda item: item[0])
        case And(items):
            return max((required_level(i) for i in items), key=lambda item: item[0])
        case Or(items):
            return min((required_level(i) for i in items), key=lambda item: item[0])
        case Not():
            return Level.METADATA, None
        case _:
            return Level.METADATA, None


def _field_level(expr: FieldRef | Transform | str) -> Level:
    if isinstance(expr, str):
        return Level.METADATA
    if isinstance(expr, Transform):
        return max((_field_level(a) for a in expr.args), default=Level.METADATA)
    name, arg = expr.name, expr.arg or ""
    if name in ("ka.resp.name", "ka.target.pod.name") or "responseObject" in arg:
        return Level.REQUEST_RESPONSE
    if name in ("jevt.obj", "json.obj"):
        return Level.REQUEST_RESPONSE
    if (name.startswith("ka.req.") and name not in ("ka.req.configmap.name", "ka.req.binding.subject.has_name")) \
            or "requestObject" in arg:
        return Level.REQUEST
    return Level.METADATA


def _unique(items: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i is not None))
