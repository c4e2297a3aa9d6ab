"""The engine's two ways through line input: blocks decoded as a whole, and line by line.

`detector scan` decodes a block of lines in one call when every line looks like one object;
anything unusual in a block sends that block (or that line) through parse_line. Whatever the
mix of lines, the result must be exactly what line-by-line processing gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from detector.alert.model import Alert
from detector.engine import Engine
from detector.errors import BadInput
from detector.rules.loader import load_rules
from detector.rules.ruleset import Ruleset
from detector.source.cutter import Block, Lines
from detector.source.replay import read_input
from tests.unit.eventkit import DROP, event_dict

RULES = """
- rule: Pod Created
  desc: a pod create; the output reads the request body, so the event's line is needed
  condition: ka.verb = create and ka.target.resource = pods
  output: "%ka.user.name created %ka.target.name with %ka.req.pod.containers.image"
  priority: WARNING
  source: k8s_audit
- rule: Anything Read
  desc: every get
  condition: ka.verb = get
  output: "%ka.user.name read %ka.target.resource"
  priority: INFO
  source: k8s_audit
"""

PAD = "x" * 700  # long enough lines that the file spans several 128 KiB blocks


def _event(n: int, **overrides: Any) -> bytes:
    body = event_dict(**{"auditID": f"id-{n}", "annotations": {"pad": PAD}, **overrides})
    return orjson.dumps(body)


def _pod(n: int) -> bytes:
    spec = {"containers": [{"name": "c", "image": f"nginx:{n}"}]}
    return _event(n, requestObject={"kind": "Pod", "spec": spec}, objectRef={"resource": "pods", "name": f"p{n}"})


LINE_KINDS = [
    _pod,
    lambda n: _event(n, verb="get"),
    lambda n: _event(n, verb="list"),
    lambda n: b"",  # blank
    lambda n: b"   ",
    lambda n: b"{not json",
    lambda n: _event(n, verb="get") + b" " + _event(n + 1, verb="get"),  # two objects on a line
    lambda n: orjson.dumps({"kind": "EventList", "items": [event_dict(auditID=f"l-{n}", verb="get")]}),
    lambda n: _event(n, verb="get") + b"\r",  # CRLF
    lambda n: _event(n, stageTimestamp="yesterday"),
    lambda n: _event(n, auditID=DROP),
    lambda n: _event(n, kind="Nope"),
    lambda n: b'{"kind":"Event","verb":5}',
    lambda n: b"[1, 2]",
    lambda n: b"\xff\xfe{}",
    lambda n: b'{"kind":"Event","auditID":"split",',  # one object over two lines
    lambda n: b'"verb":"get"}',
    lambda n: b"{}",
]


def _run(items: Any, ruleset: Ruleset) -> tuple[int, list[tuple[str, str]], list[tuple[str, int | None]]]:
    alerts: list[Alert] = []
    bad: list[BadInput] = []
    engine = Engine(ruleset, alerts.append, bad.append, hostname="h")
    stats = engine.run(items)
    return (stats.events, [(a.rule, a.id + a.output) for a in alerts],
            [(b.reason, b.location.line if b.location else None) for b in bad])


@pytest.fixture(scope="module")
def ruleset(tmp_path_factory: pytest.TempPathFactory) -> Ruleset:
    rules = tmp_path_factory.mktemp("rules") / "rules.yaml"
    rules.write_text(RULES)
    return load_rules([rules])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.integers(0, len(LINE_KINDS) - 1), max_size=400), usual=st.integers(0, 3))
# A blank line (or an object over two lines) and two objects on one line: as many values as
# lines, but not one per line. Only the block's shape check tells. (After the first ~8 KB:
# the reader's first blocks are short.)
@example(kinds=[1] * 12 + [0, 3, 1, 6, 2], usual=0)
@example(kinds=[1] * 12 + [0, 15, 16, 1, 6, 2], usual=0)
def test_blocks_and_line_by_line_agree_on_any_mix_of_lines(
        tmp_path: Path, ruleset: Ruleset, kinds: list[int], usual: int) -> None:
    """Events, alerts (and their text) and every report with its line number are the same."""
    # Mostly usual events, as in a real log, so that many blocks take the whole-block path.
    lines = [LINE_KINDS[k](n) if k > usual + 2 or k < 3 else LINE_KINDS[k % 3](n) for n, k in enumerate(kinds)]
    # A first line that opens an object without closing it would make the file one JSON
    # document (the reader's sniffing, not what is compared here).
    lines.insert(0, _event(-1, verb="get"))
    path = tmp_path / "audit.log"
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    one_by_one = [Lines([x.removesuffix(b"\r")], str(path), [n]) for n, x in enumerate(lines, 1)]
    assert _run(read_input(str(path), print), ruleset) == _run(one_by_one, ruleset)


# Lines shaped like objects ("{" ... "}") with arbitrary insides: the whole-block decode is tried
# on every such block, so whatever msgspec makes of them must match the line-by-line path.
_INSIDES = st.text(alphabet=st.sampled_from([*'{}[]":,\\ \t0123456789abnultrsefEv', "\x00", "é"]), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(insides=st.lists(st.one_of(_INSIDES, st.none()), min_size=1, max_size=60))
def test_blocks_and_line_by_line_agree_on_object_shaped_garbage(
        tmp_path: Path, ruleset: Ruleset, insides: list[str | None]) -> None:
    """Garbage between braces (or, for None, a usual event) gives the same result either way."""
    lines = [_event(-1, verb="get")] + [
        _event(n, verb="get") if inside is None else b"{" + inside.encode() + b"}" for n, inside in enumerate(insides)]
    path = tmp_path / "audit.log"
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    one_by_one = [Lines([x], str(path), [n]) for n, x in enumerate(lines, 1)]
    assert _run(read_input(str(path), print), ruleset) == _run(one_by_one, ruleset)


def test_a_log_of_usual_events_is_decoded_a_block_at_a_time(tmp_path: Path) -> None:
    """The whole-block path is the one taken for an ordinary log (else the test above proves little)."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"".join(_event(n, verb="get") + b"\n" for n in range(500)))
    blocks = [item for item in read_input(str(path), print) if isinstance(item, Block)]
    assert blocks and all(block.shaped for block in blocks)
    assert sum(len(block.ends) for block in blocks) > 400
