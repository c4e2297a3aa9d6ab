"""Tests for detector.alert.redact: no Secret data and no credentials in alert payloads.

The end-to-end cases load a real rule whose output prints request/response object data, and
build the alert exactly as the engine does (ruleset -> match -> AlertBuilder).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.alert.build import AlertBuilder
from detector.alert.model import Alert
from detector.alert.redact import (
    REDACTED,
    WITHHELD,
    _may_name_credentials,
    is_safe_field,
    is_secret_event,
    secret_values,
)
from detector.parse import extract
from detector.rules.loader import load_rules
from tests.support.alertkit import make_match
from tests.unit.eventkit import make_event

PASSWORD = "hunter2-very-secret"
ENCODED = base64.b64encode(PASSWORD.encode()).decode()
RULE = """
- rule: Secret touched
  desc: prints everything it can reach
  condition: ka.target.resource = secrets
  output: >-
    secret %ka.target.name by %ka.user.name data=%jevt.value[/requestObject/data/password]
    plain=%jevt.value[/requestObject/stringData/token] resp=%json.value[/responseObject/items/0/data]
    uri=%ka.uri
  priority: WARNING
  source: k8s_audit
- rule: Exec
  desc: exec commands
  condition: ka.target.subresource = exec
  output: exec by %ka.user.name uri=%ka.uri cmd=%ka.exec.command
  priority: NOTICE
  source: k8s_audit
"""


@pytest.fixture(scope="module")
def ruleset(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(RULE)
    return load_rules([path])


def alert_for(ruleset: Any, **event: Any) -> Alert:
    (match,) = ruleset.evaluate(make_event(**event))
    return AlertBuilder("h", "prod")(match)


def serialised(alert: Alert) -> str:
    return orjson.dumps(alert.to_dict()).decode()


def test_secret_create_has_no_secret_data(ruleset: Any) -> None:
    """data and stringData values vanish from fields, message and output; metadata stays."""
    alert = alert_for(ruleset, objectRef={"resource": "secrets", "namespace": "prod", "name": "db"},
                      requestObject={"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db"},
                                     "data": {"password": ENCODED}, "stringData": {"token": "tok-plaintext-1"}})
    text = serialised(alert)
    for leaked in (ENCODED, PASSWORD, "tok-plaintext-1"):
        assert leaked not in text
    assert alert.output_fields["jevt.value[/requestObject/data/password]"] == REDACTED
    assert alert.output_fields["jevt.value[/requestObject/stringData/token]"] == REDACTED
    assert alert.output_fields["ka.target.name"] == "db" and alert.output_fields["ka.user.name"] == "alice"
    assert f"data={REDACTED}" in alert.message and "secret db by alice" in alert.message
    assert alert.output.endswith(alert.message)


def test_secret_list_response_is_redacted(ruleset: Any) -> None:
    """A SecretList in the response object is covered too (json.* fields, every item)."""
    alert = alert_for(ruleset, verb="list", objectRef={"resource": "secrets", "namespace": "prod"},
                      responseObject={"kind": "SecretList", "items": [
                          {"metadata": {"name": "a"}, "data": {"k": ENCODED}},
                          {"metadata": {"name": "b"}, "data": {"k": base64.b64encode(b"second-secret").decode()}}]})
    text = serialised(alert)
    assert ENCODED not in text and PASSWORD not in text and alert.output_fields[
        "json.value[/responseObject/items/0/data]"] == REDACTED


def test_tokens_in_uris_and_commands_are_masked(ruleset: Any) -> None:
    """Credentials in an exec command or a query string are masked, also URL-encoded ones."""
    uri = ("/api/v1/namespaces/default/pods/web/exec?command=sh&command=-c"
           "&command=curl%20-H%20%22Authorization%3A%20Bearer%20abc123%22%20--password%3Dp4ss&stdout=true")
    alert = alert_for(ruleset, requestURI=uri, objectRef={"resource": "pods", "subresource": "exec",
                                                          "namespace": "default", "name": "web"})
    text = serialised(alert)
    assert "abc123" not in text and "p4ss" not in text
    assert "Bearer ****" in alert.output_fields["ka.exec.command"]
    # ka.uri keeps its encoding: the masked argument is re-encoded (spaces as `+`)
    assert "--password%3D****" in alert.output_fields["ka.uri"] and alert.output_fields["ka.uri"] in alert.message
    assert "command=sh&command=-c&command=curl+-H" in alert.output_fields["ka.uri"]
    token_uri = "/api/v1/namespaces/default/secrets?token=s3cr3t-token&limit=5"
    alert = alert_for(ruleset, requestURI=token_uri, objectRef={"resource": "secrets", "namespace": "default"})
    assert "s3cr3t-token" not in serialised(alert) and "token=****" in alert.message


def test_non_secret_events_are_untouched() -> None:
    """A pod event's object fields are delivered as rendered."""
    match = make_match(output="image=nginx:1.25", fields={"jevt.value[/requestObject/spec]": "image=nginx:1.25"})
    alert = AlertBuilder("h")(match)
    assert alert.message == "image=nginx:1.25" and alert.output_fields["jevt.value[/requestObject/spec]"] == (
        "image=nginx:1.25")


