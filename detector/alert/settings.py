"""Delivery settings as values: outputs, routes, throttling and the outbox.

`parse_outputs`, `parse_throttle` and `parse_outbox` validate the YAML-loaded sections and raise
one-line `ConfigError`s naming the key (`outputs[1].url_env: environment variable SIEM_URL is not
set`). Secrets are resolved here, once, into `Secret` values that never print themselves.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from detector.alert.confread import Fields, type_name
from detector.alert.secret import Secret
from detector.alert.template import TemplateError, compile_template
from detector.errors import ConfigError, Location
from detector.rules.model import Priority

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SNS_ARN = re.compile(r"arn:aws[\w-]*:sns:(?P<region>[a-z0-9-]+):\d{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_METHODS = ("post", "put", "patch")
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """Which alerts an output receives: all conditions must hold (globs use fnmatch syntax)."""

    min_priority: Priority = Priority.DEBUG
    include_rules: tuple[str, ...] = ("*",)
    exclude_rules: tuple[str, ...] = ()
    include_tags: tuple[str, ...] = ()  # empty: any tags; else at least one must match
    exclude_tags: tuple[str, ...] = ()
    include_clusters: tuple[str, ...] = ()  # empty: any cluster; else ka.cluster.name must match one
    exclude_clusters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StdoutSettings:
    kind: ClassVar[str] = "stdout"
    name: str
    route: RouteSettings = RouteSettings()
    format: str = "json"  # json | text


@dataclass(frozen=True, slots=True)
class FileSettings:
    kind: ClassVar[str] = "file"
    name: str
    path: str
    route: RouteSettings = RouteSettings()
    fsync: bool = True  # fsync after every alert, before it counts as delivered


@dataclass(frozen=True, slots=True)
class SlackSettings:
    """Incoming webhook (`webhook_url`) or bot token + channel; `base_url` for tests/GovSlack;
    `template` for the message's text (see template.py), else the alert's output line."""

    kind: ClassVar[str] = "slack"
    name: str
    webhook_url: Secret | None = None
    token: Secret | None = None
    channel: str | None = None
    base_url: str | None = None
    route: RouteSettings = RouteSettings()
    timeout: float = DEFAULT_TIMEOUT
    template: str | None = None


@dataclass(frozen=True, slots=True)
class SnsSettings:
    """An SNS topic; credentials come from the standard AWS chain (env, files, profile, IMDS)."""

    kind: ClassVar[str] = "sns"
    name: str
    topic_arn: str
    region: str
    endpoint_url: str | None = None
    profile: str | None = None
    message_group_id: str = "detector"  # FIFO topics: one group keeps the output in order
    route: RouteSettings = RouteSettings()
    timeout: float = DEFAULT_TIMEOUT

    @property
    def fifo(self) -> bool:
        return self.topic_arn.endswith(".fifo")


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """An HTTP endpoint receiving the Falco JSON (or `template`), optionally HMAC-signed."""

    kind: ClassVar[str] = "webhook"
    name: str
    url: Secret
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    secret_headers: tuple[tuple[str, Secret], ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    tls_verify: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    template: str | None = None
    content_type: str = "application/json"
    hmac_secret: Secret | None = None
    hmac_header: str = "X-Detector-Signature"
    route: RouteSettings = RouteSettings()


OutputSettings = StdoutSettings | FileSettings | SlackSettings | SnsSettings | WebhookSettings


@dataclass(frozen=True, slots=True)
class ThrottleOverride:
    """Throttle settings for the rules matching any of `rules` (globs); first match wins."""

    rules: tuple[str, ...]
    window_seconds: float
    key_fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    """Repeats of an alert with the same key within `window_seconds` are counted, not sent.

    Key fields name alert attributes (`rule`, `priority`, `hostname`, `source`) or output fields
    (`ka.user.name`...). A window of 0 turns throttling off.
    """

    window_seconds: float = 0.0
    key_fields: tuple[str, ...] = ("rule",)
    overrides: tuple[ThrottleOverride, ...] = ()


MAX_SYNC_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    """Bounds of the durable outbox and the one retry policy of every output."""

    max_rows: int = 100_000  # pending + dead-lettered rows, all outputs together
    max_age_seconds: float = 86_400.0  # older pending rows are dropped
    dedup_seconds: float = 86_400.0  # delivered ids are remembered this long
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    max_retry_after_seconds: float = 900.0  # cap on a server's Retry-After
    synchronous: str = "batched"  # batched | full | normal (see outbox.py)
    sync_interval_seconds: float = 0.1  # batched: commits are fsynced at most this long after they are made
    dispatch: str = "auto"  # thread | process | auto: a child process when a network output is configured


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """Everything the alert stage needs from the app config."""

    outputs: tuple[OutputSettings, ...] = ()
    throttle: ThrottleSettings = ThrottleSettings()
    outbox: OutboxSettings = OutboxSettings()
    cluster_name: str | None = None


# -- parsing ---------------------------------------------------------------------------------
def parse_outputs(raw: object, where: str = "outputs", location: Location | None = None,
                  environ: Mapping[str, str] | None = None) -> list[OutputSettings]:
    """Validate the `outputs` list; names must be unique."""
    env = os.environ if environ is None else environ
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of outputs, got {type_name(raw)}", location)
    outputs: list[OutputSettings] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        fields = Fields(item, f"{where}[{index}]", location, env)
        output = _parse_output(fields)
        if output.name in seen:
            fields.fail(f"duplicate output name {output.name!r}", "name")
        seen.add(output.name)
        outputs.append(output)
    return outputs


def _parse_output(f: Fields) -> OutputSettings:
    name = f.required_text("name")
    if not _NAME.fullmatch(name):
        f.fail("use letters, digits, '.', '_' or '-' (at most 64)", "name")
    if not f.has("type"):
        f.fail(f"is required (one of {', '.join(OUTPUT_PARSERS)})", "type")
    kind = f.choice("type", tuple(OUTPUT_PARSERS), "")
    output = OUTPUT_PARSERS[kind](f, name, _parse_route(f))
    f.finish()
    return output


def _parse_route(f: Fields) -> RouteSettings:
    text = f.text("min_priority")
    priority = Priority.DEBUG
    if text is not None:
        parsed = Priority.parse(text)
        if parsed is None:
            f.fail(f"unknown priority {text!r} (use one of: {', '.join(p.name.lower() for p in Priority)})",
                   "min_priority")
        priority = parsed
    return RouteSettings(priority, f.texts("include_rules", ("*",)), f.texts("exclude_rules"),
                         f.texts("include_tags"), f.texts("exclude_tags"),
                         f.texts("include_clusters"), f.texts("exclude_clusters"))


def _stdout(f: Fields, name: str, route: RouteSettings) -> StdoutSettings:
    return StdoutSettings(name, route, f.choice("format", ("json", "text"), "json"))


def _file(f: Fields, name: str, route: RouteSettings) -> FileSettings:
    return FileSettings(name, f.required_text("path"), route, f.flag("fsync", True))


def _slack(f: Fields, name: str, route: RouteSettings) -> SlackSettings:
    webhook_url, token = f.secret("webhook_url"), f.secret("token")
    channel, base_url = f.text("channel"), f.text("base_url")
    if (webhook_url is None) == (token is None):
        f.fail("give webhook_url_env/webhook_url_file, or token_env/token_file with channel")
    if token is not None and channel is None:
        f.fail("is required with a bot token", "channel")
    if webhook_url is not None and (problem := url_problem(webhook_url.reveal())):
        f.fail(f"{webhook_url.origin} is {problem}", "webhook_url")
    if base_url is not None and (problem := url_problem(base_url)):
        f.fail(f"expected an http(s) URL: it is {problem}", "base_url")
    return SlackSettings(name, webhook_url, token, channel, base_url, route, _timeout(f), _template(f))


def _sns(f: Fields, name: str, route: RouteSettings) -> SnsSettings:
    arn = f.required_text("topic_arn")
    parsed = _SNS_ARN.fullmatch(arn)
    if parsed is None:
        f.fail(f"not an SNS topic ARN: {arn!r}", "topic_arn")
    region = f.text("region") or parsed.group("region")
    endpoint = f.text("endpoint_url")
    if endpoint is not None and (problem := url_problem(endpoint)):
        f.fail(f"expected an http(s) URL: it is {problem}", "endpoint_url")
    group = f.text("message_group_id", "detector")
    assert group is not None
    return SnsSettings(name, arn, region, endpoint, f.text("profile"), group, route, _timeout(f))


def _webhook(f: Fields, name: str, route: RouteSettings) -> WebhookSettings:
    url = f.secret("url", inline=True)
    if url is None:
        f.fail("give url, url_env or url_file")
    if problem := url_problem(url.reveal()):
        f.fail(f"{url.origin} is {problem}", "url")
    headers = f.text_map("headers")
    secret_headers = f.secret_map("headers")
    for header in [*headers, *secret_headers]:
        if not _HEADER.fullmatch(header):
            f.fail(f"invalid header name {header!r}", "headers")
    template = _template(f)
    content_type = f.text("content_type", "application/json" if template is None else "text/plain")
    assert content_type is not None
    client_cert, client_key = f.text("client_cert"), f.text("client_key")
    if client_key is not None and client_cert is None:
        f.fail("needs client_cert", "client_key")
    for key in ("ca_file", "client_cert", "client_key"):
        path = f.text(key)
        if path is not None and not os.path.isfile(path):
            f.fail(f"no such file: {path}", key)
    hmac_header = f.text("hmac_header", "X-Detector-Signature") or ""
    if not _HEADER.fullmatch(hmac_header):
        f.fail(f"invalid header name {hmac_header!r}", "hmac_header")
    return WebhookSettings(
        name, url, f.choice("method", _METHODS, "post").upper(), tuple(headers.items()),
        tuple(secret_headers.items()), _timeout(f), f.flag("tls_verify", True), f.text("ca_file"),
        client_cert, client_key, template, content_type, f.secret("hmac_secret"),
        hmac_header, route)


def _template(f: Fields) -> str | None:
    """The output's `template`, checked to compile."""
    template = f.text("template")
    if template is not None:
        try:
            compile_template(template)
        except TemplateError as exc:
            f.fail(str(exc), "template")
    return template


