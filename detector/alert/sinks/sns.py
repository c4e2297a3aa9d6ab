"""SNS output through boto3: the alert JSON as the message, filterable attributes.

Message attributes: `priority`, `rule`, `source`, `hostname` (String), `tags` (String.Array) and
`cluster` when known, so subscribers can use filter policies. A message over SNS's limit stays
the alert's JSON: string values are cut inside it (lists stay lists), see fit_message.
FIFO topics (`.fifo`) get the configured MessageGroupId (one group by default: this output
stays in order) and the alert id as MessageDeduplicationId, so SNS itself drops a repeat sent
within its 5-minute window.
Credentials come from the standard AWS chain; botocore's own retries are off (the outbox
retries). botocore builds and signs (SigV4) the request and parses the response, but the HTTP
exchange itself is ours: a `before-send` handler sends the signed request through the shared
`HttpTransport` and hands botocore the response, so SNS has the bounds of the other outputs
(`timeout` for the whole attempt, at most BODY_CAP bytes of a response read). botocore's own
HTTP session would read a response body whole, and time each socket read, not the attempt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

import boto3
import botocore.session
import orjson
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound
from botocore.parsers import ResponseParserError

from detector.alert.http import HttpTransport
from detector.alert.model import Alert
from detector.alert.secret import Secret
from detector.alert.settings import SnsSettings
from detector.alert.sink import RETRYABLE_STATUSES, DeliveryError, snippet
from detector.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

SUBJECT_LIMIT = 100
BODY_CAP = 16 * 1024  # SNS answers a publish, or an error, in well under 1 KiB of XML
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
        # One attempt whatever AWS_RETRY_MODE says: "adaptive" would also wait in a rate limiter
        # before sending, outside the attempt's deadline. The timeouts are those of botocore's
        # own HTTP session, which `_exchange` leaves unused.
        config = Config(connect_timeout=settings.timeout, read_timeout=settings.timeout,
                        retries={"total_max_attempts": 1, "mode": "standard"}, user_agent_extra="detector")
        core = botocore.session.get_session()
        try:
            session = boto3.session.Session(botocore_session=core, profile_name=settings.profile,
                                            region_name=settings.region)
            ca_bundle = core.get_config_variable("ca_bundle")  # AWS_CA_BUNDLE, or the profile's
        except ProfileNotFound:
            raise ConfigError(f"output {settings.name}: AWS profile {settings.profile!r} not found") from None
        self._session = session
        self._client: SNSClient = session.client("sns", endpoint_url=settings.endpoint_url, config=config)
        self._transport = HttpTransport(timeout=settings.timeout, verify=ca_bundle or True, body_cap=BODY_CAP)
        # botocore sends the first response a before-send handler returns (the stubs type
        # handlers as returning None).
        self._client.meta.events.register_first("before-send.sns", self._exchange)  # type: ignore[arg-type]
        self._status: int | None = None  # of the response to the publish in progress (one worker sends)

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
        self._status = None
        try:
            self._client.publish(**self.encode(alert))
        except ClientError as exc:
            raise _client_error(exc) from None
        except BotoCoreError as exc:
            raise DeliveryError(f"SNS: {type(exc).__name__}: {snippet(str(exc))}", retryable=True) from None
        except ResponseParserError:  # not XML (a proxy's page, another service); its text quotes the body
            status = self._status or 0
            raise DeliveryError(f"SNS: HTTP {status}, a response that is not SNS's XML",
                                retryable=_retryable(status), status=status or None) from None

    def _exchange(self, request: AWSPreparedRequest, **_kwargs: Any) -> AWSResponse:
        """botocore's `before-send` handler: the signed request sent through our transport.

        A response whose body is over the cap never reaches botocore's parser: it fails here,
        classified by its status (see `_retryable`)."""
        # Header values are the bytes botocore signed (UTF-8): latin-1 sends them back unchanged.
        headers = {key: value.decode("latin-1") if isinstance(value, bytes) else value
                   for key, value in request.headers.items()}
        try:
            response = self._transport.exchange(request.method, request.url, _body_bytes(request.body), headers)
        except DeliveryError as exc:
            raise DeliveryError(f"SNS: {exc.message}", retryable=exc.retryable, retry_after=exc.retry_after,
                                status=exc.status) from None
        self._status = status = response.status
        if response.truncated:
            raise DeliveryError(f"SNS: HTTP {status}, a response body over {BODY_CAP} bytes",
                                retryable=_retryable(status), status=status)
        received = HTTPHeaders()
        for key, value in response.headers.items():
            received[key] = value
        return AWSResponse(request.url, status, received, _Body(response.body))

    def close(self) -> None:
        self._client.close()
        self._transport.close()


def _body_bytes(body: bytes | bytearray | str | IO[bytes] | IO[str] | None) -> bytes:
    """A prepared request's body as bytes: Publish's is its form-encoded parameters (str)."""
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    content = body.read()  # a file (uploads; SNS has none)
    return content.encode() if isinstance(content, str) else content


class _Body:
    """A read response body as botocore's `AWSResponse.raw` (only `stream` is used)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_kwargs: Any) -> Iterator[bytes]:
        yield self._data


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


def _retryable(status: int) -> bool:
    """Whether a response botocore cannot read (over the cap, or not XML) is worth another try:
    a 2xx is (botocore's parse error was retried too), an error status as `_client_error` takes
    it when the code is unknown (5xx, 408, 425, 429; no status: the transport failed)."""
    return status == 0 or 200 <= status < 300 or status >= 500 or status in RETRYABLE_STATUSES


def _client_error(exc: ClientError) -> DeliveryError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    retryable = code in _RETRYABLE_CODES or status >= 500 or status in RETRYABLE_STATUSES
    message = f"SNS {code or 'error'} (HTTP {status}): {snippet(str(error.get('Message', '')))}"
    return DeliveryError(message, retryable=retryable, status=status)
