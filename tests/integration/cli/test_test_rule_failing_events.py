"""`detector test-rule` on an event its rule fails on (issue 13): the test fails saying why, and
`--explain` reports that event and goes on; neither ends with a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import yaml

from tests.integration.cli.events import RULES, deletion, line
from tests.support.deepjson import nested_object, with_request_object

Run = Callable[..., CompletedProcess[str]]

# The rule reads the request body: a body nested past 4,000 levels makes it raise (TooDeep).
BODY_RULES = RULES.replace("and ka.target.resource = pods",
                           'and ka.target.resource = pods and not jmes.value["requestObject.a"] = x')


def test_an_event_the_rule_fails_on_fails_its_test_and_explain_goes_on(detector: Run, tmp_path: Path) -> None:
    """The failing event is named in the FAIL; the other test passes; --explain shows both events."""
    rules = tmp_path / "pods.yaml"
    rules.write_text(BODY_RULES)
    deep = tmp_path / "deep.json"
    deep.write_bytes(with_request_object(line(deletion(1)).rstrip(b"\n"), nested_object(5000)) + b"\n"
                     + line(deletion(2)))
    (tmp_path / "pods.tests.yaml").write_text(yaml.safe_dump({"tests": [
        {"name": "deep", "rule": "Pod Deleted", "events": [deep.name], "expect": {"fires": True, "count": 2}},
        {"name": "plain", "rule": "Pod Deleted", "events": [deletion(3)], "expect": {"fires": True}}]}))
    tested = detector("test-rule", "--rules", str(rules))
    assert tested.returncode == 1 and "Traceback" not in tested.stderr, tested.stderr
    assert "FAIL  Pod Deleted :: deep" in tested.stdout and "PASS  Pod Deleted :: plain" in tested.stdout
    assert "event 1: the rule failed: TooDeep: JSON nested deeper than 4,000 levels" in tested.stdout
    explained = detector("test-rule", "--rules", str(rules), "--explain", "Pod Deleted", "--event", str(deep))
    assert explained.returncode == 0 and "Traceback" not in explained.stderr, explained.stderr
    assert f"{deep} (event 1): Pod Deleted: the rule failed: TooDeep" in explained.stdout
    assert f"{deep} (event 2): Pod Deleted: MATCH" in explained.stdout
