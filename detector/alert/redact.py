"""Redaction of alert payloads: no Secret data, no credentials in commands or URIs.

An alert carries event data only in `output_fields`, `message` and `output` (the latter two are
the rule's template rendered with those same field values); the raw event (requestObject,
responseObject) is never part of an alert. What `redact_alert` guarantees:

1. Events about Secrets (`objectRef.resource == "secrets"`, or a request/response object of kind
   Secret/SecretList): every output field except a fixed allowlist of metadata fields (who, what
   verb, which object, where from, the response code; `jevt.value`/`json.value` pointers outside
   requestObject/responseObject) has its value replaced by `<redacted: secret data>`, and the
   value it had is replaced in the message and output line too. Every `data`/`stringData` value
   of the Secret(s) (as sent and base64-decoded) and the last-applied-configuration annotation
   are replaced wherever they still occur (values of 4+ characters). If the start (8 characters)
   of a redacted value is still in the message -- a width-truncated `%20field` token -- the
   message is withheld altogether.
2. Every string output field (and list element) goes through `mask_secrets`, after URL-decoding
   when it contains `%`; where that changed a value, its occurrences in the message and output
   line are replaced by the masked form. The rest of the message is rule text and is left alone
   (masking free prose over-matches: "Unauthorized access" would become "Unauthorized ****").

3. Credentials the event's structure names, whatever field prints them (`credential_values`):
   the value of every key named like a credential in the request/response objects (a
   TokenReview's `spec.token`, a TokenRequest's `status.token`, ConfigMap `data` under
   `db_password`), container `env[].value` whose `name` says password/token/secret/key, the
   last-applied-configuration annotation of any object, and every argument of an exec/attach
   command that `mask_argv` masks (so `ka.uri.param[command]` or a JSON rendering of the
   requestURI shows it masked as `ka.exec.command` does). Each is replaced, as written and
   JSON-escaped (4 characters or more; not `true`/`false` and such), by its masked form.

Replacement may over-redact (a one-letter secret value would be replaced everywhere); it never
under-redacts the cases above.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

import msgspec
import orjson

from detector.alert.model import Alert
from detector.event import AuditEvent
from detector.parse.extract import exec_argv, mask_memo
from detector.redact import MASK, SECRET_WORDS, is_credential_name, mask_secrets, might_hold_secret

REDACTED = "<redacted: secret data>"
WITHHELD = "<output withheld: it showed data of a Secret>"
_SCAN_MIN = 4
_PREFIX = 8
_SECRET_KINDS = frozenset({"Secret", "SecretList"})
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Fields that read only the request line and metadata, never an object's content.
_SAFE_FIELDS = frozenset({
    "ka.auditid", "ka.stage", "ka.level", "ka.auth.decision", "ka.auth.reason", "ka.auth.openshift.decision",
    "ka.auth.openshift.username", "ka.user.name", "ka.user.groups", "ka.impuser.name", "ka.impuser.groups",
    "ka.verb", "ka.uri", "ka.uri.param", "ka.target.name", "ka.target.namespace", "ka.target.resource",
    "ka.target.subresource", "ka.target.apigroup", "ka.target.pod.name", "ka.useragent", "ka.sourceips",
    "ka.sourceip.first", "ka.sourceip.last", "ka.client.ip", "ka.response.code", "ka.response.reason",
    "ka.cluster.name", "evt.time", "evt.time.iso8601", "evt.datetime", "evt.rawtime", "evt.hostname",
    "evt.source", "evt.pluginname", "json.rawtime", "jevt.rawtime",
})
_POINTER_FIELDS = frozenset({"jevt.value", "json.value"})
_UNSAFE_POINTER_ROOTS = ("", "requestObject", "responseObject")
_TRANSFORMER = re.compile(r"^[a-z0-9]+\((.*)\)$")


def redact_alert(alert: Alert, event: AuditEvent) -> Alert:
    """The alert with Secret data and credentials removed (see the module docstring)."""
    # Secret data only ever travels in request/response objects: a Secret event logged at
    # Metadata level carries none, and needs only the credential masking below.
    secret_event = is_secret_event(event) and _has_body(event)  # the cheaper test first: few events are
    credentials = _credentials(event) if any(map(_prints_content, alert.output_fields)) else []
    if not secret_event and not credentials and not any(_may_need_masking(v) for v in alert.output_fields.values()):
        return alert  # the common case: nothing to mask, nothing to copy
    fields = dict(alert.output_fields)
    replacements: dict[str, str] = {}
    redacted: list[str] = []
    if secret_event:
        for key, value in fields.items():
            if value is not None and not is_safe_field(key):
                fields[key] = REDACTED
                redacted.extend(_rendered_forms(value))
    masked = mask_memo(event)
    for key, value in fields.items():
        fields[key] = _mask_value(value, replacements, masked)
    for value in redacted:
        replacements[value] = REDACTED
    message, output = _replace(alert.message, replacements), _replace(alert.output, replacements)
    if secret_event:
        found = secret_values(event)
        scan = {v: REDACTED for v in found or ()}
        message, output = _replace(message, scan), _replace(output, scan)
        fields = {k: _replace_in(v, scan) for k, v in fields.items()}
        if found is None or _leaks(message, redacted):  # None: the Secret's data could not be read
            message, output = WITHHELD, alert.output[: len(alert.output) - len(alert.message)] + WITHHELD
    if credentials:
        message, output = _replace(message, credentials), _replace(output, credentials)
        fields = {k: _replace_in(v, credentials) for k, v in fields.items()}
    return msgspec.structs.replace(alert, output_fields=fields, message=message, output=output)


_CREDENTIALS = "\x00redact.credentials"


def _credentials(event: AuditEvent) -> list[tuple[str, str]]:
    """`credential_values` of the event as replacements, longest first; once per event (an event
    that matched several rules makes several alerts)."""
    cache = event.cache
    if cache is None:
        cache = event.cache = {}
    elif _CREDENTIALS in cache:
        pairs: list[tuple[str, str]] = cache[_CREDENTIALS]
        return pairs
    pairs = cache[_CREDENTIALS] = _longest_first(credential_values(event))
    return pairs


@functools.lru_cache(maxsize=1024)
def _prints_content(key: str) -> bool:
    """Can the output field `key` print an object's content or a query parameter's value? Only
    then are the event's credential values looked for (most outputs print metadata only)."""
    return key.startswith("ka.uri.param") or not is_safe_field(key)


