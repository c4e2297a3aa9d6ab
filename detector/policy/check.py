"""Judge each rule against an audit policy: can the events it needs exist at all?

A rule is *blind* when, for every request it could match (by any identity, in any namespace),
the policy either logs nothing (level None), logs less than the rule reads (Metadata while the
rule looks at request bodies), or omits the stage the rule waits for. It is *partial* when that
holds for some identities, namespaces, resources or verbs it can match but not all.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from detector.policy.audit import AuditPolicy, Decision, Level, Request
from detector.policy.sample import KNOWN_RESOURCES, Identity, Matcher, identities, requests
from detector.rules.ast import And, Check, FieldRef, Node, Not, Or, Transform, field_text
from detector.rules.index import constraints
from detector.rules.model import CompiledRule

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
    or workloads" must not ask about "cronjobs/ephemeralcontainers". Requests are asked for
    every identity the policy or the rule names (sample.py), and only those the branch could
    match count: BLIND when none of them is seen, PARTIAL when an identity or a namespace the
    rule can match is never seen (or, for a rule naming resources or verbs, some request)."""
    problems: dict[Request, str | None] = {}
    who: dict[Request, Identity] = {}
    named = False
    matcher = Matcher()
    decide = _decider(policy)
    people = identities(policy, rule.condition)
    for branch in branches(rule.condition):
        keys = constraints(branch, key_of=_policy_key)
        named = named or "resource" in keys or "verb" in keys
        need, reader = required_level(branch)
        stages = keys.get("stage")
        candidates = requests(keys, people, _policy_namespaces(policy))
        matchable = [(i, r) for i, r in candidates if matcher.could_match(branch, r)] or candidates
        for identity, request in matchable:
            problem = _problem(request, decide(request), need, reader, stages)
            who.setdefault(request, identity)
            if problems.get(request, "") is not None:  # a request some branch can see stays seen
                problems[request] = problem
    blind = [r for r, p in problems.items() if p is not None]
    if len(blind) == len(problems):
        return RuleReport(rule.name, rule.enabled, Verdict.BLIND, _unique(problems[r] for r in blind))
    unseen = _unseen(problems, who)
    generic_blind = [r for r in blind if who[r].generic]
    if unseen or (generic_blind and named):
        return RuleReport(rule.name, rule.enabled, Verdict.PARTIAL,
                          (*unseen, *_unique(problems[r] for r in blind)))
    return RuleReport(rule.name, rule.enabled, Verdict.OK, ())


_DECISIONS: list[tuple[AuditPolicy, dict[Request, Decision]]] = []


def _decider(policy: AuditPolicy) -> Callable[[Request], Decision]:
    """`policy.decide`, remembered per request for the policy checked last (every rule asks the same ones)."""
    if not _DECISIONS or _DECISIONS[0][0] is not policy:
        _DECISIONS[:] = [(policy, {})]
    cache = _DECISIONS[0][1]

    def decide(request: Request) -> Decision:
        decision = cache.get(request)
        if decision is None:
            decision = cache[request] = policy.decide(request)
        return decision
    return decide


def _unseen(problems: dict[Request, str | None], who: dict[Request, Identity]) -> tuple[str, ...]:
    """Summary lines for the identities and namespaces of which the rule sees no request."""
    seen_by: dict[str, bool] = {}
    seen_in: dict[str, bool] = {}
    for request, problem in problems.items():
        label = who[request].label
        seen_by[label] = seen_by.get(label, False) or problem is None
        if request.namespace:
            seen_in[request.namespace] = seen_in.get(request.namespace, False) or problem is None
    out: list[str] = []
    if not all(seen_by.values()):
        out.append(f"sees only requests by {_names(k for k, v in seen_by.items() if v)}; nothing it needs "
                   f"is logged for {_names(k for k, v in seen_by.items() if not v)}")
    hidden = [ns for ns, seen in seen_in.items() if not seen]
    if hidden:
        out.append(f"nothing it needs is logged in namespace {_names(hidden)}")
    return tuple(out)


def _names(items: Iterable[str], limit: int = 6) -> str:
    names = list(items)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


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
    if request.group and len(KNOWN_RESOURCES.get(request.resource, ((), True))[0]) > 1:
        # kubectl's resource.group where two APIs serve the name, so the two Event APIs read apart
        resource = f"{request.resource}.{request.group}" + (f"/{request.subresource}" if request.subresource else "")
    where = f" in {request.namespace}" if request.namespace else ""
    return f"{request.verb} {resource}{where} by {request.user}"


def _policy_namespaces(policy: AuditPolicy) -> tuple[str, ...]:
    """Namespaces the policy treats specially: sampled alongside `default`."""
    named = {ns for rule in policy.rules for ns in rule.namespaces or () if ns}
    return ("default", *sorted(named - {"default"}))


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
