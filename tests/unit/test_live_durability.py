"""detector.live lets go of what is before a checkpoint (Kafka offsets, spool segments) only
once that checkpoint is on disk, not merely committed (outbox.synchronous: batched)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from detector.alert.settings import DeliverySettings, OutboxSettings, StdoutSettings
from detector.alert.sinks.memory import MemorySink
from detector.alert.stage import open_delivery
from detector.config import RunConfig
from detector.live import LiveRunner
from detector.rules.ruleset import Ruleset
from detector.source.position import FileIdentity, Position
from tests.support.alertkit import make_alert
from tests.support.receiver import wait_for


class Offsets:
    """Stands in for the Kafka source: what the runner says is durable."""

    def __init__(self) -> None:
        self.durable_at: list[Position] = []

    def durable(self, checkpoint: Position) -> None:
        self.durable_at.append(checkpoint)


def position(offset: int) -> Position:
    return Position(FileIdentity(1, 2, "ab", 2), offset, "/spool/records.log")


def kafka_runner(tmp_path: Path, mode: str) -> tuple[LiveRunner, Offsets, DeliverySettings]:
    """A runner whose Kafka source is `Offsets`, with a 0.05 s sync interval."""
    settings = DeliverySettings(outputs=(StdoutSettings("o"),),
                                outbox=OutboxSettings(synchronous=mode, sync_interval_seconds=0.05))
    runner = LiveRunner(RunConfig(state_dir=str(tmp_path)), settings, lambda: Ruleset([]), [])
    offsets = Offsets()
    runner.kafka = offsets  # type: ignore[assignment]
    return runner, offsets, settings


@pytest.mark.parametrize("mode", ["batched", "full"])
def test_offsets_wait_for_the_checkpoint_to_be_fsynced(tmp_path: Path, mode: str) -> None:
    runner, offsets, settings = kafka_runner(tmp_path, mode)
    with open_delivery(settings, tmp_path, sinks={"o": MemorySink("o")}) as delivery:
        runner._pending = position(10)
        runner._commit(delivery, [make_alert(1)])
        if mode == "full":
            assert offsets.durable_at == [position(10)]  # fsynced with the commit
            assert runner._sync_if_due(delivery, time.monotonic()) is None
            return
        assert offsets.durable_at == [] and runner._durable is None  # committed, not yet on disk
        waiting = runner._sync_if_due(delivery, time.monotonic())
        assert waiting is not None and 0 < waiting <= 0.05 and offsets.durable_at == []
        wait_for(lambda: runner._sync_if_due(delivery, time.monotonic()) is None)
        assert offsets.durable_at == [position(10)] and runner._durable == position(10)
        assert delivery.outbox.synced


def test_a_checkpoint_fsynced_by_a_commit_without_one_is_let_go(tmp_path: Path) -> None:
    """The commit due for the fsync may carry alerts only (a wall-clock tick of stateful rules,
    throttle summaries): the checkpoint before it is on disk too, and the idle loop says so."""
    runner, offsets, settings = kafka_runner(tmp_path, "batched")
    with open_delivery(settings, tmp_path, sinks={"o": MemorySink("o")}) as delivery:
        runner._pending = position(10)
        runner._commit(delivery, [make_alert(1)])
        wait_for(lambda: (delivery.outbox.sync_due() or 0) <= 0)
        runner._commit(delivery, [make_alert(2)])  # nothing pending: alerts only, fsynced
        assert delivery.outbox.synced and offsets.durable_at == []
        assert runner._sync_if_due(delivery, time.monotonic()) is None
        assert offsets.durable_at == [position(10)]
