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
