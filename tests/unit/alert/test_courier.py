"""Tests for the courier child's event forwarder: delivery events go to the parent in lists."""

from __future__ import annotations

from detector.alert.courier import FORWARD_BATCH, _Forwarder
from detector.alert.events import DeliveryEvent, EventKind


def delivered(n: int) -> DeliveryEvent:
    return DeliveryEvent(EventKind.DELIVERED, "hook", alert_id=f"a{n}")


def test_events_that_queued_up_go_in_one_message_in_order() -> None:
    sent: list[object] = []
    forwarder = _Forwarder(sent.append)
    for n in range(5):
        forwarder.put(delivered(n))
    forwarder.start()
    forwarder.close()
    assert not forwarder.is_alive()
    assert sent == [[delivered(n) for n in range(5)]]


def test_a_message_holds_at_most_forward_batch_events() -> None:
    sent: list[list[DeliveryEvent]] = []
    forwarder = _Forwarder(sent.append)  # type: ignore[arg-type]
    total = FORWARD_BATCH * 2 + 3
    for n in range(total):
        forwarder.put(delivered(n))
    forwarder.start()
    forwarder.close()
    assert [len(batch) for batch in sent] == [FORWARD_BATCH, FORWARD_BATCH, 3]
    assert [event for batch in sent for event in batch] == [delivered(n) for n in range(total)]


def test_close_without_start_still_sends_what_is_queued() -> None:
    """A child whose start failed after events were reported must not lose them."""
    sent: list[object] = []
    forwarder = _Forwarder(sent.append)
    forwarder.put(delivered(1))
    forwarder.close()
    assert sent == [[delivered(1)]]


def test_nothing_is_sent_for_an_empty_queue() -> None:
    sent: list[object] = []
    forwarder = _Forwarder(sent.append)
    forwarder.start()
    forwarder.close()
    assert sent == []
