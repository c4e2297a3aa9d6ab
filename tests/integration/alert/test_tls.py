"""Webhook TLS options against a real HTTPS receiver: CA file, verification failure, client
certificates; SNS's AWS_CA_BUNDLE (certificates made with the openssl command line for the test)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from detector.alert.secret import Secret
from detector.alert.settings import SnsSettings, WebhookSettings
from detector.alert.sink import DeliveryError
from detector.alert.sinks.sns import SnsSink
from detector.alert.sinks.webhook import WebhookSink
from tests.support.alertkit import make_alert
from tests.support.receiver import Receiver, Reply

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def self_signed(directory: Path, name: str) -> tuple[str, str]:
    """A self-signed certificate (also its own CA) for 127.0.0.1; returns (cert, key) paths."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    directory = tmp_path_factory.mktemp("tls")
    return {"server": self_signed(directory, "server"), "client": self_signed(directory, "client")}


def server_context(certs: dict[str, tuple[str, str]], require_client: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certs["server"])
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certs["client"][0])
    return context


def sink(url: str, **options: object) -> WebhookSink:
    return WebhookSink(WebhookSettings("tls", Secret(url, "test"), timeout=5, **options))  # type: ignore[arg-type]


def test_ca_file_and_verification_failure(certs: dict[str, tuple[str, str]]) -> None:
    """With the CA file the alert is delivered; without it verification fails, retryably."""
    with Receiver(tls=server_context(certs, require_client=False)) as receiver:
        trusted = sink(receiver.url, ca_file=certs["server"][0])
        trusted.send(make_alert())
        untrusted = sink(receiver.url)
        with pytest.raises(DeliveryError, match="TLS error: CERTIFICATE_VERIFY_FAILED") as caught:
            untrusted.send(make_alert())
        insecure = sink(receiver.url, tls_verify=False)
        insecure.send(make_alert())
        for s in (trusted, untrusted, insecure):
            s.close()
    assert caught.value.retryable and len(receiver.accepted()) == 2


PUBLISHED = (b'<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult>'
             b"<MessageId>m-1</MessageId></PublishResult><ResponseMetadata><RequestId>r-1</RequestId>"
             b"</ResponseMetadata></PublishResponse>")


@pytest.mark.usefixtures("aws_env")
def test_sns_verifies_against_the_aws_ca_bundle(certs: dict[str, tuple[str, str]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """SNS's requests (sent by our transport, not botocore's) are verified against AWS_CA_BUNDLE
    when it is set, as botocore would, and fail retryably against the default bundle."""
    arn = "arn:aws:sns:eu-west-1:123456789012:alerts"
    with Receiver(default=Reply(200, PUBLISHED, {"Content-Type": "text/xml"}),
                  tls=server_context(certs, require_client=False)) as receiver:
        untrusted = SnsSink(SnsSettings("s", arn, "eu-west-1", receiver.url, timeout=5))
        with pytest.raises(DeliveryError) as caught:
            untrusted.send(make_alert())
        untrusted.close()
        monkeypatch.setenv("AWS_CA_BUNDLE", certs["server"][0])
        trusted = SnsSink(SnsSettings("s", arn, "eu-west-1", receiver.url, timeout=5))
        trusted.send(make_alert())
        trusted.close()
    assert caught.value.retryable and caught.value.message == "SNS: TLS error: CERTIFICATE_VERIFY_FAILED"
    (published,) = receiver.accepted()
    assert published.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert b"Action=Publish" in published.body


def test_client_certificate(certs: dict[str, tuple[str, str]]) -> None:
    """A receiver requiring a client certificate accepts ours and refuses a client without one."""
    with Receiver(tls=server_context(certs, require_client=True)) as receiver:
        with_cert = sink(receiver.url, ca_file=certs["server"][0], client_cert=certs["client"][0],
                         client_key=certs["client"][1])
        with_cert.send(make_alert())
        without = sink(receiver.url, ca_file=certs["server"][0])
        with pytest.raises(DeliveryError) as caught:
            without.send(make_alert())
        with_cert.close()
        without.close()
    assert len(receiver.accepted()) == 1 and caught.value.retryable
