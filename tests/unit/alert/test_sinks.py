"""Tests for the sinks' encodings and the shared error classification (no network here)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import os
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from detector.alert.secret import Secret, scrub
from detector.alert.settings import FileSettings, SlackSettings, StdoutSettings, WebhookSettings, parse_outputs
from detector.alert.sink import DeliveryError, classify_status, parse_retry_after
from detector.alert.sinks.file import FileSink
from detector.alert.sinks.slack import SlackSink, slack_message
from detector.alert.sinks.sns import attributes, fit_message, subject
from detector.alert.sinks.stdout import StdoutSink
from detector.alert.sinks.webhook import WebhookSink, sign
from detector.alert.template import TemplateError, compile_template
from detector.errors import ConfigError
from detector.rules.model import FieldValue, Priority
from tests.support.alertkit import make_alert

ALERT = make_alert(1, rule="Attach/Exec Pod", priority=Priority.CRITICAL, tags=("k8s", "mitre_execution"),
                   cluster="prod", objectRef={"resource": "pods", "subresource": "exec", "namespace": "web",
                                              "name": "api-0"})


def test_slack_block_kit_message() -> None:
    """Header with emoji and rule, the output line, one field per output field (evt.time is the
    context's time), source and tags in a context block, then time, host and id; colour by priority."""
    message = slack_message(ALERT)
    attachment = message["attachments"][0]
    header, output, fields, about, context = attachment["blocks"]
    assert attachment["color"] == "#e01e5a"
    assert header["text"]["text"] == ":red_circle: Critical: Attach/Exec Pod"
    assert output["text"]["text"] == ALERT.output
    shown = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in fields["fields"]}
    assert shown == {"*ka.user.name*": "alice", "*ka.verb*": "create", "*ka.target.resource*": "pods",
                     "*ka.target.subresource*": "exec", "*ka.target.namespace*": "web", "*ka.target.name*": "api-0",
                     "*ka.sourceips*": "10.0.0.7", "*ka.useragent*": "kubectl/v1.29.0", "*ka.cluster.name*": "prod"}
    assert [e["text"] for e in about["elements"]] == ["*source* k8s_audit", "*tags* k8s, mitre_execution"]
    assert ALERT.id in context["elements"][0]["text"] and ALERT.time in context["elements"][0]["text"]
    assert message["text"].startswith("[Critical] Attach/Exec Pod: ")


def test_slack_shows_the_rule_output_fields_first() -> None:
    """The rule's own output fields come first, in its template's order, lists joined and a
    missing value as <NA>; then the key fields the rule did not render."""
    alert = make_alert(4, rule="Create Privileged Pod", fields={
        "ka.target.name": "evil", "ka.req.pod.containers.image": ["nginx:1.25", "busybox"],
        "ka.req.pod.containers.privileged": [True], "ka.req.pod.host_pid": None})
    (section,) = [b for b in slack_message(alert)["attachments"][0]["blocks"] if "fields" in b]
    names = [f["text"].split("\n")[0].strip("*") for f in section["fields"]]
    assert names[:4] == ["ka.target.name", "ka.req.pod.containers.image", "ka.req.pod.containers.privileged",
                         "ka.req.pod.host_pid"]
    assert [f["text"].split("\n")[1] for f in section["fields"][:4]] == ["evil", "nginx:1.25, busybox", "true",
                                                                        "&lt;NA&gt;"]
    assert "ka.user.name" in names and "evt.time" not in names


def test_slack_escapes_control_characters_and_limits_lengths() -> None:
    """`<!channel>` in event data cannot ping anyone; long outputs, values and many fields are
    cut to Slack's limits (10 fields a section, 2000 characters a field) with a marker."""
    alert = make_alert(2, rule="R" * 300, fields={"ka.user.name": "<!channel> & co"})
    message = slack_message(alert)
    blocks = message["attachments"][0]["blocks"]
    assert len(blocks[0]["text"]["text"]) <= 150
    assert "&lt;!channel&gt; &amp; co" in blocks[2]["fields"][0]["text"] and "<!channel>" not in str(message)
    many: dict[str, FieldValue] = {f"jevt.value[/f{n}]": "&" * 5000 for n in range(40)}
    alert = msgspec.structs.replace(make_alert(5, fields=many), output="x" * 5000, message="y" * 5000)
    big = slack_message(alert)
    blocks = big["attachments"][0]["blocks"]
    sections = [b["fields"] for b in blocks if "fields" in b]
    assert [len(s) for s in sections] == [10, 10, 10]
    assert all(len(f["text"]) <= 2000 and f["text"].endswith("&amp;…(truncated)") for s in sections for f in s)
    assert len(blocks[1]["text"]["text"]) <= 3000 and len(big["text"]) <= 3000
    more = len(alert.output_fields) - 1 - 30  # evt.time is not a field
    assert more > 10 and blocks[-2]["elements"][-1]["text"] == f"{more} more output fields not shown"


