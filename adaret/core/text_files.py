"""Reading the small text and JSON files artifacts carry, with one-line errors that say what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaret.core.errors import AdaretError


def read_utf8(path: Path, what: str | None = None, hint: str = "") -> str:
    """The file's text; unreadable or non-UTF-8 content is one line naming ``what`` (default: the path), the
    offending byte and its offset, then ``hint``."""
    what = what or str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise AdaretError(f"{what} does not exist{_tail(hint)}") from None
    except OSError as exc:
        raise AdaretError(f"cannot read {what}: {exc.strerror or exc}{_tail(hint)}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AdaretError(f"{what} is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
                          f"{_tail(hint)}") from None


def parse_json(text: str, what: str, hint: str = "") -> Any:
    """``json.loads`` with every way it fails as one line: malformed text, and also the ValueError of a number
    over Python's 4300-digit limit and the RecursionError of nesting deeper than the interpreter's stack."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AdaretError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
                          f"{_tail(hint)}") from None
    except ValueError:
        raise AdaretError(f"{what} holds a number too long to read{_tail(hint)}") from None
    except RecursionError:
        raise AdaretError(f"{what} is nested too deeply to read{_tail(hint)}") from None


def read_json_object(path: Path, what: str | None = None, hint: str = "") -> dict[str, Any]:
    """A UTF-8 JSON file that must hold an object, or one AdaretError line saying why it cannot be used."""
    what = what or str(path)
    data = parse_json(read_utf8(path, what, hint), what, hint)
    if not isinstance(data, dict):
        raise AdaretError(f"{what} is not a JSON object (found {type(data).__name__}){_tail(hint)}")
    return data


def _tail(hint: str) -> str:
    return f"; {hint}" if hint else ""
