"""The webhook input: an HTTPS receiver that makes each accepted request durable in the spool.

Paths: `POST /audit` and `POST /audit/<cluster>` (kube-apiserver's audit webhook backend, batch
or blocking mode; `/clusters/<cluster>/audit` too), `POST /firehose` (Amazon Data Firehose's
HTTP endpoint delivery, protocol 1.0) and `POST /pubsub` (Pub/Sub push). The receiver does not
evaluate anything and reads nothing of a body but that it is JSON: each accepted request
becomes ONE spool line

    {"detectorSpool":"v1","cluster":<name|null>,"endpoint":"audit|firehose|pubsub",
     "requestId":"<id>","received":"<RFC 3339 UTC>","body":<the body>}

and the answer is 2xx only once that line is fsynced (source/spool.py). Before that, every
failure answers 429/5xx with Retry-After (clients retry); a body that can never be accepted
(not JSON, too big, not authenticated) gets 4xx. The body is embedded as sent: raw newlines,
which valid JSON holds only as whitespace between tokens, become spaces.

Bounds: a connection per thread, at most `max_connections` of them (more are closed at once);
at most `max_concurrent_requests` bodies in memory (more get 429); a body of at most
`max_body_bytes`, also after gzip decompression (413); socket timeouts on every read.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import socket
import ssl
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import msgspec
import orjson

from detector.errors import ConfigError
from detector.source.spool import Spool, SpoolFull

RETRY_AFTER = 1  # seconds, in every 429/503/507
DISCARD_BYTES = 1 << 20  # a refused request's body up to this size is read and dropped: the connection stays
LINGER_SECONDS = 1.0  # after refusing a bigger one, what the client still sends is dropped for this long
TLS_RELOAD_SECONDS = TOKEN_RELOAD_SECONDS = 1.0
CLUSTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}\Z")
ENDPOINTS = ("audit", "firehose", "pubsub")

Admit = Callable[[], "str | None"]  # None, or why requests are refused now (backpressure)


class Observer(Protocol):
    """Told of every request (the LiveRunner turns this into metrics and logs)."""

    def request(self, endpoint: str, status: int, reason: str | None, size: int, seconds: float) -> None: ...

    def event(self, name: str, fields: dict[str, object]) -> None: ...


@dataclass(frozen=True, slots=True)
class ReceiverSettings:
    """Where and how the receiver listens (validated by config.py)."""

    host: str
    port: int
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    client_ca_file: str | None = None
    token_file: str | None = None
    max_body_bytes: int = 12 << 20
    max_concurrent_requests: int = 8
    max_connections: int = 64
    timeout: float = 60.0  # per socket read or write, also between keep-alive requests


class Refused(Exception):
    """A request answered without being spooled: status, reason label, message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


# -- credentials -------------------------------------------------------------------------------
class Tokens:
    """`token_file`: one token per line, optionally followed by the cluster it may send for
    (`<token> <cluster>`). Re-read when the file changes (mounted Secrets are swapped)."""

    def __init__(self, path: str, on_event: Callable[[str, dict[str, object]], None]) -> None:
        self.path = path
        self._event = on_event
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._tokens: list[tuple[bytes, str | None]] = []
        self._load(first=True)

    def match(self, presented: str | None) -> tuple[bool, str | None]:
        """(accepted, the cluster the token is bound to). Every token is compared, in constant time."""
        self._refresh()
        if not presented:
            return False, None
        given = presented.encode("utf-8", "surrogateescape")
        found: tuple[bool, str | None] = (False, None)
        for token, cluster in self._tokens:
            if hmac.compare_digest(given, token):
                found = (True, cluster)
        return found

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < TOKEN_RELOAD_SECONDS:
            return
        with self._lock:
            self._checked = now
            self._load(first=False)

    def _load(self, first: bool) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            with open(self.path, "rb") as f:
                text = f.read(1 << 20).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            if first:
                why = getattr(exc, "strerror", None) or exc
                raise ConfigError(f"input.token_file: cannot read {self.path}: {why}") from None
            self._event("token_file_unreadable", {"path": self.path, "error": type(exc).__name__})
            return
        tokens = _parse_tokens(text)
        if not tokens:
            if first:
                raise ConfigError(f"input.token_file: {self.path} holds no token")
            self._event("token_file_empty", {"path": self.path, "kept": len(self._tokens)})
            return
        if not first:
            self._event("token_file_reloaded", {"path": self.path, "tokens": len(tokens)})
        self._tokens, self._stamp = tokens, stamp


