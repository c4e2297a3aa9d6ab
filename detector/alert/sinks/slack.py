"""Slack output: an incoming webhook, or a bot token posting to a channel (`chat.postMessage`).

The message is Block Kit inside a coloured attachment: a header with the priority's emoji and the
rule, the alert's output line, the key fields (user, verb, resource, namespace/name, source IP,
user agent, cluster) and a context line (time, host, id). It is sent through the shared
`HttpTransport`, as webhooks are, not through slack-sdk: slack-sdk's urllib client reads a
response whole and bounds each socket read, not the request, so a hostile or broken endpoint
could grow the delivery process without bound or hold its worker for ever. Retries belong to
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
        self._channel = settings.channel
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
        message = slack_message(alert)
        return message if self._channel is None else {"channel": self._channel, **message}

    def send(self, alert: Alert) -> None:
        response = self._transport.request("POST", self._url, orjson.dumps(self.encode(alert)), {})
        if self._channel is not None:  # the Web API answers 200 with `ok: false` on errors
            _check_api_response(response.body, response.headers, response.status)

    def close(self) -> None:
        self._transport.close()


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
