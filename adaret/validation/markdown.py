"""The Markdown pieces the validation reports share: a table of rows, its cells, and the list of checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cell(value: Any) -> str:
    """A number with 4 significant digits (tiny ones in scientific notation), None as "-", a list item by item."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(cell(v) for v in value) + "]"
    return str(value)


def table(rows: Sequence[dict], columns: Sequence[str]) -> list[str]:
    """The lines of a Markdown table of ``rows``, one column per name in ``columns`` (missing values: "-")."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    return lines + ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]


def check_lines(checks: Sequence[dict]) -> list[str]:
    """One bullet per check: ok or FAIL, what was checked, on what, and the detail."""
    return [f"- {'ok  ' if c['passed'] else 'FAIL'} {c['check']} {c['target']}: {c['detail']}" for c in checks]
