"""The installed package's version: what `detector --version` prints and `detector_build_info` carries."""

from __future__ import annotations

from functools import cache


@cache
def package_version() -> str:
    """The version of the installed `detector` distribution (pyproject.toml's), or `unknown`
    when the package runs from a source tree that was never installed."""
    # importlib.metadata costs ~50 ms to import: only when asked, not on every command's start.
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("detector")
    except PackageNotFoundError:
        return "unknown"
