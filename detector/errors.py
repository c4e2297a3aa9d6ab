"""The error family of detector.

Every error carries where it came from (file, line, column, rule or list name) so that a
user sees one clear line naming the thing at fault, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """Where a problem sits: a file, optionally a line/column, optionally a named item."""

    path: str
    line: int | None = None
    column: int | None = None
    item: str | None = None

    def __str__(self) -> str:
        text = self.path
        if self.line is not None:
            text += f":{self.line}"
            if self.column is not None:
                text += f":{self.column}"
        if self.item:
            text += f" ({self.item})"
        return text


class DetectorError(Exception):
    """Root of every error detector raises on purpose."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        if self.location is None:
            return self.message
        return f"{self.location}: {self.message}"


class RuleLoadError(DetectorError):
    """A rules file cannot be loaded (syntax, unknown field, bad key...)."""


class ConditionSyntaxError(DetectorError):
    """A condition or output template does not parse; `column` is 1-based within the text."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.column = column


class BadInput(DetectorError):
    """One input line or document is not a usable audit event; `reason` is a stable code."""

    def __init__(self, reason: str, message: str, location: Location | None = None) -> None:
        super().__init__(message, location)
        self.reason = reason


class ConfigError(DetectorError):
    """The configuration (file or flags) is invalid."""


class UsageError(DetectorError):
    """The command line is invalid."""


class SourceError(DetectorError):
    """An input cannot be opened at all (missing file, no permission, a directory...)."""


class StateError(DetectorError):
    """The state directory's database cannot be used: corrupt, deleted while running, or not
    writable when detector has to stop. Nothing past the last committed checkpoint was skipped."""
