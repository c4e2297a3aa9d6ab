"""Delivery in a child process: the network outputs get a core (and a GIL) of their own.

An HTTP request through requests costs ~0.4 ms of CPU here, so 1,000 alerts/s to a webhook need
~45% of a core. In the evaluating process those sends and the evaluation would share one GIL:
measured, the webhook fell seconds behind while evaluation kept 50,000 events/s to itself.
The outbox is already the hand-over point (SQLite in WAL mode, safe across processes), so the
dispatcher simply runs in a child, `python -m detector.alert.courier` (a fresh interpreter, not a
fork of a threaded process; its settings, secrets included, arrive pickled on its stdin, never in
its argv or environment):

* parent -> child, `wake`: "new rows" nudges (never blocking: a full pipe already means the
  child has nudges to read; it also polls the outbox) and a final "stop";
* child -> parent, `events`: first "ready" or the startup error, then every `DeliveryEvent`
  (in lists: whatever queued up since the last message), which the parent logs and counts
  exactly as it does for in-process workers.

The child ends when told or when the parent is gone (EOF on `wake`, e.g. after a SIGKILL):
pending rows stay in the outbox for the next start, as with threads. It ignores SIGTERM, which a
stop of the whole process group (systemd, `docker stop`) sends it too: the parent's `stop`
follows, and an exit of its own would look like a crash to the parent.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

from detector.alert.dispatch import Dispatcher
from detector.alert.events import DeliveryEvent, EventKind, OnEvent
from detector.alert.outbox import Outbox, PendingRow
from detector.alert.route import Router
from detector.alert.settings import DeliverySettings
from detector.alert.sinks import build_sinks
from detector.errors import ConfigError

NETWORK_OUTPUTS = frozenset({"slack", "sns", "webhook"})
START_TIMEOUT = 60.0  # building sinks imports slack-sdk/boto3: seconds on a cold, busy node
RESTART_MIN_SECONDS, RESTART_MAX_SECONDS = 1.0, 60.0
_NUDGE, _STOP, _READY = b"n", b"s", "ready"
FORWARD_BATCH = 256  # events per message to the parent at most


def wants_process(settings: DeliverySettings) -> bool:
    """`outbox.dispatch`: `process`, `thread`, or `auto` (a process when a network output is configured)."""
    mode = settings.outbox.dispatch
    if mode == "auto":
        return any(output.kind in NETWORK_OUTPUTS for output in settings.outputs)
    return mode == "process"


class CourierProcess:
    """The parent's handle on the child: `start`, `notify`, `stop`, like `Dispatcher`.

    A child that dies on its own (OOM killer, a bug) is reported and started again, with a
    pause that doubles up to RESTART_MAX_SECONDS: until then its alerts wait in the outbox.
    """

    def __init__(self, settings: DeliverySettings, state_dir: str, on_event: OnEvent, *,
                 poll_interval: float = 1.0, setup: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.on_event = on_event
        self.poll_interval = poll_interval
        self.setup = setup
        self._process: subprocess.Popen[bytes] | None = None
        self._wake: Connection | None = None
        self._events: Connection | None = None
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def start(self) -> None:
        """Start the child and wait until its outputs are built; ConfigError if they cannot be."""
        self._spawn()
        self._supervisor = threading.Thread(target=self._supervise, name="detector-courier", daemon=True)
        self._supervisor.start()

    def notify(self, rows: Sequence[PendingRow] | None = None) -> None:
        """New rows are in the outbox (never blocks; the child also polls). The child reads
        them back from the outbox: `rows` are for an in-process dispatcher."""
        wake = self._wake
        if wake is None:
            return
        with contextlib.suppress(OSError):  # full: nudges are already queued; gone: being restarted
            wake.send_bytes(_NUDGE)

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask the child to finish its in-flight sends and exit; True if it did in time."""
        self._stopping.set()
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(OSError):
                os.set_blocking(wake.fileno(), True)
                wake.send_bytes(_STOP)
        stopped = self._reap(timeout)
        if self._supervisor is not None:
            self._supervisor.join(2.0)  # the child is gone: its events pipe is at EOF
        return stopped

    # -- internals ------------------------------------------------------------------------
    def _spawn(self) -> None:
        wake_r, wake_w = os.pipe()
        events_r, events_w = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(wake_r), str(events_w)], stdin=subprocess.PIPE,
                pass_fds=(wake_r, events_w), env=_child_environment(), close_fds=True)
        except OSError as exc:
            for fd in (wake_r, wake_w, events_r, events_w):
                os.close(fd)
            raise ConfigError(f"delivery: cannot start the delivery process: {exc}") from None
        os.close(wake_r)
        os.close(events_w)
        events = Connection(events_r, writable=False)
        assert process.stdin is not None
        with contextlib.suppress(OSError):  # a child that died at once: reported just below
            process.stdin.write(pickle.dumps((self.settings, self.state_dir, self.poll_interval, self.setup)))
        with contextlib.suppress(OSError):
            process.stdin.close()
        self._process = process
        first = _first_message(events)
        if first != _READY:
            events.close()
            os.close(wake_w)
            self._reap(timeout=5.0)
            raise ConfigError(f"delivery: {first}")
        os.set_blocking(wake_w, False)  # notify() must never wait on the child
        self._events, self._wake = events, Connection(wake_w, readable=False)

    def _supervise(self) -> None:
        """Relay the child's events; when it dies unasked, report it and start another."""
        pause = RESTART_MIN_SECONDS
        while True:
            events = self._events
            if events is not None:
                self._relay(events)
            if self._stopping.is_set():
                return
            code = self._exit_code()
            if code is not None:  # else the last start failed, and said why
                self.on_event(DeliveryEvent(EventKind.WORKER_ERROR, error=(
                    f"the delivery process exited unexpectedly ({code}); starting another in {pause:g} s")))
            if self._stopping.wait(pause):
                return
            try:
                self._spawn()
                pause = RESTART_MIN_SECONDS
                if self._stopping.is_set():  # stop() came while this one started: it missed it
                    self._reap(timeout=10.0)
                    return
            except ConfigError as exc:
                pause = min(pause * 2, RESTART_MAX_SECONDS)
                self.on_event(DeliveryEvent(EventKind.WORKER_ERROR, error=f"{exc}; trying again in {pause:g} s"))

    def _relay(self, events: Connection) -> None:
        while True:
            try:
                event = events.recv()
            except (EOFError, OSError):
                break
            for item in event if isinstance(event, list) else (event,):  # (a single event: a child of an older build)
                if isinstance(item, DeliveryEvent):
                    self.on_event(item)
        events.close()
        self._events = None

    def _exit_code(self) -> str | None:
        """How the child ended (after reaping it); None if no child was running."""
        process = self._process
        if process is None:
            return None
        self._reap(timeout=5.0)  # its events pipe is closed: if it lingers, it cannot report anything
        code = process.returncode
        return f"signal {-code}" if code < 0 else f"exit code {code}"

    def _reap(self, timeout: float) -> bool:
        process, self._process = self._process, None
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.close()
        if process is None:
            return True
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()  # in-flight sends are repeated by the next start (at least once)
            process.wait(5.0)
            return False
        return True


