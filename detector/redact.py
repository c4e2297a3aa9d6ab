"""Masking of credentials that show up in audit data (exec commands, request URIs).

Lives at the bottom of the package because both the field table (which renders exec
commands) and the alert stage (which redacts payloads) need it.
"""

from __future__ import annotations

import functools
import re

MASK = "****"

_SECRET_WORDS = (
    r"token|password|passwd|pwd|secret|api[-_]?key|apikey|access[-_]?key|secret[-_]?key"
    r"|client[-_]?secret|auth|authorization|credentials?|private[-_]?key|bearer"
)
# `--token=abc`, `--password abc`, `password=abc`, `TOKEN: abc`, `Bearer abc`
# A value is a quoted string (masked whole, quotes kept) or a run of non-blank characters.
_VALUE = r"""(?P<value>"[^"]*"|'[^']*'|[^\s&;'"]+)"""
_FLAG_VALUE = re.compile(
    rf"(?i)(?P<key>(?:--?|\b)[\w.-]*(?:{_SECRET_WORDS})[\w.-]*)(?P<sep>\s*[=:]\s*|\s+){_VALUE}"
)
_AUTH_SCHEME = re.compile(rf"(?i)\b(?P<scheme>bearer|basic)\s+{_VALUE}")
_QUERY_VALUE = re.compile(rf"(?i)(?P<key>[?&][\w.-]*(?:{_SECRET_WORDS})[\w.-]*=)(?P<value>[^&#\s]*)")


# Every pattern below needs one of these words; most texts have none, and a substring test is
# far cheaper than the patterns (this runs on every field of every alert).
# ...followed, like every pattern requires, by a separator and a value: `secrets` alone (a
# resource name) or `ServiceAccount token` at the end of a text need no masking work.
_ANCHOR = re.compile(r"(?i)(?:token|pass|pwd|secret|key|auth|credential|bearer|basic)[\w.-]*(?:\s*[=:]|\s+\S)")


def might_hold_secret(text: str) -> bool:
    """Cheap pre-check: does `text` contain a credential-looking word at all?"""
    if len(text) <= _MEMO_MAX_CHARS:
        return _might_hold_secret_memo(text)
    return _ANCHOR.search(text) is not None


# Alert fields repeat (user names, namespaces, verbs, user agents): a bounded memo answers the
# repeats in ~0.1 us instead of a case-insensitive search, for short values only (the memo must
# not pin large strings).
_MEMO_MAX_CHARS = 256


@functools.lru_cache(maxsize=1024)
def _might_hold_secret_memo(text: str) -> bool:
    return _ANCHOR.search(text) is not None


def mask_secrets(text: str) -> str:
    """Replace the value that follows a credential-looking flag or key with `****`."""
    if not text:
        return text
    if _ANCHOR.search(text) is None:
        return text
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group('scheme')} {_masked(m.group('value'))}", text)
    text = _QUERY_VALUE.sub(lambda m: m.group("key") + MASK, text)
    return _FLAG_VALUE.sub(_mask_flag, text)


def _mask_flag(match: re.Match[str]) -> str:
    value = match.group("value")
    if value.strip("'\"") == MASK or value.startswith("-") or value.lower() in ("bearer", "basic"):
        return match.group(0)
    return f"{match.group('key')}{match.group('sep')}{_masked(value)}"


def _masked(value: str) -> str:
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{quote}{MASK}{quote}"
