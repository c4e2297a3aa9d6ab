"""The one HTTP transport of the alert stage: a connection pool per sink, one timeout for the
whole attempt, a capped response body, no retries inside an attempt (retries are scheduled
durably by the outbox) but one, and every failure classified into a `DeliveryError` whose text
never quotes a secret.

Bounds, whatever the receiver does:
* `timeout` bounds the whole attempt -- connect, TLS, sending, the response's headers and
  body -- not each socket read: a watchdog thread shuts the attempt's socket down at the
  deadline (a receiver trickling a byte a second would otherwise hold it for ever);
* at most `body_cap` bytes of a response body are read; the rest is never read and its
  connection is closed (an endless 200 body would otherwise be read whole into memory).

The one retry: a request that fails on a kept-alive connection before any byte of a response
came back (the server closed it while idle; urllib3 cannot always see that before sending) is
sent again at once on a fresh connection, within the same deadline, and is not a failed attempt.

requests/urllib3 error texts embed the URL (`... with url: /services/T0/B0/secret`), so the
message is rebuilt from the exception type and the underlying OS error instead.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import InsecureRequestWarning
from urllib3.poolmanager import PoolManager

from detector.alert.secret import Secret
from detector.alert.sink import DeliveryError, classify_status

E = TypeVar("E", bound=BaseException)
BODY_CAP = 4096  # bytes of a response body read at most (an error text quotes 200 characters)
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response: status, headers (case-insensitive) and the first `body_cap` bytes of the
    body; `truncated` when there was more."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    truncated: bool

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class HttpTransport:
    """A connection pool with fixed timeout, TLS settings and default headers.

    Requests go straight to requests' `HTTPAdapter` (a `PreparedRequest` per alert), not through
    `Session.request`: the session layer (cookies, hooks, settings merged anew per call) was a
    quarter of a webhook delivery's CPU, and none of it applies to posting one alert.
    """

    def __init__(self, *, timeout: float, verify: bool | str = True,
                 cert: str | tuple[str, str] | None = None, headers: Mapping[str, str] | None = None,
                 secrets: Iterable[Secret] = (), body_cap: int = BODY_CAP) -> None:
        self.timeout = timeout
        self.body_cap = body_cap
        self.secrets = tuple(secrets)
        self.adapter = _DeadlineAdapter(max_retries=0)
        self.headers = dict(headers or {})
        self._watchdog = _Watchdog()
        # The environment is read once, as requests would read it per request: proxies per URL
        # (HTTPS_PROXY, NO_PROXY...), and the CA bundle variables, which only stand in for the
        # default bundle, never for a configured ca_file or `false`.
        self._proxies: dict[str, dict[str, str]] = {}
        env_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self.verify: bool | str = env_bundle if verify is True and env_bundle else verify
        self.cert = cert
        if verify is False:
            # The operator turned verification off on purpose (`tls_verify: false`); urllib3
            # would otherwise warn on every single request.
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)

    def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        """One attempt, bounded by `timeout`; returns a 2xx response or raises `DeliveryError`."""
        response = self.exchange(method, url, body, headers)
        if not 200 <= response.status < 300:
            raise classify_status(response.status, _text(response), response.headers, self.secrets)
        return response

    def exchange(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        """One attempt, bounded by `timeout`: the response whatever its status (for a caller
        that reads error bodies itself), or `DeliveryError` for a failure below HTTP."""
        deadline = time.monotonic() + self.timeout
        try:
            return self._attempt(method, url, body, headers, deadline)
        except _StaleConnection:
            self.adapter.close()  # the other pooled connections are as old: start afresh
            return self._attempt(method, url, body, headers, deadline, stale_retry=False)

    def _attempt(self, method: str, url: str, body: bytes, headers: Mapping[str, str], deadline: float,
                 *, stale_retry: bool = True) -> HttpResponse:
        attempt = _Attempt(deadline)
        _current.attempt = attempt
        self._watchdog.arm(attempt)
        try:
            try:
                prepared = self._prepare(method, url, body, headers)
                response = self.adapter.send(prepared, stream=True, timeout=(self.timeout, self.timeout),
                                             verify=self.verify, cert=self.cert,
                                             proxies=self._proxies_for(url))
            except requests.RequestException as exc:
                if stale_retry and attempt.reused and not attempt.expired and _find(exc, _STALE) is not None:
                    raise _StaleConnection from None
                raise transport_error(exc, self.timeout, expired=attempt.expired) from None
            try:
                data, truncated = _read_capped(response, self.body_cap)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, http.client.HTTPException,
                    ValueError) as exc:
                raise transport_error(exc, self.timeout, expired=attempt.expired) from None
        except ValueError as exc:  # a URL that urllib cannot parse (validated at load; never fatal)
            raise DeliveryError(f"invalid request ({type(exc).__name__})", retryable=False) from None
        finally:
            self._watchdog.disarm(attempt)
            _current.attempt = None
        return HttpResponse(response.status_code, CaseInsensitiveDict(response.headers), data, truncated)

    def _prepare(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> requests.PreparedRequest:
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method, url=url, headers={**self.headers, **headers}, data=body)
        return prepared

    def _proxies_for(self, url: str) -> dict[str, str]:
        proxies = self._proxies.get(url)
        if proxies is None:
            proxies = self._proxies[url] = requests.utils.get_environ_proxies(url)
        return proxies

    def close(self) -> None:
        self.adapter.close()
        self._watchdog.close()


def _read_capped(response: requests.Response, cap: int) -> tuple[bytes, bool]:
    """Up to `cap` bytes of the body, undecoded; the connection goes back to the pool only when
    the body was read to its end, else it is closed with the rest unread."""
    raw = response.raw
    data = b""
    while len(data) <= cap:
        chunk = raw.read(cap + 1 - len(data), decode_content=False)
        if not chunk:
            raw.release_conn()
            return data, False
        data += chunk
    response.close()
    return data[:cap], True


def _text(response: HttpResponse) -> str:
    if response.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
        return ""  # compressed: not text (and never decompressed: no bomb to defuse)
    encoding = requests.utils.get_encoding_from_headers(response.headers) or "utf-8"
    try:
        return response.body.decode(encoding, "replace")
    except LookupError:  # a charset Python does not know
        return response.body.decode("utf-8", "replace")


# -- the deadline ----------------------------------------------------------------------------
class _StaleConnection(Exception):
    """A kept-alive connection was found closed before any response came back."""


class _Attempt:
    """One request's deadline and the connection it runs on (set by `_GuardedConnection`)."""

    __slots__ = ("conn", "deadline", "expired", "reused")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: HTTPConnection | None = None
        self.reused = False
        self.expired = False

    def expire(self) -> None:
        """The deadline passed: shut the socket down, which ends any blocked send or receive."""
        self.expired = True
        conn = self.conn
        sock = getattr(conn, "sock", None) if conn is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # already closed
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain fd's, also under TLS


