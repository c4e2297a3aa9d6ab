"""Command line: the composition root. Parses arguments, wires source -> parse -> rules ->
alert, and turns every expected failure into one clear line and an exit code:
0 ok, 1 test/validation failure, 2 usage error or unloadable rules."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import textwrap
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from detector.alert.format import to_json_line, to_text_line
from detector.alert.model import Alert
from detector.alert.settings import DeliverySettings, parse_delivery, parse_outbox
from detector.config import DEFAULT_FILE, DEFAULT_STATE_DIR, RunConfig, apply, load_config
from detector.engine import Engine, diagnose_line, freeze_heap
from detector.errors import BadInput, DetectorError, Location, RuleLoadError, StateError
from detector.parse.envelopes import Envelope
from detector.parse.fields import FIELDS
from detector.parse.fieldspec import FieldOptions
from detector.rules.diagnostics import Code, Diagnostic
from detector.rules.loader import LoadOptions, check_rules, load_rules, summary
from detector.rules.model import Priority
from detector.rules.ruleset import RuleMatching, Ruleset
from detector.source.replay import read_input
from detector.version import package_version

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
INTERNAL_NETWORKS_LIST = "detector_internal_networks"


def shipped_rules_dir() -> Path:
    """The rules bundled with the package (the repo's top-level rules/)."""
    return Path(str(files("detector.shipped_rules")))


WITH_SHIPPED_HELP = ("load the shipped rules before the given ones, so your rules can use their macros and "
                     "lists and override their rules")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise DetectorError(f"usage: {message}")


def _priority(text: str) -> Priority:
    priority = Priority.parse(text)
    if priority is None:
        raise argparse.ArgumentTypeError(f"invalid priority {text!r} (use one of: "
                                         f"{', '.join(p.name.lower() for p in Priority)})")
    return priority


RULE_MATCHING_HELP = "all: every matching rule alerts (the default); first: only the first in file order, as Falco"
COMMAND_HELP = {  # `detector --help` and the README's list of commands say the same
    "scan": "evaluates finished audit logs (files, .gz, stdin) and prints the alerts",
    "validate": "checks rules files and reports every problem with its file and line",
    "test-rule": "runs rules against their example events (*.tests.yaml), explains a rule or replays a log",
    "fields": "lists the fields usable in conditions and outputs",
    "policy-check": "tells for each rule whether the API server's audit policy logs what it needs",
    "run": "follows a live audit log (or stdin) and delivers alerts",
    "send-test-alert": "validates the config and sends one sample alert straight to each output",
    "outbox": "lists, retries or purges the alerts in the outbox",
}
OUTBOX_VERBS = """\
Works on the outbox in <state_dir>/detector.db, also while `detector run` is
running.

verbs:
  list   rows oldest first, of every status unless --status (at most --limit),
         then the row counts per output and status, and the alerts the bounds
         have dropped
  retry  make dead rows (or --status pending) due now, with a fresh attempt count
  purge  turn pending and dead rows into dropped rows: they are never delivered"""


def _add_rule_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", action="append", metavar="PATH",
                        help="rules file or directory; repeatable, loaded in order (default: the shipped rules)")
    parser.add_argument("--with-shipped-rules", action="store_true", help=WITH_SHIPPED_HELP)
    parser.add_argument("--rule-matching", choices=[m.value for m in RuleMatching], default="all",
                        help=RULE_MATCHING_HELP)
    parser.add_argument("--min-priority", type=_priority, default=Priority.DEBUG, metavar="P",
                        help="ignore rules less severe than P (e.g. warning)")
    parser.add_argument("--trusted-proxies", type=int, default=0, metavar="N",
                        help="proxies in front of the API server that append to X-Forwarded-For (ka.client.ip)")
    parser.add_argument("--internal-networks", type=_networks, metavar="CIDR,...",
                        help="replace the list detector_internal_networks (default: RFC 1918, loopback, "
                        "link-local, ULA)")


