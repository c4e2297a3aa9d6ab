"""The child process of the SIGKILL test: `python -m tests.integration.alert.kill_child STATE URL N MODE`.

MODE `enqueue`: store N alerts (with a checkpoint), start delivering to URL (down), print
"enqueued", and keep retrying until killed. MODE `deliver`: submit the same N alerts again (as
a restarted engine re-reading from an older checkpoint would), deliver until nothing is pending,
print the outbox counts and exit.
"""

from __future__ import annotations

import sys
import time

from detector.alert.settings import DeliverySettings, OutboxSettings, parse_outputs
from detector.alert.stage import open_delivery
from tests.support.alertkit import make_alerts


def main(state_dir: str, url: str, count: int, mode: str) -> int:
    outputs = parse_outputs([{"name": "siem", "type": "webhook", "url": url, "timeout": 1}])
    settings = DeliverySettings(outputs=tuple(outputs),
                                outbox=OutboxSettings(retry_initial_seconds=0.05, retry_max_seconds=0.2))
    delivery = open_delivery(settings, state_dir, lambda _e: None, poll_interval=0.05)
    delivery.start()
    delivery.submit(make_alerts(count), {"checkpoint": str(count).encode()})
    if mode == "enqueue":
        print("enqueued", flush=True)
        time.sleep(60)  # killed long before
        return 1
    deadline = time.monotonic() + 20
    while delivery.outbox.rows(status="pending") and time.monotonic() < deadline:
        time.sleep(0.02)
    counts = delivery.outbox.counts()
    delivery.close()
    print(sorted(counts.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