def test_slack_template_replaces_the_text_line() -> None:
    """A Slack output's `template` renders the text line and the notification text with the
    `${field}` substitution of webhooks; values are escaped, the template's own markup is not."""
    sink = SlackSink(SlackSettings("s", Secret("http://127.0.0.1:9/hook", "test"),
                                   template="*${rule}* by `${ka.user.name}` on <https://x.test|${ka.target.name}>"))
    alert = make_alert(6, fields={"ka.target.name": "<!here>"})
    message = sink.encode(alert)
    assert message["text"] == "*Test rule* by `alice` on <https://x.test|&lt;!here&gt;>"
    assert message["attachments"][0]["blocks"][1]["text"]["text"] == message["text"]
    sink.close()
    with pytest.raises(ConfigError, match=r"outputs\[0\]\.template: column 1"):
        parse_outputs([{"name": "s", "type": "slack", "webhook_url_env": "U", "template": "${"}],
                      environ={"U": "https://hooks.slack.test/x"})


def test_sns_subject_and_attributes() -> None:
    """Subject is printable ASCII within 100 chars; attributes carry priority, rule, tags."""
    assert subject(ALERT) == "[Critical] Attach/Exec Pod"
    assert subject(make_alert(rule="Zugriff auf Geheimnis \u2013 \u00f6" + "x" * 200)).isascii()
    assert len(subject(make_alert(rule="x" * 200))) == 100
    attrs = attributes(ALERT)
    assert attrs["priority"] == {"DataType": "String", "StringValue": "Critical"}
    assert attrs["tags"] == {"DataType": "String.Array", "StringValue": '["k8s","mitre_execution"]'}
    assert attrs["cluster"]["StringValue"] == "prod" and "tags" not in attributes(make_alert())


def test_sns_message_fits_the_limit() -> None:
    """A huge output field is cut so the message stays under SNS's 256 KiB."""
    data = make_alert(fields={"jevt.value[/requestObject]": "x" * 400_000}).to_dict()
    text = fit_message(data)
    assert len(text.encode()) < 256 * 1024
    parsed = orjson.loads(text)
    assert parsed["truncated"] is True and parsed["rule"] == "Test rule"
    assert fit_message(ALERT.to_dict()) == orjson.dumps(ALERT.to_dict()).decode()



def test_sns_cut_message_keeps_the_json_shape() -> None:
    """Cutting keeps every field's type: a long list keeps its first items and stays a list,
    strings end in the marker, short values are untouched; the hostname is an attribute."""
    many = [f"registry.example/app-{n}:1.0" for n in range(50_000)]
    data = make_alert(fields={"ka.req.pod.containers.image": many, "ka.user.name": "alice"}).to_dict()
    parsed = orjson.loads(fit_message(data))
    images = parsed["output_fields"]["ka.req.pod.containers.image"]
    assert isinstance(images, list) and images[:2] == many[:2] and images[-1] == "...(truncated)"
    assert parsed["output_fields"]["ka.user.name"] == "alice" and parsed["truncated"] is True
    assert attributes(ALERT)["hostname"] == {"DataType": "String", "StringValue": "test-host"}

def webhook(**overrides: Any) -> WebhookSink:
    """A webhook sink for encoding tests (it never sends)."""
    return WebhookSink(dataclasses.replace(WebhookSettings("w", Secret("http://127.0.0.1:9/x", "test")), **overrides))


def test_webhook_body_is_the_falco_json() -> None:
    """Without a template the body is exactly the alert's Falco JSON (falcosidekick's input)."""
    sink = webhook()
    body = orjson.loads(sink.encode(ALERT))
    assert body == orjson.loads(orjson.dumps(ALERT.to_dict()))
    assert {"time", "rule", "priority", "output", "source", "tags", "output_fields", "hostname"} <= body.keys()
    sink.close()


