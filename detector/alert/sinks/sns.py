"""SNS output through boto3: the alert JSON as the message, filterable attributes.

Message attributes: `priority`, `rule`, `source`, `hostname` (String), `tags` (String.Array) and
`cluster` when known, so subscribers can use filter policies. A message over SNS's limit stays
the alert's JSON: string values are cut inside it (lists stay lists), see fit_message.
FIFO topics (`.fifo`) get the configured MessageGroupId (one group by default: this output
stays in order) and the alert id as MessageDeduplicationId, so SNS itself drops a repeat sent
within its 5-minute window.
Credentials come from the standard AWS chain; botocore's own retries are off (the outbox
retries), and its timeouts are the output's timeout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

from detector.alert.model import Alert
from detector.alert.secret import Secret
from detector.alert.settings import SnsSettings
from detector.alert.sink import RETRYABLE_STATUSES, DeliveryError, snippet
from detector.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

SUBJECT_LIMIT = 100
MESSAGE_LIMIT = 256 * 1024
_NOT_SUBJECT = re.compile(r"[^\x20-\x7e]")
_RETRYABLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "KMSThrottling",
    "InternalError", "InternalFailure", "ServiceUnavailable", "ExpiredToken", "ExpiredTokenException",
    "RequestExpired", "RequestTimeout", "RequestTimeoutException",
})


class SnsSink:
    """Publishes each alert to one topic."""

    def __init__(self, settings: SnsSettings) -> None:
        self.name = settings.name
        self._settings = settings
        config = Config(connect_timeout=settings.timeout, read_timeout=settings.timeout,
                        retries={"total_max_attempts": 1}, user_agent_extra="detector")
        try:
            session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
        except ProfileNotFound:
            raise ConfigError(f"output {settings.name}: AWS profile {settings.profile!r} not found") from None
        self._session = session
        self._client: SNSClient = session.client("sns", endpoint_url=settings.endpoint_url, config=config)

    @property
    def secrets(self) -> Sequence[Secret]:
        """The credentials the AWS chain resolved (cached by botocore), to scrub from errors."""
        try:
            credentials = self._session.get_credentials()
        except BotoCoreError:
            return ()
        if credentials is None:
            return ()
        frozen = credentials.get_frozen_credentials()
        values = (frozen.access_key, frozen.secret_key, frozen.token)
        return [Secret(value, "AWS credentials") for value in values if value]

    def encode(self, alert: Alert) -> dict[str, Any]:
        """The keyword arguments of `Publish`."""
        request: dict[str, Any] = {
            "TopicArn": self._settings.topic_arn,
            "Message": fit_message(alert.to_dict()),
            "Subject": subject(alert),
            "MessageAttributes": attributes(alert),
        }
        if self._settings.fifo:
            request["MessageGroupId"] = self._settings.message_group_id
            request["MessageDeduplicationId"] = alert.id
        return request

    def send(self, alert: Alert) -> None:
        try:
            self._client.publish(**self.encode(alert))
        except ClientError as exc:
            raise _client_error(exc) from None
        except BotoCoreError as exc:
            raise DeliveryError(f"SNS: {type(exc).__name__}: {snippet(str(exc))}", retryable=True) from None

    def close(self) -> None:
        self._client.close()


def subject(alert: Alert) -> str:
    """`[Priority] rule` as SNS accepts it: printable ASCII, at most 100 characters."""
    text = _NOT_SUBJECT.sub("?", f"[{alert.priority}] {alert.rule}").strip()
    return text[:SUBJECT_LIMIT] or "detector alert"


def attributes(alert: Alert) -> dict[str, dict[str, str]]:
    out = {
        "priority": {"DataType": "String", "StringValue": alert.priority},
        "rule": {"DataType": "String", "StringValue": alert.rule},
        "source": {"DataType": "String", "StringValue": alert.source},
    }
    if alert.hostname:  # SNS refuses an empty attribute value
        out["hostname"] = {"DataType": "String", "StringValue": alert.hostname}
    if alert.tags:
        out["tags"] = {"DataType": "String.Array", "StringValue": orjson.dumps(list(alert.tags)).decode()}
    cluster = alert.output_fields.get("ka.cluster.name")
    if isinstance(cluster, str) and cluster:
        out["cluster"] = {"DataType": "String", "StringValue": cluster}
    return out


def fit_message(data: dict[str, Any], limit: int = MESSAGE_LIMIT - 8 * 1024) -> str:
    """The alert's JSON text, made to fit SNS's limit and still the same JSON shape.

    Over the limit, strings longer than a cap (in output fields, and `output`/`message`) are cut
    to it with TRUNCATED appended, and lists keep their first items plus a TRUNCATED entry; the
    cap shrinks until the text fits, and `truncated: true` is added. As a last resort the output
    fields are dropped."""
    text = orjson.dumps(data).decode()
    if len(text.encode()) <= limit:
        return text
    for cap in _CAPS:
        cut = {**data, "output_fields": _cut(data.get("output_fields") or {}, cap), "truncated": True}
        for key in ("output", "message"):
            cut[key] = _cut(data.get(key, ""), max(cap, _TEXT_FLOOR))
        text = orjson.dumps(cut).decode()
        if len(text.encode()) <= limit:
            return text
    cut = {**data, "output_fields": {}, "truncated": True}
    for key in ("output", "message"):
        cut[key] = _cut(data.get(key, ""), _TEXT_FLOOR)
    return orjson.dumps(cut).decode()


TRUNCATED = "...(truncated)"
_CAPS = (64 * 1024, 16 * 1024, 4096, 1024, 256, 64)  # longest string kept, tried in turn
_TEXT_FLOOR = 4096  # `output` and `message` keep at least this much


def _cut(value: Any, cap: int) -> Any:
    """`value` with every string longer than `cap` cut, and lists to at most cap // 32 items
    (at least 4), keeping their type."""
    if isinstance(value, str):
        return value if len(value) <= cap else value[:cap] + TRUNCATED
    if isinstance(value, list | tuple):
        keep = max(cap // 32, 4)
        items = [_cut(item, cap) for item in value[:keep]]
        return items if len(value) <= keep else [*items, TRUNCATED]
    if isinstance(value, dict):
        return {key: _cut(item, cap) for key, item in value.items()}
    return value


def _client_error(exc: ClientError) -> DeliveryError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    retryable = code in _RETRYABLE_CODES or status >= 500 or status in RETRYABLE_STATUSES
    message = f"SNS {code or 'error'} (HTTP {status}): {snippet(str(error.get('Message', '')))}"
    return DeliveryError(message, retryable=retryable, status=status)
