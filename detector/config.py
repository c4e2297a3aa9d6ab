"""Configuration of `detector run`: a YAML file, then command-line flags on top.

Every problem is one ConfigError naming the file and the key (`config.yaml: start_at: must be
one of end, beginning`). Secrets are never read here: outputs name the env var or file that
holds them, and the alert stage reads them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from detector.errors import ConfigError, Location
from detector.rules.model import Priority
from detector.rules.yamlload import MAX_CONFIG_FILE_BYTES, YamlError, load_typed, read_capped
from detector.source.kafkaconf import KafkaSettings, is_loopback_host, kafka_settings

DEFAULT_FILE = "/var/log/kubernetes/audit/audit.log"
DEFAULT_STATE_DIR = "/var/lib/detector"


@dataclass(frozen=True, slots=True)
class InputConfig:
    """`input:`: where events come from. `file` follows `file` (the default); `webhook`
    receives them over HTTPS into a spool in state_dir (detector/source/webhook.py); `kafka`
    consumes topics in a consumer group into that spool (detector/source/kafka.py, its keys in
    `kafka`)."""

    type: str = "file"
    listen: str = "0.0.0.0:9443"
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    client_ca_file: str | None = None
    token_file: str | None = None
    insecure_plain_http: bool = False
    max_body_bytes: int = 12 << 20  # 12 MiB: a full batch of 400 events with request bodies
    max_concurrent_requests: int = 8
    kafka: KafkaSettings | None = None  # type kafka: brokers, topics, group_id, security, client, ...


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything `detector run` needs to know, validated."""

    file: str = DEFAULT_FILE
    state_dir: str = DEFAULT_STATE_DIR
    start_at: str = "end"
    rules: tuple[str, ...] = ()
    rule_matching: str = "all"
    min_priority: Priority = Priority.DEBUG
    trusted_proxies: int = 0
    internal_networks: tuple[str, ...] | None = None
    max_line_bytes: int = 1 << 20
    watch: str = "auto"
    poll_interval: float = 0.25
    log_format: str = "json"
    log_level: str = "info"
    cluster_name: str | None = None
    checkpoint_interval: float = 1.0
    outputs: Any = None
    throttle: Any = None
    outbox: Any = None
    metrics: dict[str, str] | None = None
    input: InputConfig = InputConfig()
    source: str = field(default="<defaults>", compare=False)


_CHOICES = {
    "start_at": ("end", "beginning"),
    "rule_matching": ("all", "first"),
    "watch": ("auto", "inotify", "poll"),
    "log_format": ("json", "console"),
    "log_level": ("debug", "info", "warning", "error"),
}
_RAW = ("outputs", "throttle", "outbox", "metrics")


def load_config(path: str | None) -> RunConfig:
    """Read and validate a config file (None: all defaults)."""
    if path is None:
        return RunConfig()
    try:
        data = load_typed(read_capped(Path(path), MAX_CONFIG_FILE_BYTES, "the config file"), path)
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", Location(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config file: {exc}", Location(path)) from None
    except YamlError as exc:
        raise ConfigError(exc.message, exc.location) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the config file must be a YAML mapping", Location(path))
    return apply(RunConfig(source=path), data, path)


def apply(config: RunConfig, values: dict[str, Any], where: str) -> RunConfig:
    """A copy of `config` with `values` (from a file or flags) validated and applied."""
    known = {f.name for f in fields(RunConfig)} - {"source"}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown key {key!r} (known: {', '.join(sorted(known))})", Location(where))
        if value is None and key not in _RAW:
            continue
        changes[key] = _validate(key, value, where)
    return replace(config, **changes)


def _validate(key: str, value: Any, where: str) -> Any:
    if key == "metrics":
        return _metrics(value, where)
    if key == "input":
        return _input(value, where)
    if key in _RAW:
        return value  # outputs/throttle/outbox: validated by the alert stage
    check = _CHECKS.get(key)
    if key in _CHOICES:
        check = _choice(_CHOICES[key])
    assert check is not None, key
    try:
        return check(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}", Location(where)) from None


