"""The CLI's help and the docs' command references agree with the real parser."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from detector.cli import COMMAND_HELP, build_parser
from detector.version import package_version

REPO = Path(__file__).resolve().parents[3]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "deploy").glob("*/README.md"),
               REPO / "rules" / "README.md"])
SHELL = ("sh", "bash", "shell", "console")
PLACEHOLDER = re.compile(r"<[^>]*>")
INLINE = re.compile(r"(?<!`)`(detector [a-z][^`]*)`")
OPTION = re.compile(r"(--[a-z][a-z-]*)(?: ([^\s\[\]]+))?")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options_of(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    """--option -> its argument as the docs write it: `a\\|b` for choices, the metavar, or None."""
    found: dict[str, str | None] = {}
    for action in parser._actions:
        for flag in action.option_strings:
            if not flag.startswith("--") or flag == "--help":
                continue
            if action.nargs == 0:
                found[flag] = None
            elif action.choices is not None:
                found[flag] = "\\|".join(str(c) for c in action.choices)
            else:
                found[flag] = str(action.metavar or action.dest.upper())
    return found


def commands_in(text: str) -> Iterator[str]:
    """Every `detector ...` command line of the shell code blocks, continuations joined, comments cut,
    each `<placeholder>` one word."""
    fence: str | None = None  # the language of the code block we are in
    block: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if fence in SHELL:
                yield from _command_lines("\n".join(block))
            fence, block = (line.strip().removeprefix("```") if fence is None else None), []
        elif fence is not None:
            block.append(line)


def _command_lines(block: str) -> Iterator[str]:
    for raw in block.replace("\\\n", " ").splitlines():
        line = raw.strip().removeprefix("$ ").split("  #")[0].split(" # ")[0].strip()
        if line.startswith("detector "):
            yield PLACEHOLDER.sub("PLACEHOLDER", line)


def test_every_option_of_every_command_has_help() -> None:
    """Each option and positional argument of each subcommand (and the top level) has a help text."""
    parsers = {"detector": build_parser(), **subcommands()}
    missing = [f"{name} {action.option_strings or action.dest}" for name, parser in parsers.items()
               for action in parser._actions
               if not isinstance(action, argparse._SubParsersAction) and not action.help]
    assert missing == []


def test_every_command_has_a_description() -> None:
    """`detector COMMAND --help` starts with what the command does; `outbox --help` explains each verb."""
    for name, parser in subcommands().items():
        assert parser.description, name
    outbox = subcommands()["outbox"].format_help()
    for verb in ("list", "retry", "purge"):
        assert re.search(rf"^  {verb}  ", outbox, re.M), verb
    run = subcommands()["run"].format_help()
    assert "--file -" in run and "standard input" in run


def test_version_prints_the_package_version() -> None:
    """`detector --version` prints `detector <version of the installed package>` and exits 0."""
    done = subprocess.run([sys.executable, "-m", "detector", "--version"], capture_output=True, text=True,
                          cwd=REPO, check=False)
    assert (done.returncode, done.stdout) == (0, f"detector {package_version()}\n")
    assert package_version() not in ("", "unknown")


def test_readme_lists_every_command_in_the_words_of_its_help() -> None:
    """README's list of commands has one line per subcommand, the same words as `detector --help`."""
    readme = (REPO / "README.md").read_text()
    assert set(COMMAND_HELP) == set(subcommands())
    for name, text in COMMAND_HELP.items():
        assert f"- `detector {name}` {text}.\n" in readme, name


def readme_synopses() -> dict[str, str]:
    """README's table of commands: command -> its synopsis, RULE OPTIONS expanded."""
    readme = (REPO / "README.md").read_text()
    rule_options = re.search(r"^`RULE OPTIONS`.*?: `(\[--rules[^`]+)`", readme, re.M)
    assert rule_options, "README defines RULE OPTIONS"
    rows = re.findall(r"^\| `detector ([a-z-]+)((?:[^`]|\\`)*)` \|", readme, re.M)
    return {name: synopsis.replace("[RULE OPTIONS]", rule_options.group(1)) for name, synopsis in rows}


def test_readme_synopses_name_every_option_as_the_parser_does() -> None:
    """Each command's synopsis in README names exactly its options, with the same choices and metavars."""
    synopses = readme_synopses()
    assert set(synopses) == set(subcommands())
    for name, parser in subcommands().items():
        written = {flag: arg or None for flag, arg in OPTION.findall(synopses[name])}
        assert written == options_of(parser), name


def test_configuration_flag_table_matches_the_parser() -> None:
    """docs/configuration.md's table of flags: each flag, its argument and the commands that take it."""
    doc = (REPO / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `(--[a-z-]+)(?: ([^`]+))?`(?: \(repeatable\))? \| `[a-z_]+`.*\| ((?:`[a-z-]+`,? ?)+) \|$",
                      doc, re.M)
    assert len(rows) >= 6
    parsers = subcommands()
    for flag, arg, commands in rows:
        named = re.findall(r"`([a-z-]+)`", commands)
        for command in named:
            assert options_of(parsers[command]).get(flag, "missing") == (arg or None), (flag, command)
        for command, parser in parsers.items():  # every command that takes the flag from the config's key
            if command in ("run", "send-test-alert", "outbox") and flag in options_of(parser):
                assert command in named, (flag, command)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_command_examples_parse(doc: Path) -> None:
    """Every `detector ...` line of a shell block parses with the real parser (options, choices, arguments)."""
    parser = build_parser()
    for line in commands_in(doc.read_text()):
        try:
            parser.parse_args(shlex.split(line)[1:])
        except Exception as exc:  # the parser's usage errors, as `detector` raises them
            pytest.fail(f"{doc.name}: {line!r}: {exc}")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_inline_commands_name_real_options(doc: Path) -> None:
    """Inline `detector COMMAND --option ...` mentions name a real command and options it takes."""
    parsers = subcommands()
    for span in INLINE.findall(doc.read_text()):
        if "[" in span:  # a synopsis: checked against the table above
            continue
        words = span.split()
        assert words[1] in parsers, f"{doc.name}: {span!r}"
        known = options_of(parsers[words[1]])
        for flag, arg in OPTION.findall(span):
            assert flag in known or flag == "--help", f"{doc.name}: {span!r}: {flag}"
            choices = known.get(flag)
            if arg and choices and "\\|" in choices and arg not in ("...", "FILE"):
                assert arg in choices.split("\\|"), f"{doc.name}: {span!r}: {arg}"


def test_send_test_alert_prints_what_the_readme_says() -> None:
    """`send-test-alert` prints `NAME: OK delivered (alert id ID)` per output, as README and operations.md show."""
    done = subprocess.run([sys.executable, "-m", "detector", "send-test-alert"], capture_output=True, text=True,
                          cwd=REPO, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^stdout: OK delivered \(alert id [0-9a-f-]{36}\)$", done.stdout, re.M), done.stdout
    readme = (REPO / "README.md").read_text()
    assert "`NAME: OK delivered (alert id ID)`" in readme
    assert re.search(r"^ops-slack: OK delivered \(alert id [0-9a-f-]{36}\)$",
                     (REPO / "docs" / "operations.md").read_text(), re.M)
