"""The streaming loop: records -> events -> matches -> alerts. Counts everything and never
dies on one bad line."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from detector.alert.build import AlertBuilder, build_alerts
from detector.alert.model import Alert
from detector.errors import BadInput, Location
from detector.event import AuditEvent
from detector.parse.audit import line_parser, parse_block, parse_document, parse_line
from detector.parse.envelopes import Envelope
from detector.rules.model import Match
from detector.rules.ruleset import Ruleset
from detector.source.cutter import Block, Lines
from detector.source.replay import Record


def freeze_heap() -> None:
    """Take everything alive now (modules, compiled rules, regexes, clients) out of the garbage
    collector's scans. At tens of thousands of events a second the collector runs constantly,
    and a full pass over ~50,000 long-lived objects stalled the loop ~16 ms, every alert behind
    it too; afterwards it only looks at what is new. Call it again after replacing the rules:
    the previous frozen set is unfrozen and collected first, so a reload leaks nothing."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


AlertSink = Callable[[Alert], None]
BadInputSink = Callable[[BadInput], None]


@dataclass
class Stats:
    """What a run has seen."""

    events: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        bad = ", ".join(f"{reason}={count}" for reason, count in sorted(self.bad.items()))
        alerts = ", ".join(f"{rule}={count}" for rule, count in sorted(self.alerts.items()))
        return (f"events={self.events} bad_lines={sum(self.bad.values())}" + (f" ({bad})" if bad else "")
                + f" alerts={sum(self.alerts.values())}" + (f" ({alerts})" if alerts else ""))


class Engine:
    """Evaluates records with a ruleset and hands alerts and bad input to sinks."""

    def __init__(self, ruleset: Ruleset, on_alert: AlertSink, on_bad: BadInputSink,
                 hostname: str | None = None, envelope: Envelope = Envelope.AUTO) -> None:
        self.ruleset = ruleset
        # AUTO detects envelopes per line (only where a line is not a plain event); one cloud's
        # forces its decoder on every line and document, and skips the whole-block decode.
        self.envelope = envelope
        self._parse = line_parser(envelope)
        self._blocks = envelope in (Envelope.AUTO, Envelope.NONE)
        self.on_alert = on_alert
        self.on_bad_input = on_bad
        # The same enrichment and redaction as `detector run`: no Secret data in any output.
        self.build = AlertBuilder(hostname)
        self.stats = Stats()
        self._lines: Lines | Block | None = None  # the batch being processed, and where in it
        self._index = 0
        self._item: Location | None = None  # the document item being processed

    def report_bad(self, error: BadInput) -> None:
        self.stats.bad[error.reason] += 1
        self.on_bad_input(error)

    def run(self, items: Iterable[Lines | Block | Record]) -> Stats:
        """Process every batch of lines (or document) of `read_input`; the hot loops keep
        lookups local and allocate nothing extra."""
        for item in items:
            if type(item) is Block and self._blocks and item.shaped and (events := parse_block(item)) is not None:
                self._decoded(item, events)
            elif isinstance(item, Record):
                self._document(item)
            else:
                self._lines_of(item)
        return self.stats

    def _decoded(self, block: Block, events: list[AuditEvent | None]) -> None:
        """Evaluate the events of a block decoded as a whole; a line it left out (None) goes
        through parse_line, which accepts or reports it exactly as line by line would. The
        evaluation is written out here as in `_evaluate`, not shared through a call: this loop
        runs once per event of nearly every log."""
        evaluate, count = self.ruleset.evaluate, 0
        self._lines = block
        for index, event in enumerate(events):
            if event is None:
                self._index = index
                self._line(block.line(index))
                continue
            count += 1
            try:
                matches = evaluate(event)
            except Exception:  # one event must never stop the stream: its failing rules are reported
                self._index = index
                matches = self._evaluate_each(event)
            if matches:
                self._index = index  # where a failure to build an alert is reported
                self._alert(matches)
        self.stats.events += count

    def _lines_of(self, lines: Lines | Block) -> None:
        """Parse and evaluate a batch line by line."""
        self._lines = lines
        for index, line in enumerate(lines.lines):
            self._index = index  # for reports, also from inside parse_line (EventList lines)
            self._line(line)

    def _line(self, line: bytes) -> None:
        """Parse and evaluate the line at self._index of self._lines."""
        report_item = self._report_item
        try:
            event = self._parse(line, report_item)
        except BadInput as error:
            report_item(error)
            return
        for one in event if type(event) is list else (event,):  # an EventList line: its events
            self._evaluate(one)  # type: ignore[arg-type]

    def _evaluate(self, event: AuditEvent) -> None:
        """Evaluate one event and emit its alerts; problems are reported at the current place."""
        self.stats.events += 1
        try:
            matches = self.ruleset.evaluate(event)
        except Exception:  # one event must never stop the stream: its failing rules are reported
            matches = self._evaluate_each(event)
        if matches:
            self._alert(matches)

    def _evaluate_each(self, event: AuditEvent) -> list[Match]:
        """The matches of an event on which evaluation raised, each failing rule reported."""
        return self.ruleset.evaluate_each(event, lambda rule, exc: self._report_item(evaluation_error(rule, exc)))

    def _report_item(self, error: BadInput) -> None:
        """Report bad input found in the line (or document item) being processed, at its place."""
        lines = self._lines
        if self._item is not None:
            error.location = self._item
        elif lines is not None:
            error.location = Location(lines.path, lines.linenos[self._index])
        self.report_bad(error)

    def _alert(self, matches: Iterable[Match]) -> None:
        for alert in build_alerts(self.build, matches, self._report_item):
            self.stats.alerts[alert.rule] += 1
            self.on_alert(alert)

    def _document(self, record: Record) -> None:
        try:
            items = parse_document(record.data, self.envelope)
        except BadInput as error:
            error.location = Location(record.path, record.lineno)
            self.report_bad(error)
            return
        for position, item in enumerate(items, start=1):
            where = Location(record.path, record.lineno, item=f"item {position}")
            if isinstance(item, BadInput):
                item.location = where
                self.report_bad(item)
                continue
            self._item = where
            try:
                self._evaluate(item)
            finally:
                self._item = None


def evaluation_error(rule: str, exc: Exception) -> BadInput:
    """The report of a rule that failed on an event (the event's other rules still run)."""
    return BadInput("evaluation_error", f"rule {rule!r} failed: {type(exc).__name__}: {exc}")


def diagnose_line(data: bytes) -> str | None:
    """Whether the final line of a finished input, which lacks its newline, may be cut short:
    why (its JSON is invalid), or None when it is whole JSON. A whole line is then read like
    any other (and reported at its line if it is no usable event); `source.replay.read_input`
    and `source.stream.StreamFollower` take this as their `diagnose`."""
    try:
        parse_line(data)
    except BadInput as error:
        return error.message if error.reason == "invalid_json" else None
    return None
