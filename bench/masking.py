#!/usr/bin/env python3
"""Benchmark of credential masking: alerts/s from audit line to redacted alert, and the masker alone.

    .venv/bin/python bench/masking.py [--seconds S] [--repeat K]

Rows (each the best of K runs of about S seconds, in this process, one thread):

- `alerts <mix>`: audit lines that all fire shipped rules (rules/), parsed, evaluated, rendered
  (ka.exec.command is masked while rendering) and built into alerts (enrich + redact): alerts/s
  and us per alert. `plain` is a mix with nothing to mask (a GET from outside the internal
  networks, a ConfigMap changed in kube-system, a port-forward), `secrets` one where every
  alert carries credentials (exec commands with passwords, a URI with a token, a ConfigMap
  with credential keys, a pod with a password in its env), `mixed` is 9 plain lines to 1 secret.
- `mask_secrets <text>`: calls/s of the text masker on a short clean value, an exec command
  with a password, and a 2 kB JSON document with credential keys.

Times are this process's CPU time (`time.process_time`), so that other load on the machine
counts less; run it before and after a masking change on the same machine, interleaved (with
PYTHONPATH pointing at a checkout of the other version); the numbers are relative.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from detector.alert.build import AlertBuilder, build_alerts
from detector.event import AuditEvent
from detector.parse.audit import parse_line
from detector.redact import mask_secrets
from detector.rules.loader import load_rules

REPO = Path(__file__).resolve().parents[1]
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


def lines(bodies: list[dict[str, Any]], count: int) -> list[bytes]:
    """`count` audit lines cycling through `bodies`, each with its own auditID."""
    return [orjson.dumps({**BASE, **bodies[n % len(bodies)], "auditID": f"id-{n:08d}"}) for n in range(count)]


def alerts_per_second(line_set: list[bytes], seconds: float) -> tuple[float, float]:
    """(alerts/s, us per alert) of parse -> evaluate -> build over `line_set`, repeated for `seconds`."""
    ruleset = load_rules([REPO / "rules"])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    mixes = {"plain": lines(PLAIN, 600), "secrets": lines(SECRETS, 600),
             "mixed": lines(PLAIN * 3, 540) + lines(SECRETS, 60)}
    print(f"{'row':<34} {'per second':>12} {'us each':>9}")
    for name, line_set in mixes.items():
        rate, each = max(alerts_per_second(line_set, args.seconds) for _ in range(args.repeat))
        print(f"{'alerts ' + name:<34} {rate:>12,.0f} {each:>9.1f}")
    document = orjson.dumps({f"key{n}": f"value{n}" for n in range(60)} | {"db_password": "x1", "token": "t"}).decode()
    texts = {"clean": "system:serviceaccount:kube-system:replicaset-controller",
             "exec": "mysql -uroot -pHunter2PlainPw! app", "json 2 kB": document}
    for name, text in texts.items():
        call = functools.partial(mask_secrets, text)
        rate = max(calls_per_second(call, args.seconds) for _ in range(args.repeat))
        print(f"{'mask_secrets ' + name:<34} {rate:>12,.0f} {1e6 / rate:>9.1f}")


if __name__ == "__main__":
    main()
