"""`detector send-test-alert`'s function against real endpoints: per-output success or the
exact failure."""

from __future__ import annotations

import orjson

from detector.alert.admin import TEST_RULE, send_test_alert
from detector.alert.settings import parse_outputs
from tests.support.receiver import Receiver, Reply, free_port


def test_each_output_reports_success_or_the_exact_failure() -> None:
    """A healthy webhook succeeds; Slack answering 404 and a refused port fail, saying how."""
    with Receiver() as webhook, Receiver(default=Reply(404, b"no_service")) as slack:
        env = {"SLACK_URL": slack.url + "/services/T/B/secret-part", "HOOK": webhook.url + "/in"}
        outputs = parse_outputs([
            {"name": "siem", "type": "webhook", "url_env": "HOOK"},
            {"name": "ops-slack", "type": "slack", "webhook_url_env": "SLACK_URL", "timeout": 2},
            {"name": "down", "type": "webhook", "url": f"http://127.0.0.1:{free_port()}/x", "timeout": 2},
        ], environ=env)
        results = send_test_alert(outputs)
    assert [(r.name, r.ok) for r in results] == [("siem", True), ("ops-slack", False), ("down", False)]
    assert results[1].detail == "HTTP 404: no_service (permanent)"
    assert results[2].detail == "connection refused (retryable)"
    assert orjson.loads(webhook.accepted()[0].body)["rule"] == TEST_RULE
    assert "secret-part" not in repr(results)
