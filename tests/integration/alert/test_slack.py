"""Slack delivery through slack-sdk against a real HTTP server on 127.0.0.1 standing in for
Slack: incoming webhook and Web API (bot token + channel, slack-sdk's base_url)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from detector.alert.events import DeliveryEvent, EventKind
from detector.alert.settings import DeliverySettings, OutboxSettings, parse_outputs
from detector.alert.stage import Delivery, open_delivery
from detector.rules.model import FieldValue, Priority
from tests.support.alertkit import make_match
from tests.support.receiver import Receiver, Reply, free_port, wait_for

FAST = OutboxSettings(retry_initial_seconds=0.05, retry_max_seconds=0.2)
HOOK_PATH = "/services/T0000/B0000/s3cr3tHookPart"


def delivery(tmp_path: Path, output: dict[str, Any], env: dict[str, str], events: list[DeliveryEvent]) -> Delivery:
    settings = DeliverySettings(outputs=tuple(parse_outputs([output], environ=env)), outbox=FAST,
                                cluster_name="prod-eu")
    return open_delivery(settings, tmp_path, events.append, hostname="h", poll_interval=0.05)


def test_incoming_webhook_block_kit_and_429(tmp_path: Path) -> None:
    """The message arrives as Block Kit with the key fields; a 429's Retry-After is honoured
    and the alert is then delivered once."""
    events: list[DeliveryEvent] = []
    slack = Receiver(default=Reply(200, b"ok"))
    slack.plan.append(Reply(429, b"rate_limited", {"Retry-After": "1"}))
    output = {"name": "ops-slack", "type": "slack", "webhook_url_env": "SLACK_WEBHOOK_URL", "timeout": 2}
    with slack:
        env = {"SLACK_WEBHOOK_URL": slack.url + HOOK_PATH}
        with delivery(tmp_path, output, env, events) as d:
            match = make_match("Attach/Exec Pod", Priority.CRITICAL, fields={"ka.user.name": "alice"},
                               objectRef={"resource": "pods", "subresource": "exec", "namespace": "web",
                                          "name": "api-0"})
            (alert,) = d.alerts_for([match])
            d.submit([alert])
            wait_for(lambda: len(slack.accepted()) == 1)
    limited, ok = slack.received
    assert (limited.status, ok.status) == (429, 200) and ok.path == HOOK_PATH
    assert ok.at - limited.at >= 0.95
    message = orjson.loads(ok.body)
    header, output_line, fields, _about, context = message["attachments"][0]["blocks"]
    assert header["text"]["text"] == ":red_circle: Critical: Attach/Exec Pod"
    assert output_line["text"]["text"] == alert.output
    texts = [f["text"] for f in fields["fields"]]
    assert "*ka.user.name*\nalice" in texts and "*ka.target.name*\napi-0" in texts
    assert "*ka.cluster.name*\nprod-eu" in texts
    assert alert.id in context["elements"][0]["text"]
    assert [e.kind for e in events] == [EventKind.RETRY, EventKind.DELIVERED]
    assert events[0].retry_in == 1.0


def test_rule_output_fields_tags_source_and_template(tmp_path: Path) -> None:
    """Slack shows every field of the rule's output (pod name, images of "Create Privileged
    Pod"), its tags and source, and the output's own template as the text line."""
    events: list[DeliveryEvent] = []
    slack = Receiver(default=Reply(200, b"ok"))
    output = {"name": "ops-slack", "type": "slack", "webhook_url_env": "SLACK_WEBHOOK_URL", "timeout": 2,
              "template": ":rotating_light: *${rule}* by ${ka.user.name}: pod ${ka.resp.name} (${ka.target.namespace})"}
    fields: dict[str, FieldValue] = {
        "ka.user.name": "mallory", "ka.resp.name": "privileged-pod", "ka.target.resource": "pods",
        "ka.target.namespace": "default", "ka.req.pod.containers.image": ["nginx:1.25", "alpine:3.19"]}
    with slack:
        env = {"SLACK_WEBHOOK_URL": slack.url + HOOK_PATH}
        with delivery(tmp_path, output, env, events) as d:
            match = make_match("Create Privileged Pod", Priority.WARNING, fields=fields,
                               tags=("k8s", "mitre_privilege_escalation"))
            (alert,) = d.alerts_for([match])
            d.submit([alert])
            wait_for(lambda: len(slack.accepted()) == 1)
    message = orjson.loads(slack.accepted()[0].body)
    _header, text, section, about, _context = message["attachments"][0]["blocks"]
    expected = ":rotating_light: *Create Privileged Pod* by mallory: pod privileged-pod (default)"
    assert text["text"]["text"] == message["text"] == expected
    shown = dict(f["text"].split("\n", 1) for f in section["fields"])
    assert list(shown)[:5] == [f"*{name}*" for name in fields]
    assert shown["*ka.resp.name*"] == "privileged-pod"
    assert shown["*ka.req.pod.containers.image*"] == "nginx:1.25, alpine:3.19"
    assert [e["text"] for e in about["elements"]] == ["*source* k8s_audit", "*tags* k8s, mitre_privilege_escalation"]


def test_bot_token_and_channel(tmp_path: Path) -> None:
    """chat.postMessage with the bot token; `ok: false` errors are classified (channel_not_found
    is permanent, ratelimited retried)."""
    events: list[DeliveryEvent] = []
    slack = Receiver(default=Reply(200, b'{"ok": true, "ts": "1.2"}'))
    slack.plan.extend([Reply(200, b'{"ok": false, "error": "ratelimited"}', {"Retry-After": "0"}),
                       Reply(200, b'{"ok": true}'),
                       Reply(200, b'{"ok": false, "error": "channel_not_found"}')])
    output = {"name": "bot", "type": "slack", "token_env": "SLACK_TOKEN", "channel": "#security",
              "base_url": "", "timeout": 2}
    with slack:
        output["base_url"] = slack.url + "/api/"
        with delivery(tmp_path, output, {"SLACK_TOKEN": "xoxb-test-token"}, events) as d:
            d.submit(d.alerts_for([make_match("R1", auditID="a1"), make_match("R2", auditID="a2")]))
            wait_for(lambda: any(e.kind is EventKind.DEAD for e in events))
            (dead,) = d.outbox.rows(status="dead")
    first = slack.received[0]
    assert first.path == "/api/chat.postMessage" and first.headers["Authorization"] == "Bearer xoxb-test-token"
    assert orjson.loads(first.body)["channel"] == "#security"
    assert [e.kind for e in events] == [EventKind.RETRY, EventKind.DELIVERED, EventKind.DEAD]
    assert dead.rule == "R2" and dead.last_error == "Slack API error: channel_not_found"


def test_secrets_stay_out_of_errors(tmp_path: Path) -> None:
    """With Slack unreachable, the errors reported and stored never show the webhook URL."""
    events: list[DeliveryEvent] = []
    url = f"http://127.0.0.1:{free_port()}{HOOK_PATH}"
    output = {"name": "s", "type": "slack", "webhook_url_env": "URL", "timeout": 1}
    with delivery(tmp_path, output, {"URL": url}, events) as d:
        d.submit(d.alerts_for([make_match()]))
        wait_for(lambda: len(events) >= 2)
        stored = d.outbox.rows()[0].last_error
    assert stored == "connection refused"
    assert "s3cr3tHookPart" not in repr(events) and all(e.error == "connection refused" for e in events)
