"""Parity with Falco's two k8s audit regression suites (../shared/falco/tests.md).

Every entry of `tests_expected.json` (the legacy avocado suite and the falcosecurity/testing Go
suite, 66 tests each) runs through `detector scan --rule-matching first --format json` on the
staged rules files and traces, and every expectation of the entry is asserted. Where the Go
suite asserts nothing, we assert what real Falco does (tests.md §3 notes). The 7 legacy
`compat_engine_v4_*` tests load a rules file that modern Falco rejects (`contains` on a list
field, line 284): we assert that we reject it too, and that the tests pass with the fixed copy
from the testing repository (tests.md §4).

All entries run in-process through `detector.cli.main`; a few also run as real subprocesses.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from detector import cli
from detector.rules.loader import check_rules
from detector.rules.model import Priority

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
DATA = SHARED / "falco" / "data"
if not (DATA / "tests_expected.json").is_file():
    pytest.skip("../shared (Falco reference data) is absent: parity suite not run", allow_module_level=True)

ENTRIES: list[dict[str, Any]] = json.loads((DATA / "tests_expected.json").read_text(encoding="utf-8"))
LEGACY_ENGINE_V4 = "engine_v4_k8s_audit_rules.yaml"
FIXED_ENGINE_V4 = next(DATA.glob("falcosecurity-testing@*/tests/data/rules/extracted_from_k8saudit_go/"
                                 "K8SAuditEngineV4K8SAuditRules.yaml"))
TESTING_PREFIX = "TestK8SAudit_Legacy_"

# Go tests that assert nothing about detections: what Falco emits for them (tests.md §3 notes).
# The two CompatEngineV4 trusted-pod tests load the engine_v4 rules after the 0.18.0 ones; they
# redefine the rule to use the old `falco_*_images` lists, which the testing suite's
# trust_nginx_container.yaml does not extend, so Falco alerts once. All others: no alert.
FALCO_UNASSERTED = {
    "CompatEngineV4CreatePrivilegedTrustedPod": {"Create Privileged Pod": 1},
    "CompatEngineV4CreateHostnetworkTrustedPod": {"Create HostNetwork Pod": 1},
}


@dataclass(frozen=True, slots=True)
class Run:
    """What one `detector scan` run produced."""

    code: int
    alerts: list[dict[str, Any]]
    stderr: str

    @property
    def rules(self) -> Counter[str]:
        return Counter(alert["rule"] for alert in self.alerts)

    def of_priority(self, falco_word: str) -> int:
        return sum(1 for alert in self.alerts if alert["priority"] == label(falco_word))


def label(falco_word: str) -> str:
    """The priority word we print for a Falco test's priority (WARNING -> Warning, INFO -> Informational)."""
    priority = Priority.parse(falco_word)
    assert priority is not None, falco_word
    return priority.label


def short_name(entry: dict[str, Any]) -> str:
    return str(entry["name"]).removeprefix(TESTING_PREFIX)


def entry_id(entry: dict[str, Any]) -> str:
    return f"{entry['suite']}/{short_name(entry)}"


def loads_legacy_engine_v4(entry: dict[str, Any]) -> bool:
    return any(Path(rules).name == LEGACY_ENGINE_V4 for rules in entry["rules"])


def rule_files(entry: dict[str, Any], fixed_engine_v4: bool = False) -> list[Path]:
    """The entry's rules files in load order; optionally with the testing repo's engine_v4 copy."""
    files = [DATA / rules for rules in entry["rules"]]
    if fixed_engine_v4:
        files = [FIXED_ENGINE_V4 if path.name == LEGACY_ENGINE_V4 else path for path in files]
    return files


def scan_argv(rules: Sequence[Path], trace: Path) -> list[str]:
    argv = ["scan", "--rule-matching", "first", "--format", "json"]
    for path in rules:
        argv += ["--rules", str(path)]
    return [*argv, str(trace)]


