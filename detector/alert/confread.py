"""A typed reader over one YAML-loaded mapping, for the alert settings.

Every problem becomes one `ConfigError` line that names the key path (`outputs[1].url_env: ...`);
no message ever includes a secret value. Keys that were never read are reported as unknown, with
the closest known key as a hint.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any, NoReturn

from detector.alert.secret import Secret, SecretSourceError, secret_from_env, secret_from_file
from detector.errors import ConfigError, Location


class Fields:
    """Reads the keys of `raw` (which must be a mapping) found at key path `where`."""

    def __init__(self, raw: object, where: str, location: Location | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.where = where
        self.location = location
        self.environ: Mapping[str, str] = environ if environ is not None else {}
        if not isinstance(raw, Mapping):
            self.fail(f"expected a mapping, got {type_name(raw)}")
        self.raw: Mapping[Any, Any] = raw
        self.known: set[str] = set()

    def fail(self, message: str, key: str | None = None) -> NoReturn:
        """Raise the one-line error for `key` (or for this mapping itself)."""
        path = f"{self.where}.{key}" if key else self.where
        raise ConfigError(f"{path}: {message}", self.location)

    def has(self, key: str) -> bool:
        self.known.add(key)
        return self.raw.get(key) is not None

    def value(self, key: str) -> Any:
        self.known.add(key)
        return self.raw.get(key)

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.value(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            self.fail(f"expected a non-empty string, got {type_name(value)}", key)
        return value

    def required_text(self, key: str) -> str:
        value = self.text(key)
        if value is None:
            self.fail("is required", key)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(key, default)
        assert value is not None
        if value.lower() not in choices:
            self.fail(f"expected one of {', '.join(choices)}, got {value!r}", key)
        return value.lower()

    def number(self, key: str, default: float, minimum: float = 0.0) -> float:
        value = self.value(key)
        if value is None:
            return default
        if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                or value < minimum):
            self.fail(f"expected a number >= {minimum:g}, got {value!r}", key)
        return float(value)

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        value = self.value(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(f"expected an integer >= {minimum}, got {value!r}", key)
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.value(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(f"expected true or false, got {value!r}", key)
        return value

    def texts(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A list of strings; a single string is accepted as a list of one."""
        value = self.value(key)
        if value is None:
            return default
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(f"expected a list of non-empty strings, got {type_name(value)}", key)
        return tuple(value)

    def text_map(self, key: str) -> dict[str, str]:
        value = self.value(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool)
                for k, v in value.items()):
            self.fail("expected a mapping of names to strings", key)
        return {k: str(v) for k, v in value.items()}

    def secret(self, key: str, *, inline: bool = False) -> Secret | None:
        """`<key>_env` or `<key>_file` (or, when `inline`, `<key>` itself); at most one."""
        given = [k for k in (f"{key}_env", f"{key}_file", key) if self.has(k)]
        if len(given) > 1:
            self.fail(f"give only one of {', '.join(given)}", given[1])
        if not given:
            return None
        source = given[0]
        if source == key and not inline:
            self.fail(f"secrets are not accepted inline; use {key}_env or {key}_file", key)
        name = self.required_text(source)
        try:
            if source == key:
                return Secret(name, f"config {self.where}.{key}")
            if source.endswith("_env"):
                return secret_from_env(name, self.environ)
            return secret_from_file(name)
        except SecretSourceError as exc:
            self.fail(str(exc), source)

    def secret_map(self, key: str) -> dict[str, Secret]:
        """`<key>_env: {Header: VAR}` and `<key>_file: {Header: /path}`."""
        out: dict[str, Secret] = {}
        for suffix in ("_env", "_file"):
            for name, ref in self.text_map(key + suffix).items():
                try:
                    out[name] = (secret_from_env(ref, self.environ) if suffix == "_env"
                                 else secret_from_file(ref))
                except SecretSourceError as exc:
                    self.fail(str(exc), f"{key}{suffix}.{name}")
        return out

    def finish(self) -> None:
        """Fail on the first key that no reader asked for."""
        for key in self.raw:
            if str(key) in self.known:
                continue
            close = difflib.get_close_matches(str(key), sorted(self.known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.fail(f"unknown key{hint}", str(key))


def type_name(value: object) -> str:
    """How YAML would call the type of `value`."""
    match value:
        case None:
            return "nothing"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "a list"
        case Mapping():
            return "a mapping"
        case _:
            return type(value).__name__
