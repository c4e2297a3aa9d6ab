#!/usr/bin/env python3
"""Benchmark of credential masking: alerts/s from audit line to redacted alert, and the masker alone.

    .venv/bin/python bench/masking.py [--seconds S] [--repeat K] [--baseline PATH ...]

Rows (each the best of K runs of about S seconds, in this process, one thread):

- `alerts <mix>`: audit lines that all fire shipped rules (the rules/ of the checkout `detector`
  is imported from), parsed, evaluated, rendered (ka.exec.command is masked while rendering)
  and built into alerts (enrich + redact): alerts/s and us per alert. `plain` is a mix with
  nothing to mask (a GET from outside the internal networks, a ConfigMap changed in
  kube-system, a port-forward), `secrets` one where every alert carries credentials (exec
  commands with passwords, a URI with a token, a ConfigMap with credential keys, a pod with a
  password in its env), `mixed` is 9 plain lines to 1 secret.
- `mask_secrets <text>`: calls/s of the text masker on a short clean value, an exec command
  with a password, and a 2 kB JSON document with credential keys.

Times are this process's CPU time (`time.process_time`), so that other load on the machine
counts less; the numbers are relative. `--baseline PATH` (a checkout of another version, e.g.
`git worktree add /tmp/before f5be974`; may be given more than once) runs the same bench, from
this file, against each tree in child processes (PYTHONPATH=tree), interleaved round by round
(K rounds), and prints each row's best per tree side by side with the change against the first
baseline: compare only numbers taken in the same run on a loaded machine.

Every secret in the lines carries the line's number, so a memo of masked values cannot answer
a line from an earlier one (the 600 lines of a mix cycle).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

import detector
from detector.alert.build import AlertBuilder, build_alerts
from detector.event import AuditEvent
from detector.parse.audit import parse_line
from detector.redact import mask_secrets
from detector.rules.loader import load_rules

# The shipped rules of the checkout `detector` is imported from (each tree is measured with its own).
RULES = Path(detector.__file__).resolve().parents[1] / "rules"
BASE: dict[str, Any] = {
    "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "stage": "ResponseComplete",
    "user": {"username": "alice@example.com", "groups": ["system:authenticated"]}, "sourceIPs": ["203.0.113.9"],
    "userAgent": "kubectl/v1.29.0 (linux/amd64) kubernetes/abcdef", "responseStatus": {"metadata": {}, "code": 200},
    "requestReceivedTimestamp": "2026-11-22T10:00:00.000000Z", "stageTimestamp": "2026-11-22T10:00:00.000100Z",
}


def _exec(command: list[str]) -> dict[str, Any]:
    query = "&".join("command=" + arg.replace(" ", "+") for arg in command)
    return {"verb": "create", "requestURI": f"/api/v1/namespaces/db/pods/mysql-0/exec?{query}&container=db&stdin=true",
            "objectRef": {"resource": "pods", "subresource": "exec", "namespace": "db", "name": "mysql-0",
                          "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 101}, "stage": "ResponseStarted"}


def _configmap(data: dict[str, str]) -> dict[str, Any]:
    return {"verb": "create", "requestURI": "/api/v1/namespaces/kube-system/configmaps",
            "objectRef": {"resource": "configmaps", "namespace": "kube-system", "name": "app", "apiVersion": "v1"},
            "requestObject": {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "app"}, "data": data}}


PLAIN = [
    {"verb": "get", "requestURI": "/api/v1/namespaces/default/pods/web-1",
     "objectRef": {"resource": "pods", "namespace": "default", "name": "web-1", "apiVersion": "v1"}},
    _configmap({"log_level": "debug", "feature.flags": "a,b,c"}),
    {"verb": "create", "requestURI": "/api/v1/namespaces/default/pods/web-1/portforward?ports=8080",
     "objectRef": {"resource": "pods", "subresource": "portforward", "namespace": "default", "name": "web-1",
                   "apiVersion": "v1"}, "responseStatus": {"metadata": {}, "code": 101}},
]
SECRETS = [
    _exec(["mysql", "-uroot", "-pHunter2PlainPw!", "app"]),
    _exec(["sh", "-c", "curl -u admin:Hunter2PlainPw! https://db.internal/"]),
    _exec(["psql", "--password", "Hunter2Secret"]),
    {**_exec(["redis-cli", "-a", "Hunter2PlainPw!"]), "stage": "ResponseComplete"},
    {"verb": "get", "requestURI": "/api/v1/namespaces/default/pods?access_token=Tok3nSecret&watch=true",
     "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"}},
    _configmap({"aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG", "db_password": "Hunter2PlainPw!"}),
    {"verb": "create", "requestURI": "/api/v1/namespaces/kube-system/pods",
     "objectRef": {"resource": "pods", "namespace": "kube-system", "name": "x", "apiVersion": "v1"},
     "requestObject": {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "x"}, "spec": {"containers": [
         {"name": "c", "image": "nginx", "env": [{"name": "DB_PASSWORD", "value": "Hunter2PlainPw!"}]}]}}},
]


_SECRET_MARKS = (b"Hunter2", b"Tok3n", b"wJalr")


def lines(bodies: list[dict[str, Any]], count: int) -> list[bytes]:
    """`count` audit lines cycling through `bodies`, each with its own auditID and its own secrets
    (the line's number follows each secret's first word)."""
    out = []
    for n in range(count):
        line = orjson.dumps({**BASE, **bodies[n % len(bodies)], "auditID": f"id-{n:08d}"})
        for mark in _SECRET_MARKS:
            line = line.replace(mark, mark + b"%05d" % n)
        out.append(line)
    return out


def alerts_per_second(line_set: list[bytes], seconds: float) -> tuple[float, float]:
    """(alerts/s, us per alert) of parse -> evaluate -> build over `line_set`, repeated for `seconds`."""
    ruleset = load_rules([RULES])
    builder = AlertBuilder("bench-host", "bench-cluster")
    alerts, spent = 0, 0.0
    while spent < seconds:
        start = time.process_time()
        for line in line_set:
            event = parse_line(line)
            assert isinstance(event, AuditEvent)
            alerts += len(build_alerts(builder, ruleset.evaluate(event), None))
        spent += time.process_time() - start
    return alerts / spent, spent / max(alerts, 1) * 1e6


def calls_per_second(call: Callable[[], object], seconds: float) -> float:
    """Calls/s of `call`, repeated for `seconds`."""
    calls, spent = 0, 0.0
    while spent < seconds:
        start = time.process_time()
        for _ in range(1000):
            call()
        spent += time.process_time() - start
        calls += 1000
    return calls / spent


def rows(seconds: float, repeat: int) -> dict[str, tuple[float, float]]:
    """Each row's (per second, us each), the best of `repeat` runs of `seconds`."""
    mixes = {"plain": lines(PLAIN, 600), "secrets": lines(SECRETS, 600),
             "mixed": lines(PLAIN * 3, 540) + lines(SECRETS, 60)}
    out: dict[str, tuple[float, float]] = {}
    for name, line_set in mixes.items():
        out["alerts " + name] = max(alerts_per_second(line_set, seconds) for _ in range(repeat))
    document = orjson.dumps({f"key{n}": f"value{n}" for n in range(60)} | {"db_password": "x1", "token": "t"}).decode()
    texts = {"clean": "system:serviceaccount:kube-system:replicaset-controller",
             "exec": "mysql -uroot -pHunter2PlainPw! app", "json 2 kB": document}
    for name, text in texts.items():
        call = functools.partial(mask_secrets, text)
        rate = max(calls_per_second(call, seconds) for _ in range(repeat))
        out["mask_secrets " + name] = (rate, 1e6 / rate)
    return out