def test_webhook_template_with_json_escaping() -> None:
    """Template values are escaped for JSON bodies; ${json} inserts the whole object."""
    sink = webhook(template='{"text": "${priority}: ${output}", "user": "${ka.user.name}", "a": ${json}}',
                   content_type="application/json")
    alert = make_alert(4, fields={"ka.user.name": 'mallory "quoted"\n'})
    body = orjson.loads(sink.encode(alert))
    assert body["user"] == 'mallory "quoted"\n' and body["a"]["id"] == alert.id
    assert body["text"].startswith("Warning: ")
    sink.close()


def test_template_syntax() -> None:
    """`$$` is a dollar; a lone `$` is an error naming its column; missing values are <NA>."""
    assert compile_template("cost $$5 ${rule} ${nope}").render(ALERT) == "cost $5 Attach/Exec Pod <NA>"
    assert compile_template("${tags}").render(ALERT) == "k8s,mitre_execution"
    with pytest.raises(TemplateError, match="column 3"):
        compile_template("ab$c")


def test_hmac_signature() -> None:
    """The signature is sha256=<hex HMAC of the exact body>."""
    body = b'{"a":1}'
    expected = hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    assert sign(Secret("k3y", "t"), body) == f"sha256={expected}"


def test_stdout_sink_formats() -> None:
    """JSON lines or Falco's text line."""
    stream = io.BytesIO()
    StdoutSink(StdoutSettings("o"), stream).send(ALERT)
    StdoutSink(StdoutSettings("o", format="text"), stream).send(ALERT)
    json_line, text_line = stream.getvalue().decode().splitlines()
    assert orjson.loads(json_line)["id"] == ALERT.id and "[Attach/Exec Pod]" in text_line


def test_file_sink_appends_and_follows_rotation(tmp_path: Path) -> None:
    """Lines are appended (0600); after the file is moved away a new one is created."""
    path = tmp_path / "alerts.jsonl"
    sink = FileSink(FileSettings("f", str(path)))
    sink.send(ALERT)
    os.rename(path, tmp_path / "alerts.jsonl.1")
    sink.send(make_alert(2))
    sink.close()
    assert [orjson.loads(x)["id"] for x in path.read_text().splitlines()] == [make_alert(2).id]
    assert (tmp_path / "alerts.jsonl.1").read_text().count("\n") == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigError, match="does not exist"):
        FileSink(FileSettings("f", str(tmp_path / "nope" / "a.jsonl")))


def test_file_sink_write_errors_are_retryable(tmp_path: Path) -> None:
    """A path that cannot be opened is a retryable delivery error naming the file."""
    (tmp_path / "dir.jsonl").mkdir()
    sink = FileSink(FileSettings("f", str(tmp_path / "dir.jsonl")))
    with pytest.raises(DeliveryError, match="Is a directory") as caught:
        sink.send(ALERT)
    assert caught.value.retryable


@pytest.mark.parametrize(("status", "retryable"), [
    (500, True), (502, True), (503, True), (408, True), (429, True), (425, True),
    (400, False), (401, False), (403, False), (404, False), (410, False), (413, False), (301, False),
])
def test_status_classification(status: int, retryable: bool) -> None:
    """5xx, 408, 425 and 429 are worth retrying; every other 4xx (and redirects) is permanent."""
    error = classify_status(status, "body", {"Retry-After": "3"})
    assert error.retryable is retryable and error.status == status
    assert error.retry_after == (3.0 if retryable else None)


def test_retry_after_forms() -> None:
    """Delta seconds or an HTTP date; garbage is ignored."""
    now = datetime(2025, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(90)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_error_bodies_are_cut_and_masked() -> None:
    """A response body is one line, at most 200 chars, with credentials masked."""
    error = classify_status(400, "bad token=abc123\n" + "x" * 500)
    assert "abc123" not in error.message and error.message.endswith("...") and "\n" not in error.message


def test_scrub_removes_urls_and_their_paths() -> None:
    """A secret URL is scrubbed whole and by its path (clients quote the path alone)."""
    url = Secret("https://hooks.slack.com/services/T0/B0/XyZ", "env U")
    assert scrub("POST /services/T0/B0/XyZ failed", [url]) == "POST **** failed"
    assert scrub(f"to {url.reveal()}", [url]) == "to ****"