def _has_body(event: AuditEvent) -> bool:
    if event.parsed_body is not None:
        body = event.parsed_body
        return body.get("requestObject") is not None or body.get("responseObject") is not None
    raw = event.line()
    return not raw or b'"requestObject"' in raw or b'"responseObject"' in raw


def is_secret_event(event: AuditEvent) -> bool:
    """Is this event about a Secret (its object reference or its request/response object)?"""
    if event.objectRef.resource == "secrets":
        return True
    if b'"Secret' not in event.line():  # cheap: no Secret kind anywhere in the line
        return False
    body = _body(event)
    return body is None or any(_kind(body.get(part)) in _SECRET_KINDS for part in ("requestObject", "responseObject"))


def is_safe_field(key: str) -> bool:
    """Does the output field named `key` (as written in the template) read only metadata?"""
    name, _, arg = _base_field(key).partition("[")
    if name in _SAFE_FIELDS:
        return True
    if name in _POINTER_FIELDS:
        root = arg.rstrip("]").lstrip("/").split("/", 1)[0]
        return root not in _UNSAFE_POINTER_ROOTS
    return False


def secret_values(event: AuditEvent) -> list[str] | None:
    """The data of every Secret in the event's request/response objects, longest first; None
    if the event's JSON cannot be decoded (so the caller must assume the worst)."""
    if not event.line():
        return []
    body = _body(event)
    if body is None:
        return None
    values: set[str] = set()
    for part in ("requestObject", "responseObject"):
        for secret in _secrets_in(body.get(part)):
            values.update(_data_values(secret))
    return sorted((v for v in values if len(v) >= _SCAN_MIN), key=len, reverse=True)


def _body(event: AuditEvent) -> dict[str, Any] | None:
    """The event's whole JSON, or None when it cannot be decoded (nesting deeper than the
    recursion limit): redaction then treats the event as the worst case, never as harmless."""
    try:
        return event.body()
    except (ValueError, RecursionError):  # orjson's and msgspec's decode errors are ValueErrors
        return None


