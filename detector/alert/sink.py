"""The seam between the dispatcher and an output: the `Sink` protocol and its one error type.

A sink encodes an alert and sends it through a shared client; every failure leaves it as a
`DeliveryError` that says whether trying again later can help (and when, if the server said).
The classification is one table for every transport (`classify_status`).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from detector.alert.model import Alert
from detector.alert.secret import Secret, scrub
from detector.errors import DetectorError
from detector.redact import mask_secrets

_BODY_LIMIT = 200
RETRYABLE_STATUSES = frozenset({408, 425, 429})


class DeliveryError(DetectorError):
    """An alert could not be delivered. `retryable`: a later attempt may succeed;
    `retry_after`: seconds the server asked us to wait; `status`: HTTP status, if any."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class Sink(Protocol):
    """An output: `send` delivers one alert or raises `DeliveryError`."""

    name: str

    @property
    def secrets(self) -> Sequence[Secret]:
        """Values that must be scrubbed from any error text about this sink."""
        ...

    def send(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


def classify_status(status: int, body: str = "", headers: Mapping[str, str] | None = None,
                    secrets: Iterable[Secret] = ()) -> DeliveryError:
    """The error for a non-2xx response: 5xx, 408, 425 and 429 are retryable, other 4xx permanent.
    The body is quoted scrubbed of `secrets` (see `snippet`)."""
    retry_after = parse_retry_after((headers or {}).get("Retry-After") or (headers or {}).get("retry-after"))
    retryable = status >= 500 or status in RETRYABLE_STATUSES
    detail = snippet(body, secrets)
    message = f"HTTP {status}" + (f": {detail}" if detail else "")
    if retry_after is not None and retryable:
        message += f" (Retry-After {retry_after:g}s)"
    return DeliveryError(message, retryable=retryable, retry_after=retry_after if retryable else None,
                         status=status)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent/invalid."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def snippet(body: str, secrets: Iterable[Secret] = ()) -> str:
    """The start of a response body, on one line, scrubbed of `secrets` (in every encoding) and
    of credential-looking values; cut to _BODY_LIMIT characters only then, so that the cut can
    never leave a part of a secret that the scrubbing would have recognised whole."""
    secrets = tuple(secrets)
    text = " ".join(scrub(body, secrets).split())
    text = mask_secrets(scrub(text, secrets))
    if len(text) > _BODY_LIMIT:
        text = text[:_BODY_LIMIT] + "..."
    return text