class _Current(threading.local):
    attempt: _Attempt | None = None


_current = _Current()


class _Watchdog:
    """One thread per transport, started with its first request, that expires overdue attempts."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._attempts: set[_Attempt] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, attempt: _Attempt) -> None:
        with self._cond:
            self._attempts.add(attempt)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="detector-http-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self, attempt: _Attempt) -> None:
        """Done: from here on the watchdog never touches the attempt's (pooled) connection."""
        with self._cond:
            self._attempts.discard(attempt)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(5.0)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                for attempt in [a for a in self._attempts if a.deadline <= now]:
                    self._attempts.discard(attempt)
                    attempt.expire()
                soonest = min((a.deadline for a in self._attempts), default=None)
                self._cond.wait(None if soonest is None else max(soonest - now, 0.001))


class _GuardedConnection(HTTPConnection):
    """Tells the thread's attempt which connection it runs on, whether that one was kept alive
    from an earlier request, and connects within what is left of the deadline."""

    _used_sock: object = None  # the socket the last request went out on

    def connect(self) -> None:
        attempt = _current.attempt
        if attempt is not None:
            attempt.conn = self
            left = attempt.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed before connecting")
            if not isinstance(self.timeout, int | float) or self.timeout > left:
                self.timeout = left
        super().connect()
        if attempt is not None and attempt.expired:
            raise TimeoutError("deadline passed while connecting")

    def request(self, *args: Any, **kwargs: Any) -> None:
        attempt = _current.attempt
        if attempt is not None:
            attempt.conn = self
            attempt.reused = self.sock is not None and self.sock is self._used_sock
        super().request(*args, **kwargs)
        self._used_sock = self.sock


class _GuardedHTTPSConnection(_GuardedConnection, HTTPSConnection):
    pass


class _GuardedPool(HTTPConnectionPool):
    ConnectionCls = _GuardedConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_POOLS = {"http": _GuardedPool, "https": _GuardedHTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter with pools whose connections report to the attempt's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


# -- errors ----------------------------------------------------------------------------------
def transport_error(exc: BaseException, timeout: float, *, expired: bool = False) -> DeliveryError:
    """A safe, classified error for a failure below HTTP (connect, TLS, timeout, reset...)."""
    if expired:
        return DeliveryError(f"no response within {timeout:g}s", retryable=True)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return DeliveryError(f"connect timed out after {timeout:g}s", retryable=True)
    if isinstance(exc, requests.exceptions.Timeout) or _find(exc, TimeoutError) is not None:
        return DeliveryError(f"no response within {timeout:g}s", retryable=True)
    if isinstance(exc, requests.exceptions.SSLError) or _find(exc, ssl.SSLError) is not None:
        reason = _find(exc, ssl.SSLError)
        detail = getattr(reason, "reason", None) or "handshake failed"
        return DeliveryError(f"TLS error: {detail}", retryable=True)
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema
                  | requests.exceptions.InvalidSchema | requests.exceptions.InvalidHeader):
        return DeliveryError(f"invalid request ({type(exc).__name__})", retryable=False)
    return DeliveryError(describe_os_error(exc), retryable=True)


def describe_os_error(exc: BaseException) -> str:
    """`connection refused`, `name resolution failed`, ... from the OS error under `exc`."""
    if _find(exc, socket.gaierror) is not None:
        return "name resolution failed"
    found = _find(exc, OSError, lambda e: bool(e.errno))
    if found is not None and found.errno:
        return "connection refused" if found.errno == errno.ECONNREFUSED else os.strerror(found.errno).lower()
    inner = _find(exc, ConnectionError) or exc
    return f"connection failed ({type(inner).__name__})"


def _find(exc: BaseException, kind: type[E] | tuple[type[E], ...],
          accept: Callable[[E], bool] = lambda _e: True) -> E | None:
    """The first exception of type `kind` (that `accept`s) in `exc`'s cause/context chain,
    urllib's and urllib3's `reason`s and exception arguments."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind) and accept(current):
            return current
        stack += [current.__cause__, current.__context__, _as_exc(getattr(current, "reason", None))]
        stack += [a for a in current.args if isinstance(a, BaseException)]
    return None


def _as_exc(value: object) -> BaseException | None:
    return value if isinstance(value, BaseException) else None
