"""What the validation reports share: a Markdown table of rows, its cells, the list of checks, the ONNX Runtime rows
the checks look at, and writing a report's JSON and Markdown files."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from adaret.core.fileio import atomic_file
from adaret.core.machine import describe


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


def report_opening(report: dict, title: str, about: str) -> list[str]:
    """The lines every validation report opens with: ``title``, the command, the checkpoint and its hash followed
    by ``about`` (the data and the settings), and the verdict."""
    return [f"# {title}", "", f"Command: `{report['command']}`", "",
            f"Checkpoint `{report['checkpoint']}` (sha256 {report['checkpoint_sha256'][:12]}){about}", "",
            f"**{'PASSED' if report['passed'] else 'FAILED'}**", ""]


def machine_line(report: dict) -> str:
    """Where the report was measured: the machine and the library versions."""
    return (f"Machine: {describe(report['machine'])}. Versions: "
            + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))


def report_closing(report: dict, title: str, line: Callable[[dict], str]) -> list[str]:
    """The checks, then ``report["disagreements"]`` under ``title`` (one ``line(d)`` each, when there are any),
    then the machine line."""
    lines = check_lines(report["checks"])
    if report["disagreements"]:
        lines += ["", f"## {title} (first few)", "", *(f"- {line(d)}" for d in report["disagreements"])]
    return [*lines, "", machine_line(report), ""]


def check_lines(checks: Sequence[dict]) -> list[str]:
    """One bullet per check: ok or FAIL, what was checked, on what, and the detail."""
    return [f"- {'ok  ' if c['passed'] else 'FAIL'} {c['check']} {c['target']}: {c['detail']}" for c in checks]


def onnxruntime_rows(rows: Sequence[dict]) -> Iterator[tuple[dict, str]]:
    """The rows measured through ONNX Runtime, each with the name its checks report: ``onnxruntime@<budget>``."""
    for row in rows:
        if row["backend"] == "onnxruntime":
            yield row, f"onnxruntime@{row['budget']:g}"


def write_report(payload: dict, json_path: Path, md_path: Path, text: str) -> None:
    """``payload`` as indented JSON and ``text`` as Markdown, each written atomically."""
    with atomic_file(json_path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    with atomic_file(md_path) as tmp:
        tmp.write_text(text)