def _metrics(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError("metrics: must be a mapping like {listen: \"0.0.0.0:9477\"}", Location(where))
    unknown = set(value) - {"listen"}
    if unknown:
        raise ConfigError(f"metrics: unknown key {sorted(unknown)[0]!r} (known: listen)", Location(where))
    listen = value.get("listen")
    if listen is None:
        return {}
    # Imported here: detector.metrics pulls in prometheus_client and http.server (~30 ms),
    # which every command without a metrics setting (scan, validate, ...) would pay.
    from detector.metrics import parse_listen  # noqa: PLC0415

    try:
        parse_listen(str(listen))
    except ValueError as exc:
        raise ConfigError(f"metrics.listen: {exc}", Location(where)) from None
    return {"listen": str(listen)}


def _choice(choices: tuple[str, ...]) -> Any:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)} (got {value!r})")
        return str(value)

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _paths(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ValueError("must be a path or a list of paths")
    return tuple(items)


def _priority(value: Any) -> Priority:
    priority = Priority.parse(value) if isinstance(value, str) else None
    if priority is None:
        raise ValueError(f"must be a Falco priority (got {value!r})")
    return priority


def _count(minimum: int) -> Any:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum}")
        return value

    return check


def _seconds(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError("must be a positive number of seconds")
    return float(value)


def _networks(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError("must be a list of CIDR networks")
    for item in items:
        try:
            ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not a CIDR network") from None
    return tuple(str(i) for i in items)


_CHECKS: dict[str, Any] = {
    "file": _text, "state_dir": _text, "cluster_name": _text, "rules": _paths, "min_priority": _priority,
    "trusted_proxies": _count(0), "max_line_bytes": _count(1), "poll_interval": _seconds,
    "checkpoint_interval": _seconds, "internal_networks": _networks,
}


# -- input: ---------------------------------------------------------------------------------------
_INPUT_TYPES = ("file", "webhook", "kafka")
_INPUT_FILES = ("tls_cert_file", "tls_key_file", "client_ca_file", "token_file")


def _input(value: Any, where: str) -> InputConfig:
    """The `input:` mapping; every error names `input.<key>`. A webhook needs TLS (a
    certificate and key) and client authentication (a client CA and/or a token file), unless
    `insecure_plain_http` on a loopback address (a sidecar or a local test)."""
    if not isinstance(value, dict):
        raise ConfigError("input: must be a mapping like {type: webhook, listen: \"0.0.0.0:9443\", ...}",
                          Location(where))
    if value.get("type") == "kafka":
        return InputConfig(type="kafka", kafka=kafka_settings(value, where))
    known = {f.name for f in fields(InputConfig)} - {"kafka"}
    for key in value:
        if key not in known:
            raise ConfigError(f"input: unknown key {key!r} (known: {', '.join(sorted(known))})", Location(where))
    changes: dict[str, Any] = {}
    for key, raw in value.items():
        if raw is None:
            continue
        try:
            changes[key] = _INPUT_CHECKS[key](raw)
        except ValueError as exc:
            raise ConfigError(f"input.{key}: {exc}", Location(where)) from None
    config = replace(InputConfig(), **changes)
    if config.type == "webhook":
        _check_webhook(config, where)
    return config


def _check_webhook(config: InputConfig, where: str) -> None:
    from detector.metrics import parse_listen  # noqa: PLC0415 - see _metrics

    try:
        host, _port = parse_listen(config.listen)
    except ValueError as exc:
        raise ConfigError(f"input.listen: {exc}", Location(where)) from None
    if config.insecure_plain_http:
        if not is_loopback_host(host):
            raise ConfigError(f"input.insecure_plain_http: allowed only with a loopback listen address "
                              f"(127.0.0.1, ::1, localhost), not {config.listen!r}: anyone on the network could "
                              f"read the events or send forged ones", Location(where))
        return
    if not (config.tls_cert_file and config.tls_key_file):
        raise ConfigError("input: a webhook needs tls_cert_file and tls_key_file (or insecure_plain_http: true "
                          "on a loopback listen address)", Location(where))
    if not (config.client_ca_file or config.token_file):
        raise ConfigError("input: a webhook needs client authentication: client_ca_file (mTLS), token_file "
                          "(bearer token), or both", Location(where))


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false (got {value!r})")
    return value


_INPUT_CHECKS: dict[str, Any] = {
    "type": _choice(_INPUT_TYPES), "listen": _text, **dict.fromkeys(_INPUT_FILES, _text),
    "insecure_plain_http": _flag, "max_body_bytes": _count(1024), "max_concurrent_requests": _count(1),
}