def test_truncated_tokens_withhold_the_message() -> None:
    """A width-truncated rendering of secret data cannot be found whole: the message is withheld."""
    fields = {"jevt.value[/requestObject/data/password]": ENCODED}
    match = make_match(output=f"data={ENCODED[:10]}", fields=fields, objectRef={"resource": "secrets"},
                       requestObject={"kind": "Secret", "data": {"password": ENCODED}})
    alert = AlertBuilder("h")(match)
    assert alert.message == WITHHELD and alert.output.endswith(WITHHELD) and ENCODED[:10] not in alert.output


def test_secret_values_scan() -> None:
    """The scan finds data (raw and decoded), stringData and last-applied-configuration."""
    applied = '{"kind":"Secret","data":{"password":"' + ENCODED + '"}}'
    event = make_event(objectRef={"resource": "secrets"}, requestObject={
        "kind": "Secret", "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}},
        "data": {"password": ENCODED}, "stringData": {"x": "plain-value"}})
    assert set(secret_values(event)) >= {ENCODED, PASSWORD, "plain-value", applied}


def test_secret_event_detection() -> None:
    """By objectRef.resource, or by the kind of the request/response object."""
    assert is_secret_event(make_event(objectRef={"resource": "secrets"}))
    assert is_secret_event(make_event(objectRef={"resource": "things"}, requestObject={"kind": "Secret"}))
    assert not is_secret_event(make_event(objectRef={"resource": "configmaps"}, requestObject={"kind": "ConfigMap"}))


@pytest.mark.parametrize(("field", "safe"), [
    ("ka.user.name", True), ("tolower(ka.target.name)", True), ("jevt.value[/user/username]", True),
    ("jevt.value[/requestObject/data]", False), ("json.value[/responseObject]", False), ("jevt.value", False),
    ("ka.req.configmap.obj", False), ("jmes.value[requestObject.data]", False), ("jevt.obj", False),
    ("b64(jevt.value[/requestObject/data/x])", False),
])
def test_field_allowlist(field: str, safe: bool) -> None:
    """Only metadata fields survive on Secret events."""
    assert is_safe_field(field) is safe


def test_redaction_is_idempotent_on_paths(tmp_path: Path) -> None:
    """Masked values stay masked when the alert is rebuilt from its JSON (nothing re-expands)."""
    match = make_match(output="uri=/x?token=abc", fields={"ka.uri": "/x?token=abc"})
    alert = AlertBuilder("h")(match)
    assert alert.message == "uri=/x?token=****" and alert.output_fields["ka.uri"] == "/x?token=****"