class _PrintVersion(argparse.Action):
    """`--version`: `detector <version>` on stdout, exit 0 (the version is looked up only then)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(f"detector {package_version()}")
        parser.exit()


def _add_command(commands: argparse._SubParsersAction, name: str,  # type: ignore[type-arg]
                 description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose `detector --help` line is COMMAND_HELP[name] and whose own --help starts
    with it as a sentence (or with `description`, printed as written)."""
    text = COMMAND_HELP[name]
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=text, description=description or textwrap.fill(f"{text[0].upper()}{text[1:]}.", 79),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="detector", description="Rule-based detection for Kubernetes audit logs.",
                     epilog="`detector COMMAND --help` describes a command and its options.")
    parser.add_argument("--version", action=_PrintVersion, help="print detector's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    scan = _add_command(commands, "scan")
    _add_rule_options(scan)
    scan.add_argument("--format", choices=("json", "text"), default="json",
                      help="json: one alert object per line (the default); text: one readable line per alert")
    scan.add_argument("--max-line-bytes", type=int, default=1 << 20, metavar="N",
                      help="longer lines are reported and skipped (default 1 MiB)")
    scan.add_argument("--envelope", choices=[e.value for e in Envelope], default=Envelope.AUTO.value,
                      help="what wraps the audit events: auto (detect per line: plain events, EventLists, "
                           "EKS CloudWatch Logs/Firehose, GKE LogEntry/Pub/Sub, AKS records; the default), "
                           "none (plain audit events only), or one cloud's envelope only")
    scan.add_argument("inputs", nargs="+", metavar="FILE",
                      help="audit log: JSON lines, an EventList or a JSON array, plain or .gz; - for stdin")
    validate = _add_command(commands, "validate")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="rules file or directory to check")
    validate.add_argument("--strict", action="store_true", help="warnings fail validation too")
    validate.add_argument("--with-shipped-rules", action="store_true", help=WITH_SHIPPED_HELP)
    fields = _add_command(commands, "fields")
    fields.add_argument("--format", choices=("text", "markdown"), default="text",
                        help="text: aligned columns (the default); markdown: the table of docs/fields.md")
    test_rule = _add_command(commands, "test-rule")
    _add_rule_options(test_rule)
    test_rule.add_argument("--tests", action="append", metavar="PATH",
                           help="*.tests.yaml files (default: those beside the rules files)")
    test_rule.add_argument("--require-cases", action="store_true",
                           help="fail unless every enabled rule has a positive and a negative test")
    test_rule.add_argument("--explain", metavar="RULE", help="show why RULE does or does not match each event")
    test_rule.add_argument("--event", action="append", metavar="FILE",
                           help="a file of audit events for --explain; repeatable")
    test_rule.add_argument("--replay", action="append", metavar="FILE",
                           help="count alerts per rule over an audit log (.gz too); repeatable")
    policy = _add_command(commands, "policy-check")
    _add_rule_options(policy)
    policy.add_argument("--policy", required=True, metavar="FILE", help="the API server's audit policy file")
    policy.add_argument("--strict", action="store_true", help="exit 1 when an enabled rule is blind")
    _add_run_commands(commands)
    return parser


def _add_run_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = _add_command(commands, "run", "Follows a live audit log across rotations (or standard input with "
                       "--file -)\nand delivers alerts through the outbox until SIGTERM. Flags override the "
                       "config\nfile's keys.")
    run.add_argument("--config", metavar="FILE",
                     help="YAML configuration (every key: docs/configuration.md; default: built-in defaults)")
    run.add_argument("--file", metavar="PATH",
                     help=f"audit log to follow, or - for standard input (default {DEFAULT_FILE})")
    run.add_argument("--rules", action="append", metavar="PATH",
                     help="rules file or directory; repeatable, replaces the config's list (default: the shipped "
                          "rules)")
    run.add_argument("--state-dir", metavar="DIR",
                     help=f"checkpoint and outbox, one process at a time (default {DEFAULT_STATE_DIR})")
    run.add_argument("--start-at", choices=("end", "beginning"),
                     help="first start without a checkpoint: end (only new events, the default) or beginning "
                          "(the live file from its first byte)")
    run.add_argument("--rule-matching", choices=[m.value for m in RuleMatching], help=RULE_MATCHING_HELP)
    run.add_argument("--log-format", choices=("json", "console"),
                     help="detector's own log on stderr: json (one object per line, the default) or console "
                          "(for people)")
    test_alert = _add_command(commands, "send-test-alert")
    test_alert.add_argument("--config", metavar="FILE",
                            help="YAML configuration whose outputs to test (default: one stdout output)")
    test_alert.add_argument("--output", metavar="NAME", help="only the output named NAME")
    outbox = _add_command(commands, "outbox", OUTBOX_VERBS)
    outbox.add_argument("action", choices=("list", "retry", "purge"), metavar="{list,retry,purge}",
                        help="what to do (see verbs above)")
    outbox.add_argument("--seq", dest="seqs", action="append", type=int, metavar="SEQ",
                        help="retry or purge only this row (repeatable): the SEQ column of `outbox list`")
    outbox.add_argument("--config", metavar="FILE", help="take state_dir and the outbox bounds from this "
                        "configuration")
    outbox.add_argument("--state-dir", metavar="DIR",
                        help=f"the state directory (default: the config's state_dir, else {DEFAULT_STATE_DIR})")
    outbox.add_argument("--output", metavar="NAME", help="only rows of this output")
    outbox.add_argument("--status", choices=("pending", "delivered", "dead", "dropped"),
                        help="only rows in this status (default: list every status, retry dead rows, purge "
                             "pending and dead rows)")
    outbox.add_argument("--limit", type=int, default=100, metavar="N", help="list at most N rows (default 100)")


