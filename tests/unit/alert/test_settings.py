"""Tests for detector.alert.settings: outputs, routes, throttle and outbox sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from detector.alert.settings import (
    OutboxSettings,
    SlackSettings,
    SnsSettings,
    ThrottleSettings,
    WebhookSettings,
    parse_delivery,
    parse_outbox,
    parse_outputs,
    parse_throttle,
)
from detector.errors import ConfigError, Location
from detector.rules.model import Priority

SLACK_URL = "https://hooks.slack.com/services/T000/B000/very-secret-part"
EXAMPLE = """
outputs:
  - name: ops-slack
    type: slack
    webhook_url_env: SLACK_WEBHOOK_URL
    min_priority: warning
    include_rules: ["*"]
    exclude_tags: [noisy]
  - name: siem
    type: webhook
    url_env: SIEM_URL
    hmac_secret_file: {hmac}
    headers: {{X-Team: sec}}
    timeout: 5
  - {{name: sns, type: sns, topic_arn: "arn:aws:sns:eu-west-1:123456789012:alerts", region: eu-west-1,
     endpoint_url: "http://127.0.0.1:5000"}}
"""


def outputs(raw: Any, **env: str) -> list[Any]:
    return parse_outputs(raw, "outputs", environ=env)


def error_of(raw: Any, **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        outputs(raw, **env)
    return str(caught.value)


def test_the_documented_example_parses(tmp_path: Path) -> None:
    """The example from the issue yields three typed outputs with their secrets resolved."""
    (tmp_path / "hmac").write_text("shared-secret\n")
    raw = yaml.safe_load(EXAMPLE.format(hmac=tmp_path / "hmac"))
    slack, siem, sns = outputs(raw["outputs"], SLACK_WEBHOOK_URL=SLACK_URL, SIEM_URL="https://siem.example/in")
    assert isinstance(slack, SlackSettings) and slack.webhook_url is not None
    assert slack.webhook_url.reveal() == SLACK_URL
    assert slack.route.min_priority is Priority.WARNING and slack.route.exclude_tags == ("noisy",)
    assert isinstance(siem, WebhookSettings) and siem.timeout == 5.0 and siem.headers == (("X-Team", "sec"),)
    assert siem.hmac_secret is not None and siem.hmac_secret.reveal() == "shared-secret"
    assert isinstance(sns, SnsSettings) and sns.endpoint_url == "http://127.0.0.1:5000" and not sns.fifo


def test_missing_env_var_names_the_key() -> None:
    """A missing variable is reported with the key path and the variable, nothing more."""
    raw = [{"name": "a", "type": "stdout"}, {"name": "siem", "type": "webhook", "url_env": "SIEM_URL"}]
    assert error_of(raw) == "outputs[1].url_env: environment variable SIEM_URL is not set"


def test_secret_values_never_print(tmp_path: Path) -> None:
    """Neither settings reprs nor errors show a secret value."""
    (slack,) = outputs([{"name": "s", "type": "slack", "webhook_url_env": "U"}], U=SLACK_URL)
    assert "very-secret-part" not in repr(slack) and "env U" in repr(slack)
    message = error_of([{"name": "s", "type": "slack", "webhook_url_env": "U"}], U="not-a-url-secret")
    assert "not-a-url-secret" not in message and message.startswith("outputs[0].webhook_url:")


def test_inline_secrets_are_refused() -> None:
    """A Slack URL or token written into the config is rejected, naming the alternatives."""
    message = error_of([{"name": "s", "type": "slack", "webhook_url": SLACK_URL}])
    assert message == "outputs[0].webhook_url: secrets are not accepted inline; use webhook_url_env or webhook_url_file"
    assert SLACK_URL not in message


def test_secret_files(tmp_path: Path) -> None:
    """`*_file` keys read the file; a missing or empty file is an error naming it."""
    (tmp_path / "token").write_text("xoxb-1\n")
    (slack,) = outputs([{"name": "s", "type": "slack", "token_file": str(tmp_path / "token"), "channel": "#c"}])
    assert slack.token.reveal() == "xoxb-1"
    (tmp_path / "empty").write_text("\n")
    message = error_of([{"name": "s", "type": "slack", "token_file": str(tmp_path / "empty"), "channel": "#c"}])
    assert message == f"outputs[0].token_file: {tmp_path / 'empty'} is empty"
    assert "No such file" in error_of([{"name": "s", "type": "slack", "token_file": "/nope", "channel": "#c"}])


@pytest.mark.parametrize(("raw", "expected"), [
    ({"type": "stdout"}, "outputs[0].name: is required"),
    ({"name": "x"}, "outputs[0].type: is required (one of stdout, file, slack, sns, webhook)"),
    ({"name": "x", "type": "pager"},
     "outputs[0].type: expected one of stdout, file, slack, sns, webhook, got 'pager'"),
    ({"name": "x", "type": "stdout", "min_priorty": "info"},
     "outputs[0].min_priorty: unknown key (did you mean min_priority?)"),
    ({"name": "x", "type": "stdout", "min_priority": "loud"}, "outputs[0].min_priority: unknown priority 'loud'"),
    ({"name": "x y", "type": "stdout"}, "outputs[0].name: use letters"),
    ({"name": "x", "type": "slack", "token_env": "T"}, "outputs[0].channel: is required with a bot token"),
    ({"name": "x", "type": "slack"}, "outputs[0]: give webhook_url_env/webhook_url_file, or token_env"),
    ({"name": "x", "type": "sns", "topic_arn": "arn:aws:sqs:eu-west-1:1:q"},
     "outputs[0].topic_arn: not an SNS topic ARN"),
    ({"name": "x", "type": "webhook", "url": "ftp://x"}, "outputs[0].url: config outputs[0].url is not an http(s) URL"),
    ({"name": "x", "type": "webhook", "url": "http://x.test", "timeout": 0},
     "outputs[0].timeout: expected a number >= 0.001"),
    ({"name": "x", "type": "webhook", "url": "http://x.test", "template": "${"},
     "outputs[0].template: column 1"),
    ({"name": "x", "type": "webhook", "url": "http://x.test", "method": "GET"},
     "outputs[0].method: expected one of post"),
    ({"name": "x", "type": "webhook", "url": "http://x.test", "include_tags": [1]},
     "outputs[0].include_tags: expected a list"),
    ({"name": "x", "type": "file", "path": "/tmp/a", "timeout": 3}, "outputs[0].timeout: unknown key"),
])
def test_invalid_outputs(raw: dict[str, Any], expected: str) -> None:
    """Each mistake is one line naming the key."""
    assert error_of([raw], T="xoxb").startswith(expected)


def test_duplicate_names_and_shapes() -> None:
    """Names are unique; the section must be a list of mappings."""
    assert error_of([{"name": "a", "type": "stdout"}, {"name": "a", "type": "stdout"}]) == (
        "outputs[1].name: duplicate output name 'a'")
    assert error_of({"name": "a"}) == "outputs: expected a list of outputs, got a mapping"
    assert error_of(["stdout"]) == "outputs[0]: expected a mapping, got a string"
    assert outputs(None) == []


def test_location_is_carried() -> None:
    """Errors carry the caller's location (the config file)."""
    with pytest.raises(ConfigError) as caught:
        parse_outputs([{"name": "a"}], "outputs", Location("detector.yaml"))
    assert str(caught.value).startswith("detector.yaml: outputs[0].type")


