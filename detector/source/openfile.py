"""One file being followed: its open descriptor (or `.gz` stream) and how far it has been read.

Once opened, a file is only ever read through this descriptor: a rotated, compressed or
pruned file stays readable to its end (Linux keeps an unlinked inode alive while it is open).
"""

from __future__ import annotations

import gzip
import os
import stat
from typing import IO

from detector.source.backups import GZ_ERRORS
from detector.source.position import FINGERPRINT_BYTES, FileIdentity

BLOCK_BYTES = 1 << 18  # as replay.py: measured as fast as 1 MiB blocks, and cheaper through gzip
_FP = FINGERPRINT_BYTES
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: never hang on a FIFO at the path


class NotRegular(OSError):
    """The path names something other than a regular file (a directory, a FIFO...)."""


class OpenFile:
    """A plain file (the live file or a `.log` backup) or a `.gz` backup, open for reading."""

    __slots__ = ("_ident", "_k", "dev", "error", "failed", "fd", "gz", "head", "ino", "lineno",
                 "live", "offset", "path", "pending", "raw", "rotated", "size", "skip_nuls", "stamp")

    def __init__(self, path: str, fd: int, info: os.stat_result, *, live: bool, stamp: str | None,
                 raw: IO[bytes] | None = None) -> None:
        self.path = path  # the live path, or the backup's name once known
        self.fd = fd
        self.raw = raw
        self.gz = gzip.GzipFile(fileobj=raw, mode="rb") if raw is not None else None
        self.dev, self.ino, self.size = info.st_dev, info.st_ino, info.st_size
        self.live = live  # believed to be the file at the followed path
        self.stamp = stamp  # rotation stamp from its backup name, once known
        self.rotated = False  # was the live file, then renamed or removed
        self.offset = 0  # bytes consumed (decompressed for .gz)
        self.head = b""  # its first bytes, up to the fingerprint length
        self.pending = b""  # .gz: decompressed past `offset` by seek(), returned first
        self.lineno: int | None = 0  # complete lines so far; None if reading began mid-file
        self.skip_nuls = False  # after a truncation: skip the NUL hole a non-O_APPEND writer leaves
        self.failed = False  # a read error was reported
        self.error: BaseException | None = None  # a .gz that failed while seeking
        self._k = -1
        self._ident: FileIdentity | None = None

    @classmethod
    def open_plain(cls, path: str, *, live: bool, stamp: str | None = None) -> OpenFile:
        """Open a regular file; OSError (FileNotFoundError, PermissionError, NotRegular) if not possible."""
        fd = os.open(path, _OPEN_FLAGS)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise NotRegular(f"{path} is not a regular file")
        return cls(path, fd, info, live=live, stamp=stamp)

    @classmethod
    def open_gz(cls, path: str, stamp: str) -> OpenFile:
        """Open a `.gz` backup for streaming decompression; OSError if not possible."""
        raw = open(path, "rb", buffering=0)  # noqa: SIM115 -- owned by the OpenFile, closed by it
        return cls(path, raw.fileno(), os.fstat(raw.fileno()), live=False, stamp=stamp, raw=raw)

    def read_block(self) -> bytes:
        """The next block of (decompressed) data; b"" at the current end."""
        if self.gz is None:
            return os.read(self.fd, BLOCK_BYTES)
        if self.pending:
            block, self.pending = self.pending, b""
            return block
        return self.gz.read(BLOCK_BYTES)

    def read_head(self, size: int) -> bytes:
        """The first `size` bytes of a plain file, read without moving."""
        return os.pread(self.fd, size, 0)

    def seek(self, offset: int) -> None:
        """Continue reading at `offset`, knowing the first bytes (a .gz is decompressed up to there)."""
        if self.gz is None:
            os.lseek(self.fd, offset, os.SEEK_SET)
            self.head = self.read_head(_FP)  # may go past `offset`: any prefix identifies the file
            self.offset = offset
            return
        try:  # decompress up to `offset`, and at least the fingerprint's bytes (kept for reading)
            ahead = b""
            while self.offset < offset or len(self.head) < _FP:
                chunk = self.gz.read(BLOCK_BYTES if self.offset < offset else _FP)
                if not chunk:
                    break
                if len(self.head) < _FP:
                    self.head += chunk[: _FP - len(self.head)]
                skip = min(len(chunk), max(0, offset - self.offset))
                self.offset += skip
                ahead += chunk[skip:]
            self.pending = ahead
        except GZ_ERRORS as exc:
            self.error = exc

    def consume(self, data: bytes) -> tuple[int, bytes]:
        """Account for a block just read: (offset of the data to split, the data to split)."""
        base = self.offset
        self.offset = base + len(data)
        known = len(self.head)
        if known < _FP and base <= known < self.offset:
            self.head += data[known - base: _FP - base]
        if self.skip_nuls:
            kept = data.lstrip(b"\0")
            base += len(data) - len(kept)
            data = kept
            self.skip_nuls = not data
        return base, data

    def identity(self) -> FileIdentity:
        """This file's identity, fingerprinted over its first bytes known so far (up to the limit)."""
        if self._ident is None or self._k != len(self.head):
            self._ident = FileIdentity.of(self.dev, self.ino, self.head)
            self._k = len(self.head)
        return self._ident

    def restart(self) -> None:
        """Read again from byte 0 (after a truncation)."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.offset, self.head, self.lineno, self._k, self.skip_nuls = 0, b"", 0, -1, True

    def close(self) -> None:
        if self.gz is not None and self.raw is not None:
            self.gz.close()
            self.raw.close()
        else:
            os.close(self.fd)
