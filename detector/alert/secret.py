"""Secret values (webhook URLs, tokens, HMAC keys) that must never be printed.

A `Secret` is resolved once from an environment variable or a file named in the config; its
`repr`/`str` name only where it came from, so a secret cannot leak through a log line, an
exception message or a dataclass repr. Code that needs the value calls `reveal()`, and error
texts pass through `scrub()` with the sink's secrets before they are stored or printed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

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
    """`text` with every occurrence of any secret value replaced by `****`.

    For a URL, its path and query are scrubbed on their own too (a client error may quote
    only the path of a Slack webhook URL, which is where its secret part lives).
    """
    for secret in secrets:
        for value in _forms(secret.reveal()):
            if value in text:
                text = text.replace(value, MASK)
    return text


def _forms(value: str) -> list[str]:
    forms = [value] if value else []
    if "://" in value:
        parts = urlsplit(value)
        forms += [piece for piece in (parts.path, parts.query) if len(piece) > 1]
    return forms