def _secrets_in(obj: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(obj, dict):
        return
    if obj.get("kind") == "Secret" or "data" in obj or "stringData" in obj:
        yield obj
    for item in obj.get("items") or ():
        yield from _secrets_in(item)


def _data_values(secret: dict[str, Any]) -> Iterator[str]:
    for key in ("data", "stringData"):
        data = secret.get(key)
        if isinstance(data, dict):
            for value in data.values():
                if isinstance(value, str):
                    yield value
                    yield from _decoded(value)
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    if isinstance(annotations, dict) and isinstance(annotations.get(_LAST_APPLIED), str):
        yield annotations[_LAST_APPLIED]


def _decoded(value: str) -> Iterator[str]:
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return
    yield text
    yield from (line for line in text.splitlines() if line.strip())


def _kind(obj: Any) -> Any:
    return obj.get("kind") if isinstance(obj, dict) else None


def _base_field(key: str) -> str:
    """`tolower(jevt.value[/x])` -> `jevt.value[/x]`."""
    while (inner := _TRANSFORMER.match(key)) is not None:
        key = inner.group(1)
    return key


def _rendered_forms(value: Any) -> list[str]:
    """How a field value may appear in the rendered message: whole, joined list, elements."""
    if isinstance(value, list):
        items = [str(v) for v in value if v is not None and str(v)]
        return ["(" + ",".join(items) + ")", *items]
    text = str(value)
    return [text] if text else []


def _may_need_masking(value: Any) -> bool:
    if isinstance(value, str):
        return "%" in value or might_hold_secret(value)
    if isinstance(value, list):
        return any(_may_need_masking(v) for v in value)
    return False


def _mask_value(value: Any, replacements: dict[str, str], memo: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_mask_value(v, replacements, memo) for v in value]
    if not isinstance(value, str) or not value or value == REDACTED:
        return value
    masked = memo.get(value)
    if masked is None:
        masked = mask_secrets(value)  # query strings are decoded (and `+` read as a space) by the masker
        memo[value] = masked
    if "%" in masked:  # percent-encoding elsewhere (a path, a JSON-escaped URI): mask the decoded text too
        plain = unquote(masked)
        decoded = memo.get(plain)
        if decoded is None:
            decoded = memo[plain] = mask_secrets(plain)
        if decoded != plain:
            masked = decoded
    if masked == value:
        return value
    replacements[value] = masked
    return masked


def _longest_first(replacements: dict[str, str]) -> list[tuple[str, str]]:
    """The replacements to make, longest original first (so a value's part is not replaced first)."""
    return [(old, replacements[old]) for old in sorted(replacements, key=len, reverse=True) if old]


def _replace(text: str, replacements: dict[str, str] | list[tuple[str, str]]) -> str:
    pairs = _longest_first(replacements) if isinstance(replacements, dict) else replacements
    for old, new in pairs:
        if old in text:
            text = text.replace(old, new)
    return text


def _replace_in(value: Any, replacements: dict[str, str] | list[tuple[str, str]]) -> Any:
    if isinstance(value, list):
        return [_replace_in(v, replacements) for v in value]
    if isinstance(value, str) and value != REDACTED:
        return _replace(value, replacements)
    return value


def _leaks(message: str, values: Iterable[str]) -> bool:
    return any(len(v) >= _SCAN_MIN and v[:_PREFIX] in message for v in values)


# --- credentials named by the event's structure -----------------------------------------------------
_CREDENTIAL_HINTS = re.compile(
    b"|".join(re.escape(hint) for hint in (b'"env"', b"oken", b"assw", b"ecret", b"ConfigMap", b"last-applied",
                                           b'ey"', b"uth", b"redential")))
_WALK_BUDGET = 20_000  # nodes walked per event at most: a bigger body is left to the text masker
_NOT_SECRETS = frozenset({"true", "false", "null", "none", "yes", "no"})


def credential_values(event: AuditEvent) -> dict[str, str]:
    """Every credential the event's structure names (see the module docstring, 3.), in each
    form it may be printed (as written, JSON-escaped, URL-encoded), mapped to its masked form."""
    found: dict[str, str] = {}
    if event.requestURI and "?" in event.requestURI:
        _uri_credentials(event, event.requestURI, found)
    if not _has_body(event):
        return found
    line = event.line()
    if line and _CREDENTIAL_HINTS.search(line) is None:
        return found
    for part in _objects(event):
        if isinstance(part, (dict, list)) and _may_name_credentials(part, len(line)):
            _walk_credentials(part, found)
    return found


# Every credential the walk finds is under a name holding one of the words the text masker needs
# (lowercase), or in the last-applied annotation, or is text the masker masks (which holds one).
_OBJECT_HINTS = re.compile(b"|".join(re.escape(word.encode()) for word in (*SECRET_WORDS, "last-applied")))
_HINT_CHECK_MAX = 64 * 1024  # a bigger line is walked (within _WALK_BUDGET) without serialising it


def _may_name_credentials(part: dict[str, Any] | list[Any], size: int) -> bool:
    """Could the walk find a credential in `part`? No when its JSON, lowercased, holds none of the
    words (one C pass instead of a walk in Python: most request objects name no credential)."""
    if size > _HINT_CHECK_MAX:
        return True
    try:
        text = orjson.dumps(part)
    except TypeError:  # integers past 64 bits, nesting past 255 levels: walk it
        return True
    return not text.isascii() or _OBJECT_HINTS.search(text.lower()) is not None


def _objects(event: AuditEvent) -> list[Any]:
    """The event's request and response objects (either may be None); none if it cannot be decoded.
    A line without a responseObject needs only its requestObject, which rules that read a body
    have mostly decoded already (`AuditEvent.request_object`), not the whole event."""
    line = event.line()
    if event.parsed_body is None and line and b'"responseObject"' not in line:
        try:
            request = event.request_object()
        except (ValueError, RecursionError):  # msgspec's decode errors (and TooDeep) are ValueErrors
            return []
        return [None if request is msgspec.UNSET else request]
    body = _body(event)
    return [body.get("requestObject"), body.get("responseObject")] if isinstance(body, dict) else []


# Every name is_credential_name takes for a credential holds one of these (lowercase); a query
# whose text holds none (and no %-escape, which may spell one) names no credential parameter.
_NAME_WORDS = ("pass", "pw", "token", "secret", "key", "auth", "cred", "bearer", "sig")


def _uri_credentials(event: AuditEvent, uri: str, found: dict[str, str]) -> None:
    """The masked arguments of an exec's command, and the values of credential-named query
    parameters (`ka.uri.param[access_token]` prints the value alone)."""
    command = exec_argv(event)  # masked once per event, with ka.exec.command
    if command is not None:
        for arg, masked in zip(*command, strict=True):
            if arg != masked:
                _add(found, arg, masked, encoded=True)
    after = uri[uri.find("?") + 1:].lower()  # the query (and fragment): no parse for most URIs
    if not any(word in after for word in _NAME_WORDS) and not any(c in after for c in "%\t\r\n"):
        return  # (urlsplit drops tabs and line breaks, so they may split a word)
    for key, value in parse_qsl(urlsplit(uri).query, keep_blank_values=True):
        if key != "command" and is_credential_name(key):
            _add(found, value, MASK, encoded=True)


def _walk_credentials(root: Any, found: dict[str, str]) -> None:
    """Collect credential values of `root` into `found`, iteratively, within _WALK_BUDGET nodes."""
    stack, budget = [root], _WALK_BUDGET
    while stack and budget > 0:
        node = stack.pop()
        budget -= 1
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            _credentials_of(node, found)
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))