def test_credentials_named_by_the_event_are_replaced_in_every_field(tmp_path: Path) -> None:
    """env values under credential names, a TokenReview's token, the last-applied annotation and an
    exec's masked arguments are gone from every field that prints them, and from the message."""
    rules = tmp_path / "r.yaml"
    rules.write_text("- rule: All\n  desc: d\n  condition: ka.auditid exists\n  priority: WARNING\n"
                     "  source: k8s_audit\n  output: first=%ka.uri.param[command] next=%jevt.value[/requestURI] "
                     "env=%jevt.value[/requestObject/spec/containers/0/env] obj=%jevt.obj\n")
    ruleset = load_rules([rules])
    uri = "/api/v1/namespaces/d/pods/p/exec?command=mysql&command=-pExecPw1234"
    pod = {"kind": "Pod", "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                                                       '{"note":"LastApplied1234"}'}},
           "spec": {"containers": [{"name": "c", "env": [{"name": "DB_PASSWORD", "value": "EnvPw12345"}]}],
                    "review": {"kind": "TokenReview", "spec": {"token": "eyJTokenRev1"}}}}
    alert = alert_for(ruleset, requestURI=uri, requestObject=pod)
    text = serialised(alert)
    for leaked in ("ExecPw1234", "LastApplied1234", "EnvPw12345", "eyJTokenRev1"):
        assert leaked not in text, leaked
    assert '"value":"****"' in alert.output_fields["jevt.value[/requestObject/spec/containers/0/env]"]


def test_every_alert_of_one_event_is_masked_and_the_command_is_masked_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rules matching one exec event: both alerts mask the command and the URI, and the command
    is masked once for the event (ka.exec.command and the redaction share it)."""
    calls: list[list[str]] = []
    real = extract.mask_argv
    monkeypatch.setattr(extract, "mask_argv", lambda args: calls.append(list(args)) or real(args))
    rules = tmp_path / "r.yaml"
    rules.write_text("".join(
        f"- rule: R{n}\n  desc: d\n  condition: ka.target.subresource = exec\n  priority: WARNING\n"
        f"  source: k8s_audit\n  output: cmd=%ka.exec.command uri=%ka.uri first=%ka.uri.param[command] "
        f"p=%ka.uri.param[command]\n" for n in (1, 2)))
    ruleset = load_rules([rules])
    event = make_event(requestURI="/api/v1/namespaces/d/pods/p/exec?command=mysql&command=-pOncePw1234"
                                  "&command=--password&command=OncePw5678", objectRef={"subresource": "exec"})
    alerts = [AlertBuilder("h")(match) for match in ruleset.evaluate(event)]
    assert len(alerts) == 2
    for alert in alerts:
        text = serialised(alert)
        assert "OncePw1234" not in text and "OncePw5678" not in text
        assert alert.output_fields["ka.exec.command"] == "mysql -p**** --password ****"
    assert len(calls) == 1


@pytest.mark.parametrize("query", ["access_token=QueryTok1234", "acc%65ss_token=QueryTok1234",
                                   "x=1&to\tken=QueryTok1234", "API_KEY=QueryTok1234"])
def test_credential_named_query_parameters_are_found_in_any_spelling(tmp_path: Path, query: str) -> None:
    """The query is parsed for credential names whenever its text may spell one (escapes, a tab
    that urlsplit drops): ka.uri.param prints the value alone, and it is replaced there."""
    rules = tmp_path / "r.yaml"
    name = "access_token" if "acc" in query else ("token" if "to\tken" in query else "API_KEY")
    rules.write_text("- rule: Q\n  desc: d\n  condition: ka.auditid exists\n  priority: WARNING\n"
                     f"  source: k8s_audit\n  output: v=%ka.uri.param[{name}]\n")
    alert = alert_for(load_rules([rules]), requestURI=f"/api/v1/pods?{query}")
    assert "QueryTok1234" not in serialised(alert)


def test_request_objects_without_credential_words_are_not_walked_and_others_are() -> None:
    """The walk's pre-check: an object whose JSON holds no word the masker needs has no
    credential; one with a name word, non-ASCII text or the last-applied annotation is walked."""
    assert not _may_name_credentials({"kind": "ConfigMap", "data": {"log_level": "debug"}}, 100)
    for obj in ({"env": [{"name": "DB_PASSWORD", "value": "x"}]}, {"data": {"note": "coo\u212aie: x"}},
                {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}},
                {"spec": {"Pwd": "x"}}):
        assert _may_name_credentials(obj, 100), obj
