"""Secret values (webhook URLs, tokens, HMAC keys) that must never be printed.

A `Secret` is resolved once from an environment variable or a file named in the config; its
`repr`/`str` name only where it came from, so a secret cannot leak through a log line, an
exception message or a dataclass repr. Code that needs the value calls `reveal()`, and error
texts pass through `scrub()` with the sink's secrets before they are stored or printed.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote

from detector.redact import MASK


class Secret:
    """A secret value plus a printable description of where it came from."""

    __slots__ = ("_origin", "_value")

    def __init__(self, value: str, origin: str) -> None:
        self._value = value
        self._origin = origin

    def reveal(self) -> str:
        """The value itself: pass it to a client, never to a log or an error."""
        return self._value

    @property
    def origin(self) -> str:
        """Where the value came from, e.g. `env SLACK_WEBHOOK_URL`."""
        return self._origin

    def __repr__(self) -> str:
        return f"Secret(<{self._origin}>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretSourceError(Exception):
    """A secret cannot be read; the message names the source, never a value."""


def secret_from_env(name: str, environ: Mapping[str, str]) -> Secret:
    """The value of environment variable `name` (stripped); it must be set and non-empty."""
    value = environ.get(name, "").strip()
    if not value:
        raise SecretSourceError(f"environment variable {name} is not set")
    return Secret(value, f"env {name}")


def secret_from_file(path: str) -> Secret:
    """The content of file `path` (surrounding whitespace stripped); it must be non-empty."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretSourceError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise SecretSourceError(f"{path} is not UTF-8 text") from None
    if not value:
        raise SecretSourceError(f"{path} is empty")
    return Secret(value, f"file {path}")


def scrub(text: str, secrets: Iterable[Secret]) -> str:
    """`text` with every secret removed: each value and the parts of it that are secrets on their
    own (below), as written, JSON-escaped (`\\/`, `\\u002f`) or percent-encoded (either case, once
    or twice), all replaced by `****`; and a start of one of them cut off at the end of `text`
    (a truncated quote). Never raises: an error text that cannot be scrubbed is withheld.

    The parts: a URL's path, query, path segments and query values that look like tokens (the
    secret part of a Slack webhook URL), its user:password (and the Basic credentials built
    from it); a header value's credential after its scheme (`Bearer x`, `Basic x`, decoded).
    """
    try:
        for secret in secrets:
            for matcher in _matchers(secret.reveal()):
                text = matcher.scrub(text)
        return text
    except Exception:  # a bug here must not kill a worker inside its own error handler
        return "<error text withheld: it could not be scrubbed of secrets>"


_MIN_TAIL = 4  # characters of a secret's start, cut off at the end of a text, that are masked


class _Matcher:
    """Finds one form of a secret in any of the encodings above."""

    __slots__ = ("chars", "min_tail", "pattern")

    def __init__(self, form: str, min_tail: int = _MIN_TAIL) -> None:
        self.chars = [re.compile(_char_pattern(c)) for c in form]
        self.min_tail = min(max(min_tail, 1), len(form))
        self.pattern = re.compile("".join(p.pattern for p in self.chars))

    def scrub(self, text: str) -> str:
        text = self.pattern.sub(MASK, text)
        return self._scrub_tail(text)

    def _scrub_tail(self, text: str) -> str:
        stop = _tail_end(text)
        first = self.chars[0]
        # An encoded character is at most 9 characters long (`%25E2` per UTF-8 byte, x4 bytes:
        # a generous bound), so a cut-off start lies within this window.
        window = max(0, stop - 12 * len(self.chars))
        for start in range(window, stop - _MIN_TAIL + 1):
            if first.match(text, start) is None:
                continue
            pos, matched = start, 0
            for char in self.chars:
                if pos == stop:
                    break
                found = char.match(text, pos, stop)
                if found is None:
                    break
                pos, matched = found.end(), matched + 1
            if pos == stop and matched >= self.min_tail:
                return text[:start] + MASK + text[stop:]
        return text