def _credentials_of(node: dict[str, Any], found: dict[str, str]) -> None:
    name, value = node.get("name"), node.get("value")
    if isinstance(name, str) and isinstance(value, str) and is_credential_name(name):  # env[] entries
        _add(found, value, MASK)
    configmap = node.get("kind") == "ConfigMap"
    for key, item in node.items():
        if not isinstance(item, str):
            if key in ("data", "binaryData", "stringData") and isinstance(item, dict):
                _data_credentials(item, found, configmap)
            elif key == "annotations" and isinstance(item, dict) and isinstance(item.get(_LAST_APPLIED), str):
                _add(found, item[_LAST_APPLIED], MASK)
            continue
        if is_credential_name(key, env_style=False):
            _add(found, item, MASK)


def _data_credentials(data: dict[str, Any], found: dict[str, str], configmap: bool) -> None:
    """ConfigMap-style data: values under credential-like keys (`db.password`, `tls.key`), and
    credentials inside the files it holds (`application.properties` with `db.password=x`)."""
    for key, value in data.items():
        if not isinstance(value, str):
            continue
        if is_credential_name(str(key)):
            _add(found, value, MASK)
            for decoded in _decoded(value):
                _add(found, decoded, MASK)
        elif configmap or might_hold_secret(value):
            masked = mask_secrets(value)
            if masked != value:
                _add(found, value, masked)


def _add(found: dict[str, str], value: str, masked: str, encoded: bool = False) -> None:
    if len(value) < _SCAN_MIN or value.lower() in _NOT_SECRETS or value == masked:
        return
    found[value] = masked
    escaped = msgspec.json.encode(value).decode()[1:-1]
    if escaped != value:
        found[escaped] = msgspec.json.encode(masked).decode()[1:-1]
    if encoded:
        for encode in (quote_plus, quote):
            form = encode(value, safe="")
            if form != value:
                found[form] = encode(masked, safe="*")