def parse_alerts(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# -- expectations ------------------------------------------------------------------------------
def assert_expectations(entry: dict[str, Any], run: Run, fixed_engine_v4: bool = False) -> None:
    """Every expectation of one suite entry, for a run of its rules over its trace."""
    if entry["suite"] == "legacy" and loads_legacy_engine_v4(entry) and not fixed_engine_v4:
        assert_engine_v4_rejected(run)
        return
    assert run.code == 0, run.stderr
    if entry["suite"] == "legacy":
        assert_legacy(entry["expect"], run)
    else:
        assert_testing(short_name(entry), entry["expect"]["asserts"], run)


def assert_engine_v4_rejected(run: Run) -> None:
    """Modern Falco refuses the legacy engine_v4 file: `contains` on a list field at line 284."""
    assert run.code == 2, run.stderr
    assert run.alerts == []  # nothing is scanned when the rules do not load
    assert "operator not supported list filters" in run.stderr
    assert f"{LEGACY_ENGINE_V4}:284" in run.stderr


def assert_legacy(expect: dict[str, Any], run: Run) -> None:
    """falco_test.py: detect (any alert or none), detect_level, exact detect_counts, stderr_contains."""
    assert bool(run.alerts) is expect["detect"], run.rules
    if expect["detect"] and "detect_level" in expect:
        assert run.of_priority(expect["detect_level"]) > 0, run.alerts
    for rule, count in expect.get("detect_counts", {}).items():
        assert run.rules[rule] == count, run.rules
    if "stderr_contains" in expect:
        assert expect["stderr_contains"] in run.stderr


def assert_testing(name: str, asserts: list[dict[str, Any]], run: Run) -> None:
    """k8saudit_test.go: NotZero/Zero on all or one priority, Equal per rule, StderrRegexp."""
    for check in asserts:
        match check["kind"]:
            case "NotZero" | "Zero":
                priority = check["priority"]
                count = len(run.alerts) if priority is None else run.of_priority(priority)
                assert (count > 0) is (check["kind"] == "NotZero"), (check, run.rules)
            case "Equal":
                assert run.rules[check["rule"]] == check["count"], (check, run.rules)
            case "StderrRegexp":
                assert re.search(check["pattern"], run.stderr), (check, run.stderr)
            case kind:
                raise AssertionError(f"unknown assertion kind {kind!r}")
    if not asserts:
        assert run.rules == Counter(FALCO_UNASSERTED.get(name, {}))


# -- running the CLI ---------------------------------------------------------------------------
_LOADED: dict[tuple[tuple[str, ...], str], Any] = {}


@pytest.fixture
def scan(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[[Sequence[Path], Path], Run]:
    """Run `detector scan` in-process; each distinct rules load order is compiled once per session
    (loading dominates the run time and a compiled Ruleset is never mutated by scanning)."""

    def check_rules_once(paths: Sequence[str], options: Any = None) -> Any:
        key = (tuple(map(str, paths)), repr(options))  # options may hold dicts: not hashable
        if key not in _LOADED:
            _LOADED[key] = check_rules(paths, options)
        return _LOADED[key]

    monkeypatch.setattr("detector.cli.check_rules", check_rules_once)

    def run(rules: Sequence[Path], trace: Path) -> Run:
        capsys.readouterr()
        code = cli.main(scan_argv(rules, trace))
        out, err = capsys.readouterr()
        return Run(code, parse_alerts(out), err)

    return run


def run_subprocess(rules: Sequence[Path], trace: Path) -> Run:
    """Run the real CLI as a child process."""
    done = subprocess.run([sys.executable, "-m", "detector", *scan_argv(rules, trace)],
                          capture_output=True, text=True, timeout=60, check=False)
    return Run(done.returncode, parse_alerts(done.stdout), done.stderr)


def entries(where: Callable[[dict[str, Any]], bool] = lambda _e: True) -> list[Any]:
    """Suite entries as pytest params with `suite/name` ids."""
    return [pytest.param(entry, id=entry_id(entry)) for entry in ENTRIES if where(entry)]


SUBPROCESS_CASES = {
    "legacy/create_configmap_private_creds",  # 6 events, exact count
    "legacy/compat_engine_v4_create_privileged_pod",  # rules rejected: exit code 2
    "testing/Fal01003",  # bad input reported on stderr, exit 0
    "testing/CreatePrivilegedPod",
}


# -- tests -------------------------------------------------------------------------------------
def test_expectations_cover_both_suites() -> None:
    """The staged expectations hold 66 tests per suite, 7 of them legacy engine_v4 load failures."""
    suites = Counter(entry["suite"] for entry in ENTRIES)
    assert suites == {"legacy": 66, "testing": 66}
    assert sum(1 for e in ENTRIES if e["suite"] == "legacy" and loads_legacy_engine_v4(e)) == 7


@pytest.mark.parametrize("entry", entries())
def test_suite_entry(entry: dict[str, Any], scan: Callable[[Sequence[Path], Path], Run]) -> None:
    """Each regression test's rules over its trace give exactly what the suite (or Falco) expects."""
    assert_expectations(entry, scan(rule_files(entry), DATA / entry["trace"]))


@pytest.mark.parametrize("entry", entries(lambda e: e["suite"] == "legacy" and loads_legacy_engine_v4(e)))
def test_legacy_engine_v4_passes_with_fixed_rules(entry: dict[str, Any],
                                                  scan: Callable[[Sequence[Path], Path], Run]) -> None:
    """The compat_engine_v4 tests pass once their rules file uses `intersects` (testing repo copy)."""
    assert_expectations(entry, scan(rule_files(entry, fixed_engine_v4=True), DATA / entry["trace"]),
                        fixed_engine_v4=True)


@pytest.mark.parametrize("entry", entries(lambda e: entry_id(e) in SUBPROCESS_CASES))
def test_suite_entry_as_subprocess(entry: dict[str, Any]) -> None:
    """The real `detector` process (exit code, stdout, stderr) meets the same expectations."""
    assert_expectations(entry, run_subprocess(rule_files(entry), DATA / entry["trace"]))


def test_subprocess_cases_exist() -> None:
    """Every subprocess case names a real suite entry."""
    assert {entry_id(e) for e in ENTRIES} >= SUBPROCESS_CASES


# -- validate ----------------------------------------------------------------------------------
def short_file(path: Path) -> str:
    """tests.md's names: FR101, KA060, KA0180, L:<legacy file>, T:<testing file>."""
    text = path.as_posix()
    if path.name == "falco_rules.yaml":
        return "FR101"
    if path.name == "k8s_audit_rules.yaml":
        return "KA060" if "k8saudit-0.6.0" in text else "KA0180"
    relative = text.split("/rules/k8s_audit/", 1)[-1] if "/rules/k8s_audit/" in text else path.name
    return ("T:" if "falcosecurity-testing@" in text else "L:") + relative


def validate_sets() -> list[tuple[Path, ...]]:
    """Each base file alone, then every load order of the suites (legacy engine_v4 -> fixed copy)."""
    bases = {path for entry in ENTRIES for path in rule_files(entry)
             if short_file(path) in ("FR101", "KA060", "KA0180")}
    sets: list[tuple[Path, ...]] = [(path,) for path in sorted(bases)]
    for entry in ENTRIES:
        files = tuple(rule_files(entry, fixed_engine_v4=True))
        if files not in sets:
            sets.append(files)
    return sets


def all_override_files() -> set[Path]:
    legacy = next(DATA.glob("falcosecurity-falco@*/test/rules/k8s_audit"))
    testing = FIXED_ENGINE_V4.parent
    found = set(legacy.rglob("*.yaml")) | set(testing.glob("*.yaml"))
    return {path for path in found if path.name != LEGACY_ENGINE_V4}


def test_validate_sets_cover_every_rules_file() -> None:
    """Every staged rules file (but the legacy engine_v4 one, rejected below) is validated."""
    covered = {path for files in validate_sets() for path in files}
    assert all_override_files() <= covered


@pytest.mark.parametrize("files", [pytest.param(f, id="+".join(map(short_file, f))) for f in validate_sets()])
def test_validate_accepts_staged_rules(files: tuple[Path, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """`detector validate` accepts the upstream rules files unchanged (warnings allowed)."""
    code = cli.main(["validate", *map(str, files)])
    out, err = capsys.readouterr()
    assert code == 0, out
    assert " error E" not in out
    assert err.startswith("OK: 0 error(s)")


def test_validate_rejects_legacy_engine_v4() -> None:
    """The legacy engine_v4 file fails validation, naming the offending line 284."""
    entry = next(e for e in ENTRIES if loads_legacy_engine_v4(e))
    files = [path for path in rule_files(entry) if path.name in ("falco_rules.yaml", LEGACY_ENGINE_V4)]
    done = subprocess.run([sys.executable, "-m", "detector", "validate", *map(str, files)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if " error E" in line]
    assert len(errors) == 1, done.stdout
    assert f"{LEGACY_ENGINE_V4}:284:" in errors[0]
    assert "operator not supported list filters" in errors[0]
