"""Generated documentation stays in sync with the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_fields_doc_matches_the_field_table() -> None:
    """docs/fields.md contains exactly the table `detector fields --format markdown` prints."""
    table = subprocess.run([sys.executable, "-m", "detector", "fields", "--format", "markdown"],
                           capture_output=True, text=True, check=True, cwd=REPO).stdout
    doc = (REPO / "docs" / "fields.md").read_text()
    assert table.strip() in doc, "regenerate docs/fields.md with `detector fields --format markdown`"