def test_sns_defaults() -> None:
    """Region comes from the ARN when absent; FIFO topics are recognised."""
    (sns,) = outputs([{"name": "s", "type": "sns", "topic_arn": "arn:aws:sns:us-east-2:123456789012:a.fifo"}])
    assert sns.region == "us-east-2" and sns.fifo and sns.message_group_id == "detector"


def test_webhook_options(tmp_path: Path) -> None:
    """Secret headers, TLS options and templates are read; a template defaults to text/plain."""
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("-----BEGIN-----\n")
    (webhook,) = outputs([{
        "name": "w", "type": "webhook", "url": "https://x/in", "headers_env": {"Authorization": "AUTH"},
        "tls_verify": False, "ca_file": str(tmp_path / "ca.pem"), "client_cert": str(tmp_path / "c.pem"),
        "client_key": str(tmp_path / "k.pem"),
        "template": "alert ${rule}", "method": "put"}], AUTH="Bearer t")
    assert webhook.secret_headers[0][0] == "Authorization" and webhook.secret_headers[0][1].reveal() == "Bearer t"
    assert webhook.method == "PUT" and webhook.content_type == "text/plain" and not webhook.tls_verify


def test_throttle_section() -> None:
    """Window, key fields and per-rule overrides; absent means off."""
    assert parse_throttle(None) == ThrottleSettings()
    settings = parse_throttle({"window": 60, "key": ["rule", "ka.user.name"],
                               "rules": [{"rules": ["Exec*"], "window": 300}]})
    assert settings.window_seconds == 60 and settings.key_fields == ("rule", "ka.user.name")
    assert settings.overrides[0].window_seconds == 300 and settings.overrides[0].key_fields == ("rule", "ka.user.name")
    with pytest.raises(ConfigError, match=r"throttle.rules\[0\].rules: is required"):
        parse_throttle({"rules": [{"window": 3}]})


def test_outbox_section() -> None:
    """Bounds and retry policy are validated."""
    assert parse_outbox(None) == OutboxSettings()
    settings = parse_outbox({"max_rows": 10, "max_age_seconds": 3600, "synchronous": "NORMAL"})
    assert settings.max_rows == 10 and settings.synchronous == "normal" and settings.dedup_seconds == 86400
    with pytest.raises(ConfigError, match=r"outbox\.max_rows: expected an integer >= 1"):
        parse_outbox({"max_rows": 0})
    with pytest.raises(ConfigError, match=r"outbox\.retry_max_seconds: must be >= retry_initial_seconds"):
        parse_outbox({"retry_initial_seconds": 10, "retry_max_seconds": 1})
    assert OutboxSettings().synchronous == "batched" and OutboxSettings().sync_interval_seconds == 0.1
    assert parse_outbox({"sync_interval_seconds": 0.5}).sync_interval_seconds == 0.5
    for bad in (0, -1, 2, ".nan", "fast"):
        with pytest.raises(ConfigError, match=r"outbox\.sync_interval_seconds: "):
            parse_outbox({"sync_interval_seconds": float("nan") if bad == ".nan" else bad})
    with pytest.raises(ConfigError, match=r"outbox\.synchronous: "):
        parse_outbox({"synchronous": "off"})


def test_parse_delivery() -> None:
    """The whole delivery part of an app config, with the cluster name."""
    settings = parse_delivery({"cluster_name": "prod", "outputs": [{"name": "o", "type": "stdout"}]})
    assert settings.cluster_name == "prod" and settings.outputs[0].name == "o"
    with pytest.raises(ConfigError, match="cluster_name: expected a non-empty string"):
        parse_delivery({"cluster_name": 3})