def _tail_end(text: str) -> int:
    """Where `text` ends before trailing blanks and an ellipsis (`...` or `…`) that a cut added."""
    body = text.rstrip()
    for ellipsis in ("...", "\u2026"):
        if body.endswith(ellipsis):
            body = body[: -len(ellipsis)].rstrip()
            break
    return len(body)


def _char_pattern(char: str) -> str:
    """`char` as written, JSON-escaped or percent-encoded (hex digits in either case)."""
    options = [re.escape(char)]
    code = ord(char)
    if code < 0x10000:
        options.append(r"\\u" + _hex(f"{code:04x}"))
    if char in "/\"\\":
        options.append(re.escape("\\" + char))
    encoded = char.encode()
    options.append("".join("%(?:25)?" + _hex(f"{byte:02x}") for byte in encoded))
    if char == " ":
        options.append(r"\+")
    return "(?:" + "|".join(options) + ")"


def _hex(digits: str) -> str:
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in digits)


@functools.lru_cache(maxsize=256)
def _matchers(value: str) -> tuple[_Matcher, ...]:
    """Matchers for `value` and its secret parts, longest first (so the URL goes before its path)."""
    forms = sorted({form for form in _forms(value) if form}, key=len, reverse=True)
    return tuple(_Matcher(form, _public_lead(form)) for form in forms)


def _public_lead(form: str) -> int:
    """How many characters of a cut-off start of `form` say nothing secret, so that a text that
    merely ends like it (`https`, the host, `service`) is left alone: a URL's `scheme://host`
    (without a user:password), then the path segments before the first that looks like a token."""
    lead, rest = 0, form
    scheme, sep, after = form.partition("://")
    if sep and scheme.isalpha():
        netloc = after.partition("/")[0]
        if "@" in netloc:
            return _MIN_TAIL
        lead, rest = len(scheme) + len(sep) + len(netloc), after[len(netloc):]
    if "/" in rest:
        segments = rest.split("/")
        for segment in segments[:-1]:  # no token-like segment: the last one is the secret
            if "?" in segment or _looks_like_token(segment):
                break
            lead += len(segment) + 1
    return max(_MIN_TAIL, lead + 1)


def _forms(value: str) -> set[str]:
    forms = {value}
    if "://" in value:
        forms |= _url_parts(value)
    scheme, _, credential = value.partition(" ")
    if credential.strip() and scheme.isalpha():  # a header value: `Bearer x`, `Basic x`
        credential = credential.strip()
        forms.add(credential)
        if scheme.lower() == "basic":
            forms |= _basic_parts(credential)
    return {form for form in forms if len(form) >= 3 or form == value}


def _url_parts(url: str) -> set[str]:
    rest = url.partition("://")[2]
    netloc, slash, tail = rest.partition("/")
    path, _, query = ("/" + tail if slash else "").partition("?")
    query, _, fragment = query.partition("#")
    forms = {piece for piece in (path, path.lstrip("/"), query, fragment) if len(piece) > 1}
    if query:
        forms.add(f"{path}?{query}")
    userinfo, at, _host = netloc.rpartition("@")
    if at:
        forms.add(userinfo)
        user, colon, password = userinfo.partition(":")
        if colon and password:
            forms.add(password)
            forms.add(base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode())
    forms |= {segment for segment in path.split("/") if _looks_like_token(segment)}
    for pair in re.split(r"[&;]", query):
        _name, _, item = pair.partition("=")
        if _looks_like_token(item) or len(item) >= 6:
            forms.add(item)
    return forms


def _basic_parts(credential: str) -> set[str]:
    try:
        decoded = base64.b64decode(credential, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return set()
    _user, colon, password = decoded.partition(":")
    return {decoded, password} if colon and password else {decoded}


def _looks_like_token(segment: str) -> bool:
    """A path segment or query value that is a key, not a word (`T0123ABCD`, `XyZ...`, not `services`)."""
    if len(segment) >= 20:
        return True
    return len(segment) >= 8 and any(c.isdigit() or c.isupper() for c in segment)
