"""Build tests/support/golumberjack: the real lumberjack.v2 behind a tiny stdin-to-file program.

Needs `go` and Debian's golang-gopkg-natefinch-lumberjack.v2-dev, which installs the library's
source under /usr/share/gocode (GOPATH mode, no module download):

    apt-get install -y golang-go golang-gopkg-natefinch-lumberjack.v2-dev
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

GOPATH = Path("/usr/share/gocode")
LUMBERJACK = GOPATH / "src/gopkg.in/natefinch/lumberjack.v2/lumberjack.go"
MAIN = Path(__file__).parent / "golumberjack" / "main.go"
INSTALL = "apt-get install -y golang-go golang-gopkg-natefinch-lumberjack.v2-dev"


def missing_prerequisite() -> str | None:
    """Why the program cannot be built here, or None if it can."""
    if shutil.which("go") is None:
        return f"no `go` on PATH ({INSTALL})"
    if not LUMBERJACK.is_file():
        return f"lumberjack.v2 source not found at {LUMBERJACK} ({INSTALL})"
    return None


def build_golumberjack(out_dir: Path) -> Path:
    """Compile the program into `out_dir`; a failing build raises (it is a real problem, not a skip)."""
    out = out_dir / "golumberjack"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOFLAGS": ""}
    if "GOCACHE" not in env and "HOME" not in env:
        env["GOCACHE"] = str(out_dir / "gocache")
    result = subprocess.run(
        ["go", "build", "-o", str(out), str(MAIN)], env=env, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"go build of {MAIN} failed:\n{result.stderr}")
    return out


class GoLumberjack:
    """The built program as a log writer: each line goes down a pipe and becomes one Write of
    the real lumberjack.Logger (which rotates, then compresses and prunes in its own goroutine)."""

    def __init__(self, binary: Path, path: Path, *, max_size: int = 1, max_backups: int = 0,
                 compress: bool = False) -> None:
        argv = [str(binary), "-path", str(path), "-maxsize", str(max_size), "-maxbackups", str(max_backups)]
        self.proc = subprocess.Popen([*argv, *(["-compress"] if compress else [])], stdin=subprocess.PIPE)

    def write(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()  # now, not when a buffer fills: tests pace themselves on what was written

    def close(self) -> None:
        """Close the Logger (the program exits at the end of its input); raise if it failed."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        if self.proc.wait(timeout=60) != 0:
            raise RuntimeError(f"golumberjack exited with {self.proc.returncode}")
