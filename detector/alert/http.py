"""The one HTTP transport of the alert stage: a requests.Session per sink, one timeout, no
retries inside an attempt (retries are scheduled durably by the outbox), and every failure
classified into a `DeliveryError` whose text never quotes the URL.

requests/urllib3 error texts embed the URL (`... with url: /services/T0/B0/secret`), so the
message is rebuilt from the exception type and the underlying OS error instead.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import warnings
from collections.abc import Callable, Mapping
from typing import TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InsecureRequestWarning

from detector.alert.sink import DeliveryError, classify_status

E = TypeVar("E", bound=BaseException)


class HttpTransport:
    """A connection pool with fixed timeout, TLS settings and default headers.

    Requests go straight to requests' `HTTPAdapter` (a `PreparedRequest` per alert), not through
    `Session.request`: the session layer (cookies, hooks, settings merged anew per call) was a
    quarter of a webhook delivery's CPU, and none of it applies to posting one alert.
    """

    def __init__(self, *, timeout: float, verify: bool | str = True,
                 cert: str | tuple[str, str] | None = None, headers: Mapping[str, str] | None = None) -> None:
        self.timeout = timeout
        self.adapter = HTTPAdapter(max_retries=0)
        self.headers = dict(headers or {})
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

    def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> requests.Response:
        """One attempt; returns a 2xx response or raises `DeliveryError`."""
        try:
            proxies = self._proxies.get(url)
            if proxies is None:
                proxies = self._proxies[url] = requests.utils.get_environ_proxies(url)
            prepared = requests.PreparedRequest()
            prepared.prepare(method=method, url=url, headers={**self.headers, **headers}, data=body)
            response = self.adapter.send(prepared, timeout=(self.timeout, self.timeout), verify=self.verify,
                                         cert=self.cert, proxies=proxies)
            response.content  # noqa: B018  read it all: the connection goes back to the pool
        except requests.RequestException as exc:
            raise transport_error(exc, self.timeout) from None
        if not 200 <= response.status_code < 300:
            raise classify_status(response.status_code, _text(response), response.headers)
        return response

    def close(self) -> None:
        self.adapter.close()


def transport_error(exc: BaseException, timeout: float) -> DeliveryError:
    """A safe, classified error for a failure below HTTP (connect, TLS, timeout, reset...)."""
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


def _find(exc: BaseException, kind: type[E], accept: Callable[[E], bool] = lambda _e: True) -> E | None:
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


def _text(response: requests.Response) -> str:
    try:
        return response.text[:1000]
    except (UnicodeDecodeError, LookupError):
        return ""