def _first_message(events: Connection) -> object:
    try:
        if not events.poll(START_TIMEOUT):
            return f"the delivery process did not start within {START_TIMEOUT:g} s"
        return events.recv()
    except (EOFError, OSError):
        return "the delivery process exited while starting (see its error above)"


# -- the child -------------------------------------------------------------------------------
def _child_environment() -> dict[str, str]:
    """The parent's environment (AWS's chain, proxies, CA bundles) plus where `detector` is, so
    that `-m` finds the same package even when it runs from a source tree."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def _child_main(settings: DeliverySettings, state_dir: str, poll_interval: float,
                setup: Callable[[], None] | None, *, wake: Connection, events: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload (or a closed terminal) is the parent's business
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stop of the whole group: the parent's `stop` follows
    if setup is not None:
        setup()

    def send(message: object) -> None:
        with contextlib.suppress(OSError):  # the parent is gone: the wait below sees EOF
            events.send(message)

    try:
        router = Router({output.name: output.route for output in settings.outputs})
        outbox = Outbox.in_state_dir(state_dir, settings.outbox, router, send)
        sinks = build_sinks(list(settings.outputs))
    except Exception as exc:  # a one-line reason for the parent, which exits 2 with it
        send(str(exc) or type(exc).__name__)
        return
    forwarder = _Forwarder(send)
    outbox.on_event = forwarder.put
    dispatcher = Dispatcher(outbox, sinks, forwarder.put, poll_interval=poll_interval, defer_marks=True)
    try:
        dispatcher.start()
        gc.freeze()  # what exists now lives as long as the process: keep it out of collections
        send(_READY)
        forwarder.start()
        _serve(wake, dispatcher)
    finally:
        dispatcher.stop(timeout=10.0)
        for sink in sinks.values():
            sink.close()
        outbox.close()
        forwarder.close()  # after the dispatcher's last events
        events.close()


class _Forwarder(threading.Thread):
    """Sends the child's `DeliveryEvent`s to the parent in lists: one message (and one wake-up
    of the parent, whose engine thread then waits for the GIL) for all events that queued up
    meanwhile, not one per delivered alert."""

    _END = object()

    def __init__(self, send: Callable[[object], None]) -> None:
        super().__init__(name="detector-courier-events", daemon=True)
        self._send = send
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()

    def put(self, event: DeliveryEvent) -> None:
        self._queue.put(event)

    def run(self) -> None:
        while True:
            batch = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < FORWARD_BATCH:
                    batch.append(self._queue.get_nowait())
            ended = self._END in batch
            if ended:
                del batch[batch.index(self._END):]
            if batch:
                self._send(batch)
            if ended:
                return

    def close(self) -> None:
        """Send what is queued, then end (events put afterwards are not sent)."""
        self._queue.put(self._END)
        if self.is_alive():
            self.join(10.0)
        else:  # never started (a failed start): send what is there from here
            self.run()


def _serve(wake: Connection, dispatcher: Dispatcher) -> None:
    """Relay nudges until told to stop or the parent is gone."""
    while True:
        try:
            message = wake.recv_bytes()
        except (EOFError, OSError):
            return
        if message == _STOP:
            return
        dispatcher.notify()


def main(argv: list[str]) -> int:
    """`python -m detector.alert.courier WAKE_FD EVENTS_FD`, started by `CourierProcess` only;
    the pickled (settings, state_dir, poll_interval, setup) come on stdin from the parent."""
    wake = Connection(int(argv[0]), writable=False)
    events = Connection(int(argv[1]), readable=False)
    # Unpickling is only safe from a trusted writer: stdin is a pipe from our parent, nothing else.
    settings, state_dir, poll_interval, setup = pickle.load(sys.stdin.buffer)
    sys.stdin.close()
    _child_main(settings, state_dir, poll_interval, setup, wake=wake, events=events)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
