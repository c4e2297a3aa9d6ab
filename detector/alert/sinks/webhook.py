"""Webhook output: the Falco JSON (what falcosidekick's `/` endpoint accepts) or a user
template, sent with the configured method and headers, optionally signed.

The signature header is `sha256=<hex HMAC-SHA256 of the exact body bytes>` with the shared
secret (GitHub's convention); `X-Detector-Alert-Id` carries the alert id for idempotent
receivers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import orjson

from detector.alert.http import HttpTransport
from detector.alert.model import Alert
from detector.alert.secret import Secret
from detector.alert.settings import WebhookSettings
from detector.alert.template import BodyTemplate, compile_template, escape_for

ALERT_ID_HEADER = "X-Detector-Alert-Id"


class WebhookSink:
    """Sends each alert as one HTTP request."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.name = settings.name
        self._settings = settings
        headers = {"Content-Type": settings.content_type, "User-Agent": "detector",
                   **dict(settings.headers), **{k: v.reveal() for k, v in settings.secret_headers}}
        cert: str | tuple[str, str] | None = settings.client_cert
        if settings.client_cert and settings.client_key:
            cert = (settings.client_cert, settings.client_key)
        verify: bool | str = settings.ca_file or settings.tls_verify
        self._secrets = [settings.url, *(v for _, v in settings.secret_headers)]
        if settings.hmac_secret is not None:
            self._secrets.append(settings.hmac_secret)
        self._transport = HttpTransport(timeout=settings.timeout, verify=verify, cert=cert, headers=headers,
                                        secrets=self._secrets)
        self._template: BodyTemplate | None = None
        if settings.template is not None:
            self._template = compile_template(settings.template, escape_for(settings.content_type))

    @property
    def secrets(self) -> Sequence[Secret]:
        return self._secrets

    def encode(self, alert: Alert) -> bytes:
        """The request body: the Falco JSON object, or the rendered template."""
        if self._template is None:
            return orjson.dumps(alert.to_dict())
        return self._template.render(alert).encode()

    def send(self, alert: Alert) -> None:
        body = self.encode(alert)
        headers = {ALERT_ID_HEADER: alert.id}
        if self._settings.hmac_secret is not None:
            headers[self._settings.hmac_header] = sign(self._settings.hmac_secret, body)
        self._transport.request(self._settings.method, self._settings.url.reveal(), body, headers)

    def close(self) -> None:
        self._transport.close()


def sign(secret: Secret, body: bytes) -> str:
    """The signature header value for `body`."""
    return "sha256=" + hmac.new(secret.reveal().encode(), body, hashlib.sha256).hexdigest()