def _parse_tokens(text: str) -> list[tuple[bytes, str | None]]:
    tokens = []
    for raw in text.splitlines():
        parts = raw.split()
        if not parts or parts[0].startswith("#"):
            continue
        cluster = parts[1] if len(parts) > 1 and CLUSTER.match(parts[1]) else None
        tokens.append((parts[0].encode(), cluster))
    return tokens


class TlsFiles:
    """The server's SSLContext, rebuilt when the certificate, key or CA file changes."""

    def __init__(self, cert: str, key: str, ca: str | None,
                 on_event: Callable[[str, dict[str, object]], None]) -> None:
        self._files = tuple(p for p in (cert, key, ca) if p)
        self._cert, self._key, self._ca = cert, key, ca
        self._event = on_event
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._stamp = self._stamps()
        self.context = self._build(first=True)

    def current(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked >= TLS_RELOAD_SECONDS:
            with self._lock:
                self._checked = now
                stamp = self._stamps()
                if stamp != self._stamp:
                    self._stamp = stamp
                    with contextlib.suppress(ConfigError):
                        self.context = self._build(first=False)
        return self.context

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in self._files:
            try:
                st = os.stat(path)
                out.append((st.st_ino, st.st_mtime_ns))
            except OSError:
                out.append((0, 0))
        return tuple(out)

    def _build(self, first: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self._cert, self._key)
            if self._ca:
                ctx.load_verify_locations(cafile=self._ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            message = f"input: cannot load the TLS files: {getattr(exc, 'strerror', None) or exc}"
            if first:
                raise ConfigError(message) from None
            self._event("tls_reload_failed", {"error": message})
            raise ConfigError(message) from None
        if not first:
            self._event("tls_reloaded", {"files": len(self._files)})
        return ctx


# -- the receiver ------------------------------------------------------------------------------
class WebhookReceiver:
    """Serves the webhook paths on `settings.host:port` from daemon threads until `close()`."""

    def __init__(self, settings: ReceiverSettings, spool: Spool, *, admit: Admit, observer: Observer) -> None:
        self.settings = settings
        self.spool = spool
        self.admit = admit
        self.observer = observer
        self.tls = (TlsFiles(settings.tls_cert_file, settings.tls_key_file, settings.client_ca_file, observer.event)
                    if settings.tls_cert_file and settings.tls_key_file else None)
        self.tokens = Tokens(settings.token_file, observer.event) if settings.token_file else None
        self.requests = threading.BoundedSemaphore(settings.max_concurrent_requests)
        self.closing = False
        self._connections = threading.BoundedSemaphore(settings.max_connections)
        self._live: set[_Handler] = set()
        self._live_lock = threading.Condition()
        try:
            self._server = _Server(self, (settings.host, settings.port))
        except OSError as exc:
            raise ConfigError(f"input.listen: cannot listen on {settings.host}:{settings.port}: "
                              f"{exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="detector-webhook", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self, timeout: float = 3.0) -> bool:
        """Stop accepting, let requests in flight finish (their lines are spooled and answered),
        close idle keep-alive connections. True when every connection ended within `timeout`."""
        self.closing = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        with self._live_lock:
            while self._live:
                for handler in list(self._live):
                    if not handler.busy:
                        handler.hang_up()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._live_lock.wait(min(left, 0.05))
        return True

    # -- connections (called from the server's threads) -----------------------------------------
    def open_connection(self) -> bool:
        return not self.closing and self._connections.acquire(blocking=False)

    def closed_connection(self) -> None:
        self._connections.release()

    def track(self, handler: _Handler, live: bool) -> None:
        with self._live_lock:
            if live:
                self._live.add(handler)
            else:
                self._live.discard(handler)
                self._live_lock.notify_all()

    # -- one request -----------------------------------------------------------------------------
    def authenticate(self, endpoint: str, headers: Any, query: str) -> str | None:
        """The cluster the credentials are bound to (None: any); Refused when they do not pass."""
        if self.tokens is None:
            return None
        presented = _bearer(headers.get("Authorization"))
        if endpoint == "firehose":
            presented = headers.get("X-Amz-Firehose-Access-Key") or presented
        elif endpoint == "pubsub" and presented is None:
            presented = next(iter(parse_qs(query).get("token", [])), None)
        ok, cluster = self.tokens.match(presented)
        if not ok:
            raise Refused(401, "unauthorized" if presented else "no_token",
                          "invalid token" if presented else "a token is required")
        return cluster

    def receive(self, endpoint: str, cluster: str | None, request_id: str, body: bytes,
                encoding: str | None) -> None:
        """Validate, spool durably, or raise Refused."""
        if encoding:
            if encoding.strip().lower() not in ("gzip", "x-gzip", "identity"):
                raise Refused(415, "encoding", f"unsupported Content-Encoding {encoding!r} (gzip or none)")
            if encoding.strip().lower() != "identity":
                body = gunzip(body, self.settings.max_body_bytes)
        body = json_body(body)
        received = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = b"".join((b'{"detectorSpool":"v1","cluster":', orjson.dumps(cluster), b',"endpoint":"',
                         endpoint.encode(), b'","requestId":', orjson.dumps(request_id), b',"received":"',
                         received.encode(), b'","body":', body, b"}\n"))
        try:
            self.spool.append(line)
        except SpoolFull as exc:
            self.observer.event("spool_full", {"error": str(exc)})
            raise Refused(507, "disk_full", "no space left to store the request; retry later") from None
        except OSError as exc:
            self.observer.event("spool_write_failed", {"error": f"{type(exc).__name__}: {exc.strerror or exc}"})
            raise Refused(503, "spool_error", "the request could not be stored; retry later") from None


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip `data` (one or more members) to at most `limit` bytes, else Refused."""
    out: list[bytes] = []
    size = 0
    while data:
        decompressor = zlib.decompressobj(wbits=31)
        try:
            chunk = decompressor.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise Refused(400, "bad_gzip", f"the gzip body cannot be decompressed: {exc}") from None
        size += len(chunk)
        if size > limit or decompressor.unconsumed_tail:
            raise Refused(413, "too_large", f"the body decompresses to more than max_body_bytes ({limit} bytes)")
        if not decompressor.eof:
            raise Refused(400, "bad_gzip", "the gzip body is truncated")
        out.append(chunk)
        data = decompressor.unused_data
    return b"".join(out)


def json_body(body: bytes) -> bytes:
    """`body` checked to be one JSON value (else Refused 400), on one line."""
    try:
        msgspec.json.decode(body, type=msgspec.Raw)  # validates without building objects
    except msgspec.DecodeError as exc:
        raise Refused(400, "invalid_json", f"the body is not JSON: {exc}") from None
    except RecursionError:
        pass  # valid so far, nested past the limit: the parser reads (or reports) it; a 400 would drop the batch
    body = body.strip(b" \t\r\n")
    if b"\n" in body or b"\r" in body:
        body = body.replace(b"\n", b" ").replace(b"\r", b" ")
    return body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, receiver: WebhookReceiver, address: tuple[str, int]) -> None:
        self.receiver = receiver
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:  # no reverse DNS lookup of the host name (HTTPServer's getfqdn)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.receiver.open_connection():
            self.receiver.observer.request("-", 0, "connections", 0, 0.0)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.receiver.closed_connection()

    def finish_request(self, request: Any, client_address: Any) -> None:
        receiver = self.receiver
        request.settimeout(receiver.settings.timeout)
        if receiver.tls is not None:
            try:
                request = receiver.tls.current().wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                receiver.observer.request("-", 0, "tls_handshake", 0, 0.0)
                return
        _Handler(request, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.receiver.observer.request("-", 0, "connection_error", 0, 0.0)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    busy = False

    def version_string(self) -> str:
        return "detector"

    def setup(self) -> None:
        super().setup()
        self.server.receiver.track(self, True)

    def finish(self) -> None:
        self.server.receiver.track(self, False)
        with contextlib.suppress(OSError):
            super().finish()

    def hang_up(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def parse_request(self) -> bool:
        self.busy = True  # a request line arrived: it is answered even when closing
        return super().parse_request()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (TimeoutError, ConnectionError, ssl.SSLError):
            self.close_connection = True
        finally:
            self.busy = False
            if self.server.receiver.closing:
                self.close_connection = True

    def do_POST(self) -> None:
        started = time.perf_counter()
        receiver = self.server.receiver
        split = urlsplit(self.path)
        endpoint, cluster = _route(split.path)
        request_id = (self.headers.get("X-Amz-Firehose-Request-Id") if endpoint == "firehose" else None) \
            or str(uuid.uuid4())
        size = 0
        try:
            if endpoint is None:
                raise Refused(404, "not_found", "no such path (POST /audit, /audit/<cluster>, /firehose, /pubsub)")
            bound = receiver.authenticate(endpoint, self.headers, split.query)
            if bound is not None and cluster not in (None, bound):
                raise Refused(403, "cluster_mismatch", "this token may not send events for that cluster")
            cluster = cluster or bound
            admitted = receiver.admit()
            if admitted is not None:
                raise Refused(429, admitted, f"detector is not accepting events now ({admitted}); retry later")
            if not receiver.requests.acquire(blocking=False):
                raise Refused(429, "busy", "too many requests in flight; retry later")
            try:
                body = self._read_body(receiver.settings.max_body_bytes)
                size = len(body)
                receiver.receive(endpoint, cluster, request_id, body, self.headers.get("Content-Encoding"))
            finally:
                receiver.requests.release()
        except Refused as refused:
            linger = not size and not self._discard_body()
            self._answer(endpoint or "-", refused.status, request_id, refused.message)
            receiver.observer.request(endpoint or "-", refused.status, refused.reason, size,
                                      time.perf_counter() - started)
            if linger:
                self._linger()
            return
        self._answer(endpoint, 200, request_id, None)
        receiver.observer.request(endpoint, 200, None, size, time.perf_counter() - started)

    def _discard_body(self) -> bool:
        """Read a small unread body so the connection stays usable (and the client sees our
        answer, not a reset); False when the connection must close."""
        length = self.headers.get("Content-Length", "")
        if self.headers.get("Transfer-Encoding") or not length.strip().isdigit():
            self.close_connection = True
            return False
        if int(length) > DISCARD_BYTES:
            self.close_connection = True
            return False
        with contextlib.suppress(OSError):
            if len(self.rfile.read(int(length))) == int(length):
                return True
        self.close_connection = True
        return True

    def _linger(self) -> None:
        """After answering a request whose big body was not read: read (and drop) what the
        client still sends for a moment before closing, so it reads our answer instead of a
        connection reset (what HTTP servers call a lingering close)."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.settimeout(LINGER_SECONDS)
            deadline = time.monotonic() + LINGER_SECONDS
            while time.monotonic() < deadline and self.rfile.read1(1 << 16):
                pass

    def _read_body(self, limit: int) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise Refused(411, "no_length", "send the body with a Content-Length (chunked bodies are not read)")
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            raise Refused(411, "no_length", "a Content-Length is required")
        n = int(length)
        if n > limit:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise Refused(413, "too_large", f"the body is {n} bytes, more than max_body_bytes ({limit})")
        body = self.rfile.read(n)
        if len(body) < n:
            self.close_connection = True
            raise Refused(400, "truncated", "the connection ended before the whole body arrived")
        return body

    def _answer(self, endpoint: str, status: int, request_id: str, error: str | None) -> None:
        if endpoint == "firehose":  # the documented response: requestId echoed, timestamp in ms
            doc: dict[str, object] = {"requestId": request_id, "timestamp": int(time.time() * 1000)}
            if error is not None:
                doc["errorMessage"] = error
            body, content_type = orjson.dumps(doc), "application/json"
        elif error is None:
            body, content_type = b"{}", "application/json"
        else:
            body, content_type = error.encode() + b"\n", "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status in (429, 503, 507):
            self.send_header("Retry-After", str(RETRY_AFTER))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="detector"')
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests are counted, rejects logged by the observer; never a header or token


def _route(path: str) -> tuple[str | None, str | None]:
    """(endpoint, cluster named in the path) or (None, None) for an unknown path."""
    parts = [p for p in path.split("/") if p]
    if parts == ["audit"]:
        return "audit", None
    if len(parts) == 2 and parts[0] == "audit" and CLUSTER.match(parts[1]):
        return "audit", parts[1]
    if len(parts) == 3 and parts[0] == "clusters" and parts[2] == "audit" and CLUSTER.match(parts[1]):
        return "audit", parts[1]
    if parts in (["firehose"], ["pubsub"]):
        return parts[0], None
    return None, None