def side_by_side(trees: list[str], seconds: float, repeat: int) -> None:
    """The bench against each tree in child processes, a round of each per repeat; best per tree."""
    best: list[dict[str, float]] = [{} for _ in trees]
    for _round in range(repeat):
        for index, tree in enumerate(trees):
            env = {**os.environ, "PYTHONPATH": tree}
            done = subprocess.run([sys.executable, __file__, "--seconds", str(seconds), "--repeat", "1", "--json"],
                                  env=env, check=False, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"bench against {tree} failed:\n{done.stderr}")
            for row, each in json.loads(done.stdout).items():
                best[index][row] = min(best[index].get(row, float("inf")), each)
    names = [Path(tree).name or tree for tree in trees]
    print(f"{'us each':<26}" + "".join(f" {name[-12:]:>12}" for name in names) + "  change vs " + names[1])
    for row in best[0]:
        cells = "".join(f" {column[row]:>12.1f}" for column in best)
        print(f"{row:<26}{cells}  {(best[0][row] / best[1][row] - 1) * 100:+6.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", action="append", default=[], metavar="PATH",
                        help="also run against the checkout at PATH (repeatable), side by side")
    parser.add_argument("--json", action="store_true", help="print {row: us each} as JSON")
    args = parser.parse_args()
    if args.baseline:
        side_by_side([str(Path(detector.__file__).parents[1]), *args.baseline], args.seconds, args.repeat)
        return
    results = rows(args.seconds, args.repeat)
    if args.json:
        print(json.dumps({row: each for row, (_rate, each) in results.items()}))
        return
    print(f"{'row':<34} {'per second':>12} {'us each':>9}")
    for row, (rate, each) in results.items():
        print(f"{row:<34} {rate:>12,.0f} {each:>9.1f}")


if __name__ == "__main__":
    main()
