"""Slack output: an incoming webhook, or a bot token posting to a channel (`chat.postMessage`).

The message is Block Kit inside a coloured attachment: a header with the priority's emoji and the
rule; the alert's output line, or the output's `template` rendered; one field per output field
(the rule's own output fields in the template's order, then the key fields every alert gets),
bounded (MAX_FIELDS, FIELD_VALUE_LIMIT); and context lines with the source and tags, then time,
host and id. Every value is escaped, so event data cannot mention `@channel`. It is sent
through the shared `HttpTransport`, as webhooks are, not through slack-sdk: slack-sdk's urllib
client reads a response whole and bounds each socket read, not the request, so a hostile or
broken endpoint could grow the delivery process without bound or hold its worker for ever. Retries belong to
the outbox, so that a 429's Retry-After is honoured across time without holding a worker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from detector.alert.http import HttpTransport
from detector.alert.model import Alert
from detector.alert.secret import Secret
from detector.alert.settings import SlackSettings
from detector.alert.sink import DeliveryError, parse_retry_after, snippet
from detector.alert.template import NA, BodyTemplate, compile_template, slack_escape

SLACK_API = "https://slack.com/api/"
API_BODY_CAP = 16 * 1024  # chat.postMessage echoes the message; "ok" comes first
_OK = re.compile(rb'^\s*\{\s*"ok"\s*:\s*(true|false)')
_ERROR = re.compile(rb'"error"\s*:\s*"([A-Za-z0-9_.-]{1,100})"')
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
MAX_FIELDS = 30  # Slack takes 10 fields per section block: at most 3 sections
FIELD_VALUE_LIMIT = 1000  # characters of a field's value as shown (Slack's cap on a field is 2000)
FIELD_NAME_LIMIT = 200
TEXT_LIMIT = 2900  # a section's text (Slack's cap is 3000)
TRUNCATED = "…(truncated)"
_HIDDEN_FIELDS = frozenset({"evt.time"})  # shown in the context line as `time`
# Web API error codes worth trying again; every other `ok: false` is permanent.
_RETRYABLE_API_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                                   "request_timeout", "team_added_to_org"})


class SlackSink:
    """Posts each alert as one Slack message."""

    def __init__(self, settings: SlackSettings) -> None:
        self.name = settings.name
        self._channel = settings.channel
        self._template: BodyTemplate | None = None
        if settings.template is not None:
            self._template = compile_template(settings.template, "slack")
        self._secrets = [s for s in (settings.webhook_url, settings.token) if s is not None]
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "detector"}
        if settings.webhook_url is not None:
            self._url = settings.webhook_url.reveal()
            cap = 1024
        else:
            assert settings.token is not None
            base = settings.base_url or SLACK_API
            self._url = base + ("" if base.endswith("/") else "/") + "chat.postMessage"
            headers["Authorization"] = f"Bearer {settings.token.reveal()}"
            cap = API_BODY_CAP
        self._transport = HttpTransport(timeout=settings.timeout, headers=headers, secrets=self._secrets,
                                        body_cap=cap)

    @property
    def secrets(self) -> Sequence[Secret]:
        return self._secrets

    def encode(self, alert: Alert) -> dict[str, Any]:
        message = slack_message(alert, self._template)
        return message if self._channel is None else {"channel": self._channel, **message}

    def send(self, alert: Alert) -> None:
        response = self._transport.request("POST", self._url, orjson.dumps(self.encode(alert)), {})
        if self._channel is not None:  # the Web API answers 200 with `ok: false` on errors
            _check_api_response(response.body, response.headers, response.status)

    def close(self) -> None:
        self._transport.close()


def slack_message(alert: Alert, template: BodyTemplate | None = None) -> dict[str, Any]:
    """The Block Kit message (text fallback + one coloured attachment); `template`, compiled
    with Slack escaping, replaces the output line and the notification text."""
    colour, emoji = _STYLE.get(alert.priority, ("#9e9e9e", ":bell:"))
    if template is None:
        text = _bounded(alert.output, TEXT_LIMIT)
        fallback = _bounded(f"[{alert.priority}] {alert.rule}: {alert.message}", TEXT_LIMIT)
    else:
        text = fallback = _cut_escaped(template.render(alert), TEXT_LIMIT)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{emoji} {alert.priority}: {alert.rule}"[:150],
                                    "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": text or "-"}},
    ]
    fields = [{"type": "mrkdwn", "text": f"*{_bounded(name, FIELD_NAME_LIMIT)}*\n{_bounded(value, FIELD_VALUE_LIMIT)}"}
              for name, value in shown_fields(alert)]
    shown = fields[:MAX_FIELDS]
    blocks.extend({"type": "section", "fields": shown[at:at + 10]} for at in range(0, len(shown), 10))
    about = [f"*source* {slack_escape(alert.source)}"]
    if alert.tags:
        about.append(f"*tags* {_bounded(', '.join(alert.tags), FIELD_VALUE_LIMIT)}")
    if len(fields) > MAX_FIELDS:
        about.append(f"{len(fields) - MAX_FIELDS} more output fields not shown")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in about]})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": slack_escape(f"{alert.time} · {alert.hostname} · id {alert.id}")}]})
    return {"text": fallback, "attachments": [{"color": colour, "blocks": blocks}]}


def shown_fields(alert: Alert) -> list[tuple[str, str]]:
    """(name, value as text) of each output field, in the alert's order: the rule's template
    fields (a missing value as `<NA>`), then the key fields added to every alert."""
    return [(name, _show(value)) for name, value in alert.output_fields.items() if name not in _HIDDEN_FIELDS]


def _show(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(_show(v) for v in value)
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def _bounded(text: str, limit: int) -> str:
    """`text` escaped for Slack, cut to `limit` characters with TRUNCATED at the end."""
    return _cut_escaped(slack_escape(text), limit)


def _cut_escaped(shown: str, limit: int) -> str:
    """Escaped text cut to `limit` characters, never inside an entity (`&amp;`)."""
    if len(shown) <= limit:
        return shown
    cut = shown[:limit - len(TRUNCATED)]
    amp = cut.rfind("&", len(cut) - 4)
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + TRUNCATED


def _check_api_response(body: bytes, headers: Mapping[str, str], status: int) -> None:
    """Raise the error a Web API answer carries (`{"ok": false, "error": "channel_not_found"}`)."""
    ok = _OK.match(body)
    if ok is not None and ok.group(1) == b"true":
        return
    found = _ERROR.search(body)
    code = found.group(1).decode() if found is not None else ""
    if ok is None and not code:
        raise DeliveryError(f"Slack API: unexpected response: {snippet(body[:200].decode('utf-8', 'replace'))}",
                            retryable=True, status=status)
    retryable = code in _RETRYABLE_API_ERRORS
    retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after")) if retryable else None
    raise DeliveryError(f"Slack API error: {code or 'unknown'}", retryable=retryable,
                        retry_after=retry_after, status=status)
