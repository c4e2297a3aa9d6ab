"""The kafka input's settings (`input: {type: kafka, ...}`): validated at config load, turned
into the librdkafka configuration at start.

Validation never reads a secret: it checks that the environment variable is set and that the
file is readable, so a broken config is one line and exit 2 before anything connects. The
secrets are read by `client_config`, once, when `detector run` builds its consumer, and are
never logged (`redacted` is what the log shows of a configuration).

The options detector relies on for "commit after the alerts are stored" (no auto commit, no
automatic offset store) and those `security:` sets cannot be overridden through `client:`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any

from detector.errors import ConfigError, Location

PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
EVENT_HUBS_USER = "$ConnectionString"  # Event Hubs' Kafka endpoint: SASL PLAIN with this user name
MAX_RECORD_BYTES = 12 << 20
CLUSTER_HEADER = "cluster"
KEYS = ("type", "brokers", "topics", "group_id", "security", "client", "cluster_header", "cluster_from_key",
        "max_record_bytes")
SECURITY_KEYS = ("protocol", "ca_file", "cert_file", "key_file", "key_password_env", "key_password_file",
                 "sasl_mechanism", "username", "username_env", "password_env", "password_file",
                 "connection_string_env", "connection_string_file")
# Set by detector (its commit rule, the group) or by `security:` (with secrets read from env/files).
RESERVED = frozenset({
    "bootstrap.servers", "metadata.broker.list", "group.id", "enable.auto.commit", "enable.auto.offset.store",
    "security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password",
    "ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password", "ssl.key.pem",
    "ssl.certificate.pem", "ssl.ca.pem", "ssl.keystore.password", "sasl.oauthbearer.client.secret",
})
SECRET_WORDS = ("password", "secret", "pem", "token")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """`input.security`: TLS and SASL. Secrets are named (env var or file), never held here."""

    protocol: str = "plaintext"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password_env: str | None = None
    key_password_file: str | None = None
    sasl_mechanism: str | None = None
    username: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    connection_string_env: str | None = None
    connection_string_file: str | None = None


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """The kafka input, validated."""

    brokers: tuple[str, ...]
    topics: tuple[str, ...]  # names, or patterns starting with ^ (librdkafka subscribes to every match)
    group_id: str
    security: KafkaSecurity = KafkaSecurity()
    client: tuple[tuple[str, str], ...] = ()  # librdkafka options passed through
    cluster_header: str | None = CLUSTER_HEADER  # a record header naming the cluster; else the key
    cluster_from_key: bool = True
    max_record_bytes: int = MAX_RECORD_BYTES


def kafka_settings(value: dict[str, Any], where: str) -> KafkaSettings:
    """`input:` of type kafka; every error is one ConfigError naming `input.<key>`."""
    for key in value:
        if key not in KEYS:
            _fail(f"input: unknown key {key!r} for type kafka (known: {', '.join(sorted(KEYS))})", where)
    missing = [k for k in ("brokers", "topics", "group_id") if value.get(k) in (None, "", [])]
    if missing:
        _fail(f"input.{missing[0]}: required for type kafka", where)
    try:
        brokers = _brokers(value["brokers"])
        topics = _topics(value["topics"])
        group = _text(value["group_id"])
        client = _client(value.get("client"))
        header = value.get("cluster_header", CLUSTER_HEADER)
        header = None if header is None else _text(header)
        from_key = value.get("cluster_from_key", True)
        if not isinstance(from_key, bool):
            raise _Bad("cluster_from_key", f"must be true or false (got {from_key!r})")
        size = value.get("max_record_bytes", MAX_RECORD_BYTES)
        if not isinstance(size, int) or isinstance(size, bool) or size < 1024:
            raise _Bad("max_record_bytes", "must be an integer >= 1024")
    except _Bad as exc:
        _fail(f"input.{exc.key}: {exc.message}", where)
    security = _security(value.get("security"), brokers, where)
    return KafkaSettings(brokers, topics, group, security, client, header, from_key, size)


class _Bad(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


def _fail(message: str, where: str) -> None:
    raise ConfigError(message, Location(where))


def _text(value: Any, key: str = "group_id") -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(key, "must be a non-empty string")
    return value


def _brokers(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _Bad("brokers", "must be a list of host:port")
    for item in items:
        host, _, port = str(item).rpartition(":")
        if not isinstance(item, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _Bad("brokers", f"{item!r} is not host:port")
    return tuple(items)


def _topics(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise _Bad("topics", "must be a topic name, a pattern starting with ^, or a list of them")
    for item in items:
        if item.startswith("^"):
            try:
                re.compile(item)
            except re.error as exc:
                raise _Bad("topics", f"{item!r} is not a valid pattern: {exc}") from None
        elif not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", item):
            raise _Bad("topics", f"{item!r} is not a topic name (letters, digits, . _ -; a pattern starts with ^)")
    return tuple(items)


def _client(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _Bad("client", "must be a mapping of librdkafka options, like {fetch.max.bytes: 52428800}")
    out = []
    for key, raw in value.items():
        if not isinstance(key, str) or not key:
            raise _Bad("client", f"{key!r} is not an option name")
        if key in RESERVED:
            raise _Bad(f"client.{key}", "is set by detector (brokers, group_id, its commit rule) or by input.security")
        if not isinstance(raw, str | int | float | bool):
            raise _Bad(f"client.{key}", "must be a string, a number or true/false")
        out.append((key, str(raw).lower() if isinstance(raw, bool) else str(raw)))
    return tuple(out)


def _security(value: Any, brokers: tuple[str, ...], where: str) -> KafkaSecurity:
    if value is None:
        return KafkaSecurity()
    if not isinstance(value, dict):
        _fail("input.security: must be a mapping like {protocol: sasl_ssl, sasl_mechanism: SCRAM-SHA-512, ...}",
              where)
    for key, raw in value.items():
        if key not in SECURITY_KEYS:
            _fail(f"input.security: unknown key {key!r} (known: {', '.join(SECURITY_KEYS)})", where)
        if raw is not None and (not isinstance(raw, str) or not raw):
            _fail(f"input.security.{key}: must be a non-empty string", where)
    sec = {k: v for k, v in value.items() if v is not None}
    try:
        return _check_security(sec, brokers)
    except _Bad as exc:
        _fail(f"input.security.{exc.key}: {exc.message}", where)
        raise AssertionError from None  # unreachable: _fail raises


def _check_security(sec: dict[str, str], brokers: tuple[str, ...]) -> KafkaSecurity:
    connection: list[str] = [k for k in ("connection_string_env", "connection_string_file") if k in sec]
    if connection:
        for key in ("sasl_mechanism", "username", "username_env", "password_env", "password_file"):
            if key in sec:
                raise _Bad(key, f"not with {connection[0]} (Event Hubs: the user is {EVENT_HUBS_USER}, "
                                "the password the connection string)")
        sec.setdefault("protocol", "sasl_ssl")
    elif "sasl_mechanism" in sec:
        sec.setdefault("protocol", "sasl_ssl")
    elif any(k in sec for k in ("ca_file", "cert_file", "key_file")):
        sec.setdefault("protocol", "ssl")
    protocol = sec.get("protocol", "plaintext").lower()
    if protocol not in PROTOCOLS:
        raise _Bad("protocol", f"must be one of {', '.join(PROTOCOLS)} (got {sec['protocol']!r})")
    sec["protocol"] = protocol
    if connection:
        _check_connection(sec, protocol, connection)
    elif protocol.startswith("sasl_"):
        _check_sasl(sec, protocol, brokers)
    else:
        for key in ("sasl_mechanism", "username", "username_env", "password_env", "password_file"):
            if key in sec:
                raise _Bad(key, f"needs protocol sasl_ssl or sasl_plaintext (got {protocol})")
    _check_tls(sec, protocol)
    return KafkaSecurity(**sec)


def _check_connection(sec: dict[str, str], protocol: str, connection: list[str]) -> None:
    if len(connection) > 1:
        raise _Bad(connection[1], f"set only one of {' and '.join(connection)}")
    if protocol != "sasl_ssl":
        raise _Bad("protocol", f"an Event Hubs connection string needs sasl_ssl (got {protocol})")
    _check_secret(sec, connection[0])


def _check_sasl(sec: dict[str, str], protocol: str, brokers: tuple[str, ...]) -> None:
    mechanism = sec.get("sasl_mechanism")
    if mechanism is None:
        raise _Bad("sasl_mechanism", f"required with protocol {protocol} (one of {', '.join(MECHANISMS)})")
    if mechanism.upper() not in MECHANISMS:
        raise _Bad("sasl_mechanism", f"must be one of {', '.join(MECHANISMS)} (got {mechanism!r})")
    sec["sasl_mechanism"] = mechanism.upper()
    users = [k for k in ("username", "username_env") if k in sec]
    if len(users) != 1:
        raise _Bad("username", "set exactly one of username and username_env")
    if users[0] == "username_env":
        _check_secret(sec, "username_env")
    passwords = [k for k in ("password_env", "password_file") if k in sec]
    if len(passwords) != 1:
        raise _Bad("password_env", "set exactly one of password_env and password_file (the password is never "
                                   "written in the config)")
    _check_secret(sec, passwords[0])
    if protocol == "sasl_plaintext" and sec["sasl_mechanism"] == "PLAIN" and not all(map(_loopback, brokers)):
        raise _Bad("protocol", "SASL PLAIN over sasl_plaintext sends the password in clear to a broker that is "
                               "not on loopback: use sasl_ssl")


def _check_tls(sec: dict[str, str], protocol: str) -> None:
    tls_keys = [k for k in ("ca_file", "cert_file", "key_file", "key_password_env", "key_password_file") if k in sec]
    if tls_keys and protocol not in ("ssl", "sasl_ssl"):
        raise _Bad(tls_keys[0], f"needs protocol ssl or sasl_ssl (got {protocol})")
    if ("cert_file" in sec) != ("key_file" in sec):
        raise _Bad("cert_file" if "key_file" in sec else "key_file", "cert_file and key_file go together")
    for key in ("ca_file", "cert_file", "key_file"):
        if key in sec:
            _check_file(key, sec[key])
    key_passwords = [k for k in ("key_password_env", "key_password_file") if k in sec]
    if len(key_passwords) > 1:
        raise _Bad(key_passwords[1], "set only one of key_password_env and key_password_file")
    if key_passwords:
        if "key_file" not in sec:
            raise _Bad(key_passwords[0], "needs key_file")
        _check_secret(sec, key_passwords[0])


def _check_secret(sec: dict[str, str], key: str) -> None:
    if key.endswith("_env"):
        if not os.environ.get(sec[key]):
            raise _Bad(key, f"the environment variable {sec[key]} is not set or empty")
    else:
        _check_file(key, sec[key])


def _check_file(key: str, path: str) -> None:
    if not os.path.isfile(path):
        raise _Bad(key, f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise _Bad(key, f"{path}: not readable")


def _loopback(broker: str) -> bool:
    return is_loopback_host(broker.rpartition(":")[0].strip("[]"))


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1): where plain text may be allowed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- at start: the librdkafka configuration -----------------------------------------------------------
def client_config(settings: KafkaSettings) -> dict[str, str]:
    """The consumer's librdkafka configuration, secrets read from their env vars and files now.
    Raises ConfigError (one line, naming the key, never the secret) if one cannot be read."""
    conf = {
        "bootstrap.servers": ",".join(settings.brokers), "group.id": settings.group_id,
        "enable.auto.commit": "false", "enable.auto.offset.store": "false", "auto.offset.reset": "earliest",
        "enable.partition.eof": "false", "client.id": "detector",
        "receive.message.max.bytes": str(max(100 << 20, settings.max_record_bytes * 2)),
        # Memory: librdkafka prefetches up to 64 MiB (and 100,000 records a partition) by default;
        # 2 MiB (~4,000 audit events, ~40 ms of evaluation) keeps a detector process well under
        # 80 MB (4 MiB cost ~14 MB more, 64 MiB over 100 MB).
        "queued.max.messages.kbytes": "2048", "queued.min.messages": "20000", "fetch.max.bytes": str(2 << 20),
        # With a prefetch that small the queue is full whenever evaluation is the slower side, and
        # librdkafka then postpones the next fetch by this long: its default, 1 s, held one
        # instance to ~11,000 events/s at 10% of a core, idle while a full queue's worth waited.
        "fetch.queue.backoff.ms": "10",
    }
    conf.update(settings.client)
    sec = settings.security
    conf["security.protocol"] = sec.protocol
    if sec.protocol.endswith("ssl"):
        conf["ssl.ca.location"] = "probe"  # the system's CA store (the wheel's librdkafka has no default path)
    for key, option in (("ca_file", "ssl.ca.location"), ("cert_file", "ssl.certificate.location"),
                        ("key_file", "ssl.key.location")):
        if getattr(sec, key):
            conf[option] = getattr(sec, key)
    if sec.key_password_env or sec.key_password_file:
        conf["ssl.key.password"] = _secret(sec, "key_password")
    if sec.connection_string_env or sec.connection_string_file:
        text = _secret(sec, "connection_string")
        if not text.startswith("Endpoint=sb://"):
            raise ConfigError("input.security.connection_string: not an Event Hubs connection string "
                              "(Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...)")
        conf.update({"sasl.mechanism": "PLAIN", "sasl.username": EVENT_HUBS_USER, "sasl.password": text})
    elif sec.sasl_mechanism:
        conf["sasl.mechanism"] = sec.sasl_mechanism
        conf["sasl.username"] = sec.username or _secret(sec, "username")
        conf["sasl.password"] = _secret(sec, "password")
    return conf


def _secret(sec: KafkaSecurity, name: str) -> str:
    env, path = getattr(sec, f"{name}_env", None), getattr(sec, f"{name}_file", None)
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise ConfigError(f"input.security.{name}_env: the environment variable {env} is not set or empty")
        return value
    assert path is not None
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read(1 << 16).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"input.security.{name}_file: cannot read {path}: "
                          f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    if not value:
        raise ConfigError(f"input.security.{name}_file: {path} is empty")
    return value


def redacted(conf: dict[str, str]) -> dict[str, str]:
    """A librdkafka configuration fit for a log line: every secret-looking value hidden."""
    return {k: ("<hidden>" if any(w in k for w in SECRET_WORDS) else v) for k, v in conf.items()}
