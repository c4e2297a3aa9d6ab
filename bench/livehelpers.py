"""The helper processes of bench/live.py, each run as `python bench/livehelpers.py ROLE PATH OUT`
(a plain subprocess: one pid to stop). Standard library only, so that the baseline follower's
CPU and RSS are those of a bare Python follower.

    tail FILE OUT         the baseline: a trivial `tail -F` in Python (inotify on the directory,
                          reopen on rotation) appending every probe line it reads to OUT
    observe FILE OUT      watches FILE (an alert file, or tail's OUT) with inotify and appends
                          `seq monotonic-time` to OUT the first time a probe's sequence number shows up
    receive PORTFILE OUT  a keep-alive HTTP receiver on 127.0.0.1 appending `seq monotonic-time`
                          per probe alert (the webhook target); writes its port to PORTFILE

Every time is CLOCK_MONOTONIC (`time.monotonic()`), one clock for every process of the machine.
A helper is stopped with SIGTERM; it flushes what it recorded and exits 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

PROBE_USER = "latency-probe"
PROBE_MARK = PROBE_USER.encode()
PROBE_ID = re.compile(rb"00000000-0000-4000-8000-(\d{12})")

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100


class Inotify:
    """The directory watch of a helper: `wait()` returns once something in it changed."""

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        if self.fd < 0 or libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {directory}")

    def wait(self, timeout: float) -> None:
        select.select([self.fd], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                pass


def _exit_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(0))


def _read_new(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_probes(sink: int, lines: list[bytes]) -> None:
    probes = [line for line in lines if PROBE_MARK in line]
    if probes:
        os.write(sink, b"\n".join(probes) + b"\n")


def _replaced(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return False  # between lumberjack's rename and its create: look again on the next wake


def role_tail(path: Path, out: Path) -> None:
    """The baseline: follow `path` like `tail -F` and append every probe line to `out`."""
    watch = Inotify(path.parent)
    sink = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # its existence says "ready"
    fd, partial = os.open(path, os.O_RDONLY), b""
    while True:
        lines = (partial + _read_new(fd)).split(b"\n")
        partial = lines.pop()
        _write_probes(sink, lines)
        if _replaced(path, fd):
            # lumberjack closed the old file before renaming it: one more read drains it
            _write_probes(sink, (partial + _read_new(fd)).split(b"\n")[:-1])
            os.close(fd)
            fd, partial = os.open(path, os.O_RDONLY), b""
            continue
        watch.wait(0.25)


def role_observe(path: Path, out: Path) -> None:
    """Append `seq monotonic-time` to `out` the first time each probe seq appears in `path`."""
    watch = Inotify(path.parent)
    seen: set[int] = set()
    fd: int | None = None
    partial = b""
    with out.open("a") as log:  # its existence says "ready"
        log.flush()
        while True:
            if fd is None and path.exists():
                fd = os.open(path, os.O_RDONLY)
            if fd is not None:
                data = partial + _read_new(fd)
                now = time.monotonic()
                complete = data.rfind(b"\n") + 1
                partial = data[complete:]
                for match in PROBE_ID.finditer(data, 0, complete):
                    seq = int(match.group(1))
                    if seq not in seen:
                        seen.add(seq)
                        log.write(f"{seq} {now}\n")
                log.flush()
            watch.wait(0.25)


def role_receive(port_file: Path, out: Path) -> None:
    """The webhook receiver: HTTP/1.1 keep-alive, `seq arrival-time` per probe alert.

    It stands in for a SIEM on another machine, so it must cost this machine next to nothing:
    a minimal asyncio HTTP/1.1 parser (Content-Length bodies, 200 "ok"), ~20 us a request,
    where http.server spends ~300 us and would take a third of a core from the detector at
    1,000 alerts/s.
    """
    import asyncio  # noqa: PLC0415  only this role needs it

    log = out.open("a", buffering=1)

    class Receive(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                head_end = self.buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    return
                length = 0
                for line in self.buffer[:head_end].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                end = head_end + 4 + length
                if len(self.buffer) < end:
                    return
                body, self.buffer = self.buffer[head_end + 4:end], self.buffer[end:]
                now = time.monotonic()
                match = PROBE_ID.search(body)
                if match:
                    log.write(f"{int(match.group(1))} {now}\n")
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Receive, "127.0.0.1", 0)
        port_file.write_text(str(server.sockets[0].getsockname()[1]))
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    try:
        asyncio.run(serve())
    finally:
        log.close()


ROLES: dict[str, Callable[[Path, Path], None]] = {"tail": role_tail, "observe": role_observe,
                                                   "receive": role_receive}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ROLES:
        print(f"usage: livehelpers.py {{{','.join(ROLES)}}} PATH OUT", file=sys.stderr)
        return 2
    _exit_on_sigterm()
    with contextlib.suppress(KeyboardInterrupt):
        ROLES[argv[0]](Path(argv[1]), Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