def _timeout(f: Fields) -> float:
    timeout = f.number("timeout", DEFAULT_TIMEOUT, minimum=0.001)
    if timeout > 300:
        f.fail("at most 300 seconds", "timeout")
    return timeout


def url_problem(url: str) -> str | None:
    """Why `url` cannot be sent to (None if it can), without quoting it (it may be a secret):
    an http(s) URL with a host, a valid port, and nothing urllib3 or requests would refuse
    later, inside a delivery worker."""
    if not url.lower().startswith(("https://", "http://")):
        return "not an http(s) URL"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "not a valid URL (it holds blanks or control characters)"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port out of range or not a number
        if not parts.hostname:
            return "not a valid URL (no host)"
        requests.PreparedRequest().prepare_url(url, None)
        parse_url(url)
    except (ValueError, requests.RequestException, LocationParseError):
        return "not a valid URL (bad host, port or brackets)"
    return None


OUTPUT_PARSERS: dict[str, Callable[[Fields, str, RouteSettings], OutputSettings]] = {
    "stdout": _stdout,
    "file": _file,
    "slack": _slack,
    "sns": _sns,
    "webhook": _webhook,
}


def parse_throttle(raw: object, where: str = "throttle", location: Location | None = None) -> ThrottleSettings:
    """Validate the `throttle` section (absent: throttling off)."""
    if raw is None:
        return ThrottleSettings()
    f = Fields(raw, where, location)
    window = f.number("window", 0.0)
    key = f.texts("key", ("rule",))
    overrides: list[ThrottleOverride] = []
    items = f.value("rules") or []
    if not isinstance(items, list):
        f.fail(f"expected a list, got {type_name(items)}", "rules")
    for index, item in enumerate(items):
        o = Fields(item, f"{where}.rules[{index}]", location)
        rules = o.texts("rules")
        if not rules:
            o.fail("is required (rule names or globs)", "rules")
        overrides.append(ThrottleOverride(rules, o.number("window", window), o.texts("key", key)))
        o.finish()
    f.finish()
    return ThrottleSettings(window, key, tuple(overrides))


