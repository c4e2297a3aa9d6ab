"""The real `detector run` with the webhook input, fed over real HTTPS on 127.0.0.1 by a client
that sends and retries like kube-apiserver's audit webhook backend: a 2xx means the batch is
durable, so a SIGKILL between batches, or in the middle of one, loses no alert."""

from __future__ import annotations

import gzip
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.live.harness import REPO, Detector, wait_for
from tests.support.webhookkit import (
    ApiServerClient,
    Kubeconfig,
    NotRetried,
    Pki,
    audit_item,
    event_list,
    free_port,
    make_pki,
)

TOKEN = "s3cr3t-token-for-tests"


def webhook_detector(root: Path, pki: Pki, *, token: bool = True, mtls: bool = True, **config: Any) -> Detector:
    port = free_port()
    token_file = root / "token"
    token_file.write_text(f"{TOKEN}\n")
    section: dict[str, Any] = {"type": "webhook", "listen": f"127.0.0.1:{port}", "tls_cert_file": str(pki.server_cert),
                               "tls_key_file": str(pki.server_key)}
    if token:
        section["token_file"] = str(token_file)
    if mtls:
        section["client_ca_file"] = str(pki.ca)
    section.update(config.pop("input", {}))
    det = Detector(root, input=section, **config)
    det.port = port  # type: ignore[attr-defined]
    return det


def client_for(det: Detector, pki: Pki, *, path: str = "/audit/prod-eu-1", token: str | None = TOKEN,
               cert: bool = True) -> ApiServerClient:
    return ApiServerClient(Kubeconfig(f"https://127.0.0.1:{det.port}{path}",  # type: ignore[attr-defined]
                                      certificate_authority=pki.ca,
                                      client_certificate=pki.client_cert if cert else None,
                                      client_key=pki.client_key if cert else None, token=token))


def alerts(det: Detector) -> list[dict[str, Any]]:
    if not det.alerts.exists():
        return []
    return [orjson.loads(line) for line in det.alerts.read_bytes().splitlines() if line.strip()]


def wait_alerts(det: Detector, n: int, timeout: float = 60) -> list[dict[str, Any]]:
    wait_for(lambda: len({a["id"] for a in alerts(det)}) >= n, timeout, f"{n} alerts")
    return alerts(det)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_batches_over_mtls_and_token_alert_once_each_with_the_cluster_of_the_path(tmp_path: Path, pki: Pki) -> None:
    """Three EventList batches (400, 400, 200 items without kind/apiVersion) give one alert per event, with
    ka.cluster.name from /audit/<cluster>; a gzip batch is accepted too."""
    det = webhook_detector(tmp_path, pki)
    det.start()
    det.wait_started()
    client = client_for(det, pki)
    items = [audit_item(n) for n in range(1000)]
    client.send_all(items)
    client.send([audit_item(n) for n in range(1000, 1010)], gzip_body=True)
    got = wait_alerts(det, 1010)
    assert sorted(a["audit_id"] for a in got) == sorted(f"wh-{n:09d}" for n in range(1010))
    assert {a["output_fields"]["ka.cluster.name"] for a in got} == {"prod-eu-1"}
    code, _ = det.terminate()
    assert code == 0


