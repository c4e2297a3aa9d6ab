"""Test doubles for the webhook input: certificates made on the spot, and a client that sends
like kube-apiserver's audit webhook backend (kubeconfig-style TLS/mTLS and token, EventList
batches of up to 400 whose items carry no kind/apiVersion, retries with backoff on the errors
k8s.io/apiserver's DefaultShouldRetry retries: connection errors, 429, 5xx; time-compressed)."""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BATCH_MAX = 400  # --audit-webhook-batch-max-size's default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Pki:
    """Paths of a CA, a server certificate for 127.0.0.1/localhost, a client certificate
    signed by the CA, and a client certificate signed by another CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key: Any, issuer: tuple[str, Any] | None, *, ca: bool = False, server: bool = False) -> Any:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) if issuer else name
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write(path: Path, cert: Any, key: Any | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def make_pki(root: Path) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    ca_key, rogue_ca_key = _key(), _key()
    ca = _cert("detector-test-ca", ca_key, None, ca=True)
    _write(root / "ca.crt", ca)
    for name, signer, server in (("server", ("detector-test-ca", ca_key), True),
                                 ("client", ("detector-test-ca", ca_key), False),
                                 ("rogue", ("rogue-ca", rogue_ca_key), False)):
        key = _key()
        _write(root / f"{name}.crt", _cert(f"{name}.detector.test", key, signer, server=server), key)
    return Pki(root / "ca.crt", root / "server.crt", root / "server.key", root / "client.crt", root / "client.key",
               root / "rogue.crt", root / "rogue.key")


def audit_item(n: int, verb: str = "get") -> dict[str, Any]:
    """One item of the API server's EventList: no kind/apiVersion of its own."""
    return {"level": "Metadata", "auditID": f"wh-{n:09d}", "stage": "ResponseComplete",
            "requestURI": f"/api/v1/namespaces/default/pods/p{n % 97}", "verb": verb,
            "user": {"username": "system:node:n1", "groups": ["system:nodes"]}, "sourceIPs": ["10.0.0.1"],
            "objectRef": {"resource": "pods", "namespace": "default", "name": f"p{n % 97}", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "requestReceivedTimestamp": "2026-11-22T10:00:00.000000Z",
            "stageTimestamp": "2026-11-22T10:00:00.000100Z"}


def event_list(items: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})


@dataclass
class Kubeconfig:
    """The parts of an audit webhook kubeconfig that the API server uses to send."""

    server: str  # https://127.0.0.1:PORT/audit/<cluster>
    certificate_authority: Path | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None
    token: str | None = None


class NotRetried(Exception):
    """A response the API server does not retry (4xx but 429)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"{status}: {body[:200]!r}")
        self.status, self.body = status, body


@dataclass
class ApiServerClient:
    """Sends batches like the API server's webhook backend, retrying like it (time-compressed)."""

    config: Kubeconfig
    initial_backoff: float = 0.05  # --audit-webhook-initial-backoff (10 s by default), compressed
    max_attempts: int = 60
    timeout: float = 5.0
    attempts: int = 0
    statuses: list[int] = field(default_factory=list)

    def context(self) -> ssl.SSLContext | None:
        c = self.config
        if not c.server.startswith("https"):
            return None
        ctx = ssl.create_default_context(cafile=str(c.certificate_authority) if c.certificate_authority else None)
        if c.client_certificate:
            ctx.load_cert_chain(str(c.client_certificate), str(c.client_key))
        return ctx

    def post(self, body: bytes, *, headers: dict[str, str] | None = None, path: str | None = None) -> tuple[int, bytes]:
        """One attempt: (status, body); raises OSError/ssl.SSLError on connection failures."""
        scheme, rest = self.config.server.split("://", 1)
        hostport, _, base = rest.partition("/")
        host, port = hostport.rsplit(":", 1)
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, int(port), timeout=self.timeout, context=self.context())
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self.config.token:
            sent.setdefault("Authorization", f"Bearer {self.config.token}")
        try:
            conn.request("POST", path or "/" + base, body=body, headers=sent)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def send(self, items: list[dict[str, Any]], *, gzip_body: bool = False) -> int:
        """Send one batch until it is accepted (2xx); returns the attempts it took."""
        body = event_list(items)
        headers = {}
        if gzip_body:
            body, headers = gzip.compress(body), {"Content-Encoding": "gzip"}
        delay = self.initial_backoff
        for attempt in range(1, self.max_attempts + 1):
            self.attempts += 1
            try:
                status, answer = self.post(body, headers=headers)
            except (OSError, ssl.SSLError, http.client.HTTPException):
                status, answer = 0, b""
            self.statuses.append(status)
            if 200 <= status < 300:
                return attempt
            if status and status != 429 and status < 500:
                raise NotRetried(status, answer)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise AssertionError(f"batch not accepted after {self.max_attempts} attempts: {self.statuses[-5:]}")

    def send_all(self, items: list[dict[str, Any]], batch: int = BATCH_MAX) -> None:
        for start in range(0, len(items), batch):
            self.send(items[start:start + batch])