def parse_outbox(raw: object, where: str = "outbox", location: Location | None = None) -> OutboxSettings:
    """Validate the `outbox` section (absent: defaults)."""
    if raw is None:
        return OutboxSettings()
    f = Fields(raw, where, location)
    d = OutboxSettings()
    max_age = f.number("max_age_seconds", d.max_age_seconds, minimum=1)
    settings = OutboxSettings(
        max_rows=f.integer("max_rows", d.max_rows, minimum=1),
        max_age_seconds=max_age,
        dedup_seconds=f.number("dedup_seconds", max(d.dedup_seconds, max_age), minimum=1),
        retry_initial_seconds=f.number("retry_initial_seconds", d.retry_initial_seconds, minimum=0.001),
        retry_max_seconds=f.number("retry_max_seconds", d.retry_max_seconds, minimum=0.001),
        max_retry_after_seconds=f.number("max_retry_after_seconds", d.max_retry_after_seconds),
        synchronous=f.choice("synchronous", ("batched", "full", "normal"), d.synchronous),
        sync_interval_seconds=f.number("sync_interval_seconds", d.sync_interval_seconds, minimum=0.001),
        dispatch=f.choice("dispatch", ("auto", "thread", "process"), d.dispatch),
    )
    if settings.retry_max_seconds < settings.retry_initial_seconds:
        f.fail("must be >= retry_initial_seconds", "retry_max_seconds")
    if settings.sync_interval_seconds > MAX_SYNC_INTERVAL:
        f.fail(f"must be <= {MAX_SYNC_INTERVAL:g} (seconds of alerts a power loss may take)", "sync_interval_seconds")
    f.finish()
    return settings


def parse_delivery(raw: Mapping[str, object], location: Location | None = None,
                   environ: Mapping[str, str] | None = None) -> DeliverySettings:
    """The delivery keys of an app config mapping: outputs, throttle, outbox, cluster_name."""
    cluster = raw.get("cluster_name")
    if cluster is not None and (not isinstance(cluster, str) or not cluster.strip()):
        raise ConfigError(f"cluster_name: expected a non-empty string, got {type_name(cluster)}", location)
    return DeliverySettings(
        outputs=tuple(parse_outputs(raw.get("outputs"), "outputs", location, environ)),
        throttle=parse_throttle(raw.get("throttle"), "throttle", location),
        outbox=parse_outbox(raw.get("outbox"), "outbox", location),
        cluster_name=cluster,
    )
