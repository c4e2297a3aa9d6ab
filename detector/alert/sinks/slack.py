"""Slack output through slack-sdk: an incoming webhook, or a bot token posting to a channel.

The message is Block Kit inside a coloured attachment: a header with the priority's emoji and the
rule, the alert's output line, the key fields (user, verb, resource, namespace/name, source IP,
user agent, cluster) and a context line (time, host, id). slack-sdk's own retry handlers are
turned off: retries belong to the outbox, so that a 429's Retry-After is honoured across time
without holding a worker. slack-sdk's logger is silenced because its debug lines quote the URL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import WebClient
from slack_sdk.webhook import WebhookClient

from detector.alert.http import transport_error
from detector.alert.model import Alert
from detector.alert.secret import Secret
from detector.alert.settings import SlackSettings
from detector.alert.sink import DeliveryError, classify_status, parse_retry_after, snippet

_SILENT = logging.getLogger("detector.alert.sinks.slack.sdk")
_SILENT.disabled = True
_STYLE = {  # priority label -> (colour, emoji)
    "Emergency": ("#7a0019", ":rotating_light:"),
    "Alert": ("#b00020", ":rotating_light:"),
    "Critical": ("#e01e5a", ":red_circle:"),
    "Error": ("#e8590c", ":large_orange_circle:"),
    "Warning": ("#ecb22e", ":warning:"),
    "Notice": ("#2eb67d", ":large_green_circle:"),
    "Informational": ("#36c5f0", ":information_source:"),
    "Debug": ("#9e9e9e", ":white_circle:"),
}
_FIELDS = (  # label, output fields joined by "/"
    ("User", ("ka.user.name",)),
    ("Verb", ("ka.verb",)),
    ("Resource", ("ka.target.resource", "ka.target.subresource")),
    ("Namespace/Name", ("ka.target.namespace", "ka.target.name")),
    ("Source IP", ("ka.sourceips",)),
    ("User agent", ("ka.useragent",)),
    ("Cluster", ("ka.cluster.name",)),
)
# Web API error codes worth trying again; every other `ok: false` is permanent.
_RETRYABLE_API_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                                   "request_timeout", "team_added_to_org"})


class SlackSink:
    """Posts each alert as one Slack message."""

    def __init__(self, settings: SlackSettings) -> None:
        self.name = settings.name
        self._timeout = settings.timeout
        # slack-sdk annotates timeout as int; urllib takes any positive number.
        timeout = cast(int, settings.timeout)
        self._webhook: WebhookClient | None = None
        self._web: WebClient | None = None
        self._channel = settings.channel or ""
        if settings.webhook_url is not None:
            self._webhook = WebhookClient(url=settings.webhook_url.reveal(), timeout=timeout,
                                          logger=_SILENT, retry_handlers=[])
        else:
            assert settings.token is not None
            extra: dict[str, Any] = {"base_url": settings.base_url} if settings.base_url else {}
            self._web = WebClient(token=settings.token.reveal(), timeout=timeout, logger=_SILENT,
                                  retry_handlers=[], **extra)
        self._secrets = [s for s in (settings.webhook_url, settings.token) if s is not None]

    @property
    def secrets(self) -> Sequence[Secret]:
        return self._secrets

    def encode(self, alert: Alert) -> dict[str, Any]:
        return slack_message(alert)

    def send(self, alert: Alert) -> None:
        message = self.encode(alert)
        try:
            if self._webhook is not None:
                response = self._webhook.send_dict(message)
                if response.status_code != 200:
                    raise classify_status(response.status_code, response.body or "", _headers(response.headers))
            else:
                assert self._web is not None
                self._web.chat_postMessage(channel=self._channel, **message)
        except SlackApiError as exc:
            raise _api_error(exc) from None
        except (SlackClientError, OSError, ValueError) as exc:
            raise transport_error(exc, self._timeout) from None

    def close(self) -> None:
        return None


def slack_message(alert: Alert) -> dict[str, Any]:
    """The Block Kit message (text fallback + one coloured attachment)."""
    colour, emoji = _STYLE.get(alert.priority, ("#9e9e9e", ":bell:"))
    fields = [{"type": "mrkdwn", "text": f"*{label}*\n{_escape(value)[:1900]}"}
              for label, value in key_fields(alert)]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{emoji} {alert.priority}: {alert.rule}"[:150],
                                    "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape(alert.output)[:2900] or "-"}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields[:10]})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": _escape(f"{alert.time} · {alert.hostname} · id {alert.id}")}]})
    return {
        "text": _escape(f"[{alert.priority}] {alert.rule}: {alert.message}")[:2900],
        "attachments": [{"color": colour, "blocks": blocks}],
    }


def key_fields(alert: Alert) -> list[tuple[str, str]]:
    """(label, value) for each key field the alert carries, in display order."""
    out: list[tuple[str, str]] = []
    for label, names in _FIELDS:
        values = [_show(alert.output_fields.get(name)) for name in names]
        shown = "/".join(v for v in values if v)
        if shown:
            out.append((label, shown))
    return out


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _escape(text: str) -> str:
    """Slack's three control characters (this also defuses `<!channel>` mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (headers or {}).items():
        out[str(key)] = str(value[0] if isinstance(value, list) and value else value)
    return out


def _api_error(exc: SlackApiError) -> DeliveryError:
    response = exc.response
    status = int(getattr(response, "status_code", 0) or 0)
    data = getattr(response, "data", None)
    code = str(data.get("error", "")) if isinstance(data, dict) else ""
    headers = _headers(getattr(response, "headers", None))
    if status != 200:
        return classify_status(status, code, headers)
    retryable = code in _RETRYABLE_API_ERRORS
    retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after")) if retryable else None
    return DeliveryError(f"Slack API error: {snippet(code) or 'unknown'}", retryable=retryable,
                         retry_after=retry_after, status=status)