def _networks(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not a CIDR network") from None
    return items


def load_options(args: argparse.Namespace) -> LoadOptions:
    overrides = {INTERNAL_NETWORKS_LIST: args.internal_networks} if args.internal_networks else {}
    return LoadOptions(fields=FieldOptions(trusted_proxies=args.trusted_proxies),
                       matching=RuleMatching(args.rule_matching), min_priority=args.min_priority,
                       list_overrides=overrides)


def rule_paths(args: argparse.Namespace) -> list[str]:
    """The rules to load: --rules (after the shipped rules with --with-shipped-rules), else the shipped rules."""
    if not args.rules:
        return [str(shipped_rules_dir())]
    return [str(shipped_rules_dir())] * bool(args.with_shipped_rules) + list(args.rules)


def load_for(args: argparse.Namespace) -> Ruleset:
    """Load rules for a command, printing every diagnostic on stderr; errors raise RuleLoadError."""
    ruleset, diagnostics = check_rules(rule_paths(args), load_options(args))
    errors = [d for d in diagnostics if d.is_error]
    for diagnostic in sorted(diagnostics, key=_by_place):
        print(diagnostic, file=sys.stderr)
    if errors:
        raise RuleLoadError(f"rules not loaded: {summary(diagnostics)}")
    return ruleset


def cmd_scan(args: argparse.Namespace) -> int:
    ruleset = load_for(args)
    out = sys.stdout.buffer
    if args.format == "json":
        def emit(alert: Alert) -> None:
            out.write(to_json_line(alert))
    else:
        def emit(alert: Alert) -> None:
            out.write(to_text_line(alert).encode())
    engine = Engine(ruleset, emit, _print_bad, envelope=Envelope(args.envelope))
    freeze_heap()
    for path in args.inputs:
        engine.run(read_input(path, engine.report_bad, args.max_line_bytes, diagnose=diagnose_line))
    out.flush()
    print(f"detector scan: {engine.stats.summary()}", file=sys.stderr)
    return EXIT_OK


def _print_bad(error: BadInput) -> None:
    print(f"{error.location or '<input>'}: {error.reason}: {error.message}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    _, diagnostics = check_rules([str(shipped_rules_dir())] * args.with_shipped_rules + list(args.paths))
    for diagnostic in sorted(diagnostics, key=_by_place):
        print(diagnostic)
    failed = any(d.is_error for d in diagnostics) or (args.strict and bool(diagnostics))
    print(f"{'FAILED' if failed else 'OK'}: {summary(diagnostics)}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _by_place(diagnostic: Diagnostic) -> tuple[str, int, int]:
    where = diagnostic.location
    return (where.path, where.line or 0, where.column or 0)


def cmd_fields(args: argparse.Namespace) -> int:
    width = max(len(name) for name in FIELDS) + 2
    if args.format == "markdown":
        print("| field | type | argument | description |\n|---|---|---|---|")
    for spec in FIELDS.values():
        kind = spec.type.value + (" list" if spec.is_list else "")
        if args.format == "markdown":
            arg = "" if spec.arg.value == "none" else spec.arg.value
            desc = spec.desc.replace("|", "\\|")
            print(f"| `{spec.name}` | {kind} | {arg} | {desc} |")
        else:
            arg = "" if spec.arg.value == "none" else f" [arg: {spec.arg.value}]"
            print(f"{spec.name:<{width}}{kind:<14}{spec.desc}{arg}")
    return EXIT_OK


def cmd_test_rule(args: argparse.Namespace) -> int:
    from detector.ruletest.cli import run  # noqa: PLC0415 - only this command needs it

    return run(args, load_for(args), list(args.rules) if args.rules else rule_paths(args))


def cmd_policy_check(args: argparse.Namespace) -> int:
    from detector.policy.report import print_report  # noqa: PLC0415 - only this command needs it

    return print_report(load_for(args), args.policy, args.strict)


def run_config(args: argparse.Namespace) -> RunConfig:
    """The config file with the command-line flags applied on top."""
    config = load_config(getattr(args, "config", None))
    flags = {key: getattr(args, attr) for key, attr in (
        ("file", "file"), ("rules", "rules"), ("state_dir", "state_dir"), ("start_at", "start_at"),
        ("rule_matching", "rule_matching"), ("log_format", "log_format")) if getattr(args, attr, None) is not None}
    return apply(config, flags, "command line") if flags else config


def delivery_settings(config: RunConfig) -> DeliverySettings:
    outputs = config.outputs or [{"name": "stdout", "type": "stdout"}]
    raw = {"outputs": outputs, "throttle": config.throttle, "outbox": config.outbox,
           "cluster_name": config.cluster_name}
    return parse_delivery(raw, Location(config.source))


def cmd_run(args: argparse.Namespace) -> int:
    # The daemon's imports (structlog, with rich when installed, ~60 ms) are not needed elsewhere.
    from detector.live import LiveRunner  # noqa: PLC0415
    from detector.logs import configure_logging  # noqa: PLC0415

    config = run_config(args)
    configure_logging(config.log_format, config.log_level)
    paths = list(config.rules) or [str(shipped_rules_dir())]
    options = LoadOptions(
        fields=FieldOptions(trusted_proxies=config.trusted_proxies), matching=RuleMatching(config.rule_matching),
        min_priority=config.min_priority,
        list_overrides={INTERNAL_NETWORKS_LIST: config.internal_networks} if config.internal_networks else {})
    runner = LiveRunner(config, delivery_settings(config), lambda: _logged(load_rules(paths, options)), paths)
    runner.install_signal_handlers()
    return runner.run()


def _logged(ruleset: Ruleset) -> Ruleset:
    """Log each rule that loaded but does not run (no `source: k8s_audit`): one line per rule."""
    import structlog  # noqa: PLC0415 - with the daemon's imports

    log = structlog.get_logger("detector.run")
    for diagnostic in ruleset.diagnostics:
        if diagnostic.code is Code.OTHER_SOURCE:
            log.warning("rules_skipped", rule=diagnostic.location.item, location=str(diagnostic.location),
                        reason=diagnostic.message)
    return ruleset


def cmd_send_test_alert(args: argparse.Namespace) -> int:
    from detector.alert.admin import send_test_alert  # noqa: PLC0415

    config = run_config(args)
    settings = delivery_settings(config)
    from detector.alert.admin import sample_alert  # noqa: PLC0415
    from detector.live import alert_hostname  # noqa: PLC0415

    results = send_test_alert(settings.outputs, only=args.output,
                              alert=sample_alert(hostname=alert_hostname(), cluster_name=config.cluster_name))
    for result in results:
        print(f"{result.name}: {'OK' if result.ok else 'FAILED'} {result.detail}".rstrip())
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def cmd_outbox(args: argparse.Namespace) -> int:
    import sqlite3  # noqa: PLC0415

    from detector.alert import admin  # noqa: PLC0415

    config = run_config(args)
    # Only the outbox settings: inspecting the outbox needs no output credentials.
    box = admin.open_outbox(config.state_dir, parse_outbox(config.outbox, "outbox", Location(config.source)))
    try:
        seqs = args.seqs or None
        if args.action == "list":
            print(admin.format_rows(admin.outbox_list(box, args.output, args.status, args.limit)))
            print(admin.format_counts(box))
        elif args.action == "retry":
            print(f"{admin.outbox_retry(box, args.output, args.status or 'dead', seqs)} row(s) scheduled for retry")
        else:
            print(f"{admin.outbox_purge(box, args.output, args.status, seqs)} row(s) purged")
    except sqlite3.DatabaseError as exc:  # damaged after the check at open, or by another process meanwhile
        raise StateError(f"{box.path}: the state database cannot be used ({exc})") from None
    finally:
        box.close()
    return EXIT_OK


COMMANDS = {"scan": cmd_scan, "validate": cmd_validate, "fields": cmd_fields, "test-rule": cmd_test_rule,
            "policy-check": cmd_policy_check, "run": cmd_run, "send-test-alert": cmd_send_test_alert,
            "outbox": cmd_outbox}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `detector` console script."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except RuleLoadError as exc:
        print(f"detector: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DetectorError as exc:
        print(f"detector: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130