def test_credentials_and_bodies_that_are_refused(tmp_path: Path, pki: Pki) -> None:
    """Wrong or missing token: 401; no client certificate or one from another CA: the TLS handshake fails;
    a body past max_body_bytes: 413 (also a gzip bomb); not JSON: 400; an unknown path: 404. None is retried."""
    det = webhook_detector(tmp_path, pki, input={"max_body_bytes": 64 * 1024})
    det.start()
    det.wait_started()
    for token in ("wrong", None):
        with pytest.raises(NotRetried) as refused:
            client_for(det, pki, token=token).send([audit_item(1)])
        assert refused.value.status == 401
    with pytest.raises((ssl.SSLError, OSError)):
        client_for(det, pki, cert=False).post(event_list([audit_item(1)]))
    rogue = client_for(det, pki)
    rogue.config.client_certificate, rogue.config.client_key = pki.rogue_cert, pki.rogue_key
    with pytest.raises((ssl.SSLError, OSError)):
        rogue.post(event_list([audit_item(1)]))
    ok = client_for(det, pki)
    status, answer = ok.post(event_list([audit_item(n) for n in range(400)]))  # ~250 KB > 64 KiB
    assert status == 413 and b"max_body_bytes" in answer
    bomb = gzip.compress(b'{"items": [' + b"0," * 200_000 + b"0]}")
    assert len(bomb) < 64 * 1024
    status, answer = ok.post(bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413
    assert ok.post(b"not json")[0] == 400
    assert ok.post(b"{}", path="/elsewhere")[0] == 404
    metrics = det.log_text()
    assert TOKEN not in metrics and "wrong" not in metrics  # no credential is ever logged
    assert '"reason": "unauthorized"' in metrics


def test_firehose_and_pubsub_protocols(tmp_path: Path, pki: Pki) -> None:
    """/firehose checks X-Amz-Firehose-Access-Key and echoes requestId with a timestamp (errorMessage on
    errors); /pubsub takes the token from ?token= and acks with 2xx."""
    det = webhook_detector(tmp_path, pki, mtls=False)
    det.start()
    det.wait_started()
    client = client_for(det, pki, path="/firehose", token=None, cert=False)
    body = orjson.dumps({"requestId": "req-1", "timestamp": 1, "records": []})
    status, answer = client.post(gzip.compress(body), headers={
        "X-Amz-Firehose-Access-Key": TOKEN, "X-Amz-Firehose-Request-Id": "req-1",
        "X-Amz-Firehose-Protocol-Version": "1.0", "Content-Encoding": "gzip"})
    doc = json.loads(answer)
    assert status == 200 and doc["requestId"] == "req-1" and isinstance(doc["timestamp"], int)
    status, answer = client.post(body, headers={"X-Amz-Firehose-Access-Key": "nope",
                                                "X-Amz-Firehose-Request-Id": "req-2"})
    doc = json.loads(answer)
    assert status == 401 and doc["requestId"] == "req-2" and doc["errorMessage"]
    push = client_for(det, pki, path=f"/pubsub?token={TOKEN}", token=None, cert=False)
    status, _ = push.post(orjson.dumps({"message": {"data": "", "messageId": "1"}, "subscription": "s"}))
    assert 200 <= status < 300
    push = client_for(det, pki, path="/pubsub?token=bad", token=None, cert=False)
    assert push.post(b"{}")[0] == 401


def test_plain_http_only_on_loopback(tmp_path: Path) -> None:
    """insecure_plain_http with a non-loopback listen address stops `detector run` at load: one line, exit 2."""
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n"
                      "input: {type: webhook, listen: '0.0.0.0:19443', insecure_plain_http: true}\n")
    done = subprocess.run([sys.executable, "-m", "detector", "run", "--config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "insecure_plain_http" in done.stderr and len(done.stderr.strip().splitlines()) == 1


# The client's SSLSocket lost when a SIGKILL cuts its handshake short: see the SIGTERM test below.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning")
def test_sigkill_mid_stream_with_a_retrying_client_loses_nothing(tmp_path: Path, pki: Pki) -> None:
    """The client sends 20 batches of 400 while detector is SIGKILLed twice and restarted on the same port:
    every event has its alert, each alert id once."""
    det = webhook_detector(tmp_path, pki)
    det.start()
    det.wait_started()
    client = client_for(det, pki)
    items = [audit_item(n) for n in range(8000)]
    sender = threading.Thread(target=client.send_all, args=(items,))
    sender.start()
    for _ in range(2):
        wait_for(lambda: client.attempts >= 3, 30, "some batches")
        time.sleep(0.05)
        det.kill()
        time.sleep(0.3)  # the client meets refused connections and backs off
        det.start()
        before = client.attempts
        wait_for(lambda b=before: client.attempts > b + 2 or not sender.is_alive(), 60, "more batches")
    sender.join(timeout=120)
    assert not sender.is_alive()
    got = wait_alerts(det, 8000, timeout=120)
    ids = Counter(a["audit_id"] for a in got)
    assert set(ids) == {f"wh-{n:09d}" for n in range(8000)}
    assert len({a["id"] for a in got}) == 8000  # repeats only as re-sends of the same id
    assert 0 in client.statuses  # it did meet the crashes


def test_a_batch_retried_after_a_timeout_alerts_once(tmp_path: Path, pki: Pki) -> None:
    """The same batch accepted twice (the API server retried after its timeout) gives each alert once."""
    det = webhook_detector(tmp_path, pki)
    det.start()
    det.wait_started()
    client = client_for(det, pki)
    batch = [audit_item(n) for n in range(400)]
    client.send(batch)
    client.send(batch)
    wait_alerts(det, 400)
    time.sleep(1.0)
    got = alerts(det)
    assert len(got) == 400 and len({a["id"] for a in got}) == 400


def test_outbox_full_answers_429_and_readyz_false(tmp_path: Path, pki: Pki) -> None:
    """With the outbox at its bound (an output that cannot deliver), requests get 429 with Retry-After and
    /readyz is false; nothing accepted before is lost."""
    metrics_port = free_port()
    det = webhook_detector(tmp_path, pki, outbox={"max_rows": 20},
                           outputs=[{"name": "down", "type": "webhook", "url": f"http://127.0.0.1:{free_port()}/"}],
                           metrics={"listen": f"127.0.0.1:{metrics_port}"})
    det.start()
    det.wait_started()
    client = client_for(det, pki)
    assert client.post(event_list([audit_item(n) for n in range(30)]))[0] == 200
    wait_for(lambda: client.post(event_list([audit_item(99)]))[0] == 429, 30, "429 from the full outbox")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=5)
        ready = True
    except urllib.error.HTTPError as error:
        ready = error.code == 200
    assert not ready
    assert '"reason": "outbox_full"' in det.log_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_state_dir_answers_429_or_507_and_recovers(tmp_path: Path, pki: Pki) -> None:
    """A state_dir on a full tmpfs refuses requests (507 before the spool line is written, 429 while alerts
    cannot be stored), each with Retry-After; after it grows, the retried batches are all alerted."""
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m,mode=0700", "tmpfs", str(state)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        det = webhook_detector(tmp_path, pki)
        det.start()
        det.wait_started()
        client = client_for(det, pki)
        client.send([audit_item(n) for n in range(10)])
        wait_alerts(det, 10)
        filler = state / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=20"], capture_output=True, check=False)
        status, _ = client.post(event_list([audit_item(n) for n in range(10, 20)]))
        assert status in (429, 507)
        filler.unlink()
        client.send([audit_item(n) for n in range(10, 20)])
        got = wait_alerts(det, 20)
        assert len({a["id"] for a in got}) == 20
        assert det.terminate()[0] == 0
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


# The test's client is http.client: when detector stops listening in the middle of a TLS
# handshake, HTTPSConnection.connect loses the SSLSocket that wrap_socket raised from without
# closing it, and the garbage collector later warns about it (a client-side leak, not detector's).
@pytest.mark.filterwarnings("ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning")
def test_sigterm_answers_in_flight_requests_then_exits_0(tmp_path: Path, pki: Pki) -> None:
    """SIGTERM while a client sends: what was answered 2xx is alerted (now or after the next start), and
    detector exits 0 within 5 s."""
    det = webhook_detector(tmp_path, pki)
    det.start()
    det.wait_started()
    client = client_for(det, pki)
    client.max_attempts = 3
    accepted: list[int] = []

    def send() -> None:
        for b in range(40):
            try:
                client.send([audit_item(b * 100 + i) for i in range(100)])
            except (AssertionError, NotRetried):
                return
            accepted.append(b)

    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: len(accepted) >= 3, 30, "a few batches")
    code, seconds = det.terminate()
    assert code == 0 and seconds < 5
    sender.join(timeout=30)
    det.start()
    det.wait_started()
    got = wait_alerts(det, 100 * len(accepted))
    want = {f"wh-{b * 100 + i:09d}" for b in accepted for i in range(100)}
    assert want <= {a["audit_id"] for a in got}
