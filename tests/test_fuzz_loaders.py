"""Fuzzing the loaders (issue 18): mutated and truncated inputs load, or raise one line of AdaretError.

Every loader that reads an artifact from disk (or from a graph's metadata) is fed inputs derived from a real one
and mutated by hypothesis: JSON-level mutations (keys dropped or renamed, values replaced by random JSON, types
swapped, huge and non-finite numbers, deep nesting, lone surrogates) and byte-level ones (truncation, bit flips,
deleted, inserted and duplicated bytes, invalid UTF-8, other encodings). The property, for every input:

- the loader returns (a value of the declared types, where that is checked), or raises ``AdaretError`` whose
  message is one non-empty line: anything else (a KeyError, a RecursionError, a Rust panic) is a bug;
- it returns within its time limit (a SIGALRM stops a Python loop; a slow C call is caught afterwards), and
  within a memory limit (a length field read as a size must not allocate gigabytes).

The default run is derandomized and sized to at least 10,000 inputs in about a minute on one core (``EXAMPLES``;
``test_the_default_run_fuzzes_ten_thousand_inputs`` checks the count); the ``long`` variants, marked slow, run
``LONG_FACTOR`` times as many, randomized. Derandomized means the same inputs for the same command on the same code:
hypothesis also draws constants it finds in the local modules loaded (``adaret``'s and the tests'), so running this
file alone and within the whole suite may try different inputs. A failure prints its input and a
``@reproduce_failure`` blob that replays it anywhere.

A bug found in a loader this file cannot fix is listed in ``KNOWN_BUGS``: the fuzzers let exactly that failure
(its exception type, escaping through the named function) pass, and ``test_known_bug`` replays its smallest
input as an xfail(strict=True) case. When the loader is fixed, that case passes, strict xfail fails the run, and
the entry is deleted, which puts the fuzzers back on guard for it.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import hashlib
import io
import json
import resource
import shutil
import signal
import threading
import time
import traceback
import typing
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaret.core.dummy_inputs import Vocabulary
from adaret.core.errors import AdaretError
from adaret.core.metadata import ExportMetadata
from adaret.core.outputs import check_manifest, holds_only_an_export, read_manifest
from adaret.engines.profiles import Profile, ShapeRange
from adaret.engines.sidecar import (
    EngineSidecar,
    _conforms,
    check_compatible,
    check_plan_matches,
    load_sidecar,
    sidecar_path,
)
from adaret.runtime.explain import GraphFile, _encode_varint
from adaret.runtime.runners import metadata_from_sidecar
from adaret.runtime.session import load
from adaret.runtime.text import TextEncoder
from adaret.training.checkpoint import RetentionCheckpoint, resolve_model_source
from adaret.training.config import PACKAGED_MODEL
from adaret.training.data import load_splits

# Inputs per fuzzer in the default (CI) run: >= 10,000 in all, about a minute on one core. The ONNX Runtime and
# checkpoint loaders cost tens of milliseconds an input (a session, a model), the rest well under one.
EXAMPLES = {
    "metadata": 3000, "sidecar-dict": 2000, "sidecar-file": 900, "manifest": 1200, "graph-file": 1500,
    "vocabulary": 600, "tokenizer-dir": 600, "csv": 800, "jsonl": 800,
    "load-model": 200, "load-metadata": 60, "load-tokenizer": 100, "checkpoint": 80,
}
LONG_FACTOR = 10
MODES = [pytest.param("ci", id="ci"), pytest.param("long", id="long", marks=pytest.mark.slow)]
# Wall-clock limit per input (generous: a hang, not a slow machine, is what they catch), and the address space a
# loader may add while it runs (a session or a model needs more than a parser; more than this is a MemoryError).
SLOW_LOADERS = ("load-model", "load-metadata", "load-tokenizer", "checkpoint")
TIME_LIMIT_S = dict.fromkeys(SLOW_LOADERS, 60.0)
DEFAULT_TIME_LIMIT_S = 10.0
MEMORY_HEADROOM = dict.fromkeys(SLOW_LOADERS, 1 << 30)
DEFAULT_MEMORY_HEADROOM = 512 << 20

RUNS: Counter[str] = Counter()  # inputs each fuzzer ran in this session


def fuzz_settings(fuzzer: str, mode: str) -> settings:
    long = mode == "long"
    return settings(max_examples=EXAMPLES[fuzzer] * (LONG_FACTOR if long else 1), deadline=None,
                    derandomize=not long, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


# --- the oracle --------------------------------------------------------------------------------------------------


class _Hung(BaseException):
    """Raised by SIGALRM: a BaseException, so that a loader's ``except Exception`` does not swallow it."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; the elapsed time is still checked
        return

    def alarm(signum, frame):
        raise _Hung

    previous = signal.signal(signal.SIGALRM, alarm)
    started = time.monotonic()
    pending, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if pending:  # someone else's alarm (a pytest timeout plugin, say): re-armed for what was left of it
            signal.setitimer(signal.ITIMER_REAL, max(pending - (time.monotonic() - started), 1e-3), interval)


@contextlib.contextmanager
def _memory_limit(headroom: int) -> Iterator[None]:
    """Cap the address space at what the process maps now plus ``headroom``: a corrupt length that a loader
    allocates is a MemoryError here, not gigabytes taken from the CI machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        yield  # no /proc: no cap
        return
    cap = mapped + headroom
    if soft != resource.RLIM_INFINITY:
        cap = min(cap, soft)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dataclass(frozen=True)
class KnownBug:
    """A failure of a loader outside this issue's files: tolerated by the fuzzers, replayed as a strict xfail."""

    id: str
    fuzzers: tuple[str, ...]
    raises: type[BaseException] | tuple[type[BaseException], ...]
    where: str  # "adaret/training/data.py:_read_jsonl_rows": the function it escapes through
    reason: str
    replay: Callable[[Path, Callable[[str], Any]], Any]  # (tmp_path, fixture getter): the loader on a failing input

    def matches(self, fuzzer: str, exc: BaseException) -> bool:
        if fuzzer not in self.fuzzers or not isinstance(exc, self.raises):
            return False
        file, function = self.where.split(":")
        return any(frame.filename.endswith(file) and frame.name == function
                   for frame in traceback.extract_tb(exc.__traceback__))


def _report(fuzzer: str, problem: str, exc: BaseException | None) -> None:
    """A bug: fail the example (hypothesis then shrinks the input and prints it)."""
    raise AssertionError(f"{fuzzer}: {problem}") from exc


def expect_clean(fuzzer: str, call: Callable[[], Any], *, tolerate_known: bool = True) -> Any:
    """Run one loader call under the property; return its value (None where it raised AdaretError)."""
    RUNS[fuzzer] += 1
    limit = TIME_LIMIT_S.get(fuzzer, DEFAULT_TIME_LIMIT_S)
    known = KNOWN_BUGS if tolerate_known else ()
    started = time.monotonic()
    result = problem = failure = None
    try:
        with _time_limit(limit), _memory_limit(MEMORY_HEADROOM.get(fuzzer, DEFAULT_MEMORY_HEADROOM)):
            result = call()
    except _Hung:
        problem = f"still running after {limit:.0f} s (a hang)"
    except AdaretError as exc:
        message = str(exc)
        if not message.strip() or "\n" in message or "\r" in message:
            problem, failure = f"AdaretError without a one-line message: {message[:500]!r}", exc
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a pyo3 PanicException is a BaseException
        problem, failure = f"raised {type(exc).__name__}: {str(exc)[:500]}", exc
    elapsed = time.monotonic() - started
    if problem is None and elapsed > limit:
        problem = f"took {elapsed:.1f} s (limit {limit:.0f} s)"
    if problem is not None:
        if failure is not None and any(bug.matches(fuzzer, failure) for bug in known):
            return None
        _report(fuzzer, problem, failure)
    return result


def assert_typed(obj: Any) -> None:
    """Every field of a loaded dataclass has its declared type: a loader must not hand on what it did not check."""
    hints = typing.get_type_hints(type(obj))
    for item in dataclasses.fields(obj):
        value = getattr(obj, item.name)
        assert _conforms(value, hints[item.name]), f"{type(obj).__name__}.{item.name} is {value!r:.200}"


# --- mutations ---------------------------------------------------------------------------------------------------

DEEP = 100_000
# JSON texts spliced in verbatim: a number over Python's 4300-digit int limit, floats that overflow, nesting
# deeper than the recursion limit, a lone surrogate and a NUL escaped, and a few that are not JSON at all.
RAW_JSON = ["9" * 5000, "-" + "9" * 5000, "1e999", "-1e999", "NaN", "Infinity", "-0", "1.5e-400",
            "18446744073709551616", "[" * DEEP + "]" * DEEP, '{"a":' * DEEP + "1" + "}" * DEEP, '"\\ud800"',
            '"\\u0000"', '"a\\nb"', "[1,]", "{,}", "tru", "'x'", ""]
# Texts for fields read as numbers or names from strings (graph metadata).
RAW_TEXT = ["0", "-1", "1e999", "nan", "inf", "-inf", "1_0", " 7 ", "0x10", "9" * 5000, "dynamic", "static",
            "", "\x00", "a\nb", "\ud800", "1.0", "2", "true", "null", "[]", "{}"]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=10))


def _json_containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)


json_values = st.recursive(json_scalars, _json_containers, max_leaves=6)


def pick(draw: Callable, items: list) -> Any:
    """One of ``items`` (built per input, so not ``sampled_from``, which hashes a list each time it is made)."""
    return items[draw(st.integers(0, len(items) - 1))]


@dataclass(frozen=True)
class Raw:
    """A JSON text put into a document as is (``dump`` splices it in)."""

    text: str


def dump(doc: Any, *, indent: int | None = 2, ascii_only: bool = True, raw: bool = True) -> str:
    """``doc`` as JSON text; each ``Raw`` spliced in as is (``raw``), or written as a JSON string."""
    raws: list[str] = []

    def strip(value: Any) -> Any:
        if isinstance(value, Raw):
            if not raw:
                return value.text
            raws.append(value.text)
            return f"\x00raw{len(raws) - 1}\x00"
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    text = json.dumps(strip(doc), indent=indent, ensure_ascii=ascii_only)
    for index, raw in enumerate(raws):
        text = text.replace(f'"\\u0000raw{index}\\u0000"', raw, 1)
    return text


RAW_JSON_VALUES = st.sampled_from([Raw(text) for text in RAW_JSON])


def _as_parsed(doc: Any) -> Any:
    """``doc`` as a JSON file holding it reads back (JSON's types; Python's json takes NaN and Infinity); a spliced
    text that does not parse (too deep, too many digits, not JSON) stays a string."""
    text = dump(doc)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return json.loads(dump(doc, raw=False))


def _paths(doc: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _paths(value, (*prefix, index))


def _get(doc: Any, path: tuple) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _swaps(value: Any) -> list[Any]:
    """The same content as another JSON type, or a near miss of the same type."""
    if isinstance(value, bool):
        return [int(value), str(value).lower(), not value, None]
    if isinstance(value, int | float):
        return [str(value), -value, value * 10**30, 0, bool(value), float(value), [value], Raw("1e999"),
                Raw("9" * 5000)]
    if isinstance(value, str):
        return [len(value), [value], {value[:20]: value}, "", value[:20] * 1000, value.upper(), value + "\x00", None,
                1.5]
    if isinstance(value, list):
        return [{str(i): v for i, v in enumerate(value)}, [], value[:1], value + value, list(reversed(value)),
                value[0] if value else 0, dump(value, indent=None)]
    if isinstance(value, dict):
        return [list(value.values()), {}, [list(item) for item in value.items()], dump(value, indent=None),
                next(iter(value.values()), 0)]
    return [0, "", [], {}, False]


@st.composite
def mutated_json(draw, base: Any, max_ops: int = 3) -> Any:
    """``base`` (a JSON document) with 1 to ``max_ops`` structural mutations."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_ops))):
        path = pick(draw, list(_paths(doc)))
        value = _get(doc, path)
        op = draw(JSON_OPS)
        if op == "replace":
            new = draw(json_values)
        elif op == "raw":
            new = Raw(pick(draw, RAW_JSON))
        elif op == "swap":
            new = pick(draw, _swaps(value))
        elif op == "nest":
            new = pick(draw, [[value], {"value": value}])
        elif op == "add" and isinstance(value, dict | list):
            new = copy.copy(value)
            extra = draw(json_values)
            if isinstance(new, dict):
                new[draw(st.text(max_size=8))] = extra
            else:
                new.insert(draw(st.integers(0, len(new))), extra)
        elif op in ("drop", "rename") and path:
            parent, key = _get(doc, path[:-1]), path[-1]
            if op == "drop":
                del parent[key]
                continue
            if not isinstance(parent, dict):
                continue
            # a name over the file system's 255 bytes, too (where the key is a file name)
            renamed = pick(draw, [key.upper(), key + "_", key[:-1], " " + key, key * 50, draw(st.text(max_size=6))])
            parent[renamed] = parent.pop(key)
            continue
        else:
            new = pick(draw, _swaps(value))
        if path:
            _get(doc, path[:-1])[path[-1]] = new
        else:
            doc = new
    return doc


JSON_OPS = st.sampled_from(["replace", "raw", "swap", "drop", "add", "rename", "nest"])
BYTE_OPS = st.sampled_from(["truncate", "flip", "set", "delete", "insert", "splice", "duplicate"])
FILE_KINDS = st.sampled_from(["json", "json", "bytes", "both", "encoding"])
ENCODINGS = st.sampled_from(["utf-8-sig", "utf-16", "latin-1", "cp1252"])
INSERTS = [b"\x00", b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\r", b"\n", b"\r\n", b'"',
           b"\\", b",", b"{", b"[", b"}", b"]", b"\x80" * 3]


@dataclass(frozen=True)
class Edit:
    """One byte-level edit: what a failing graph input prints (not the 4 MB it makes)."""

    op: str
    at: int
    arg: Any = None


@st.composite
def byte_edits(draw, size: int, hot: list[int] | None = None, max_ops: int = 3) -> list[Edit]:
    """1 to ``max_ops`` edits of a file of ``size`` bytes; offsets mostly from ``hot`` when given (where the
    format's structure is, rather than payload)."""
    edits = []
    for _ in range(draw(st.integers(1, max_ops))):
        if hot and draw(st.integers(0, 9)) < 8:
            at = max(pick(draw, hot) + draw(st.integers(-2, 2)), 0)
        else:
            at = draw(st.integers(0, size))
        op = draw(BYTE_OPS)
        arg = {"truncate": lambda: None, "flip": lambda: 1 << draw(st.integers(0, 7)),
               "set": lambda: draw(st.integers(0, 255)), "delete": lambda: draw(st.integers(1, 16)),
               "insert": lambda: draw(st.binary(min_size=1, max_size=8)), "splice": lambda: pick(draw, INSERTS),
               "duplicate": lambda: (draw(st.integers(0, max(size - 1, 0))), draw(st.integers(1, 64)))}[op]()
        edits.append(Edit(op, at, arg))
    return edits


def apply_edits(data: bytes, edits: list[Edit]) -> bytes:
    buf = bytearray(data)
    for edit in edits:
        at = min(edit.at, len(buf))
        if edit.op == "truncate":
            del buf[at:]
        elif edit.op in ("flip", "set") and at < len(buf):
            buf[at] = buf[at] ^ edit.arg if edit.op == "flip" else edit.arg
        elif edit.op == "delete":
            del buf[at:at + edit.arg]
        elif edit.op in ("insert", "splice"):
            buf[at:at] = edit.arg
        elif edit.op == "duplicate":
            start, length = edit.arg
            buf[at:at] = buf[start:start + length]
    return bytes(buf)


def mutated_bytes(data: bytes, hot: list[int] | None = None) -> st.SearchStrategy[bytes]:
    return byte_edits(len(data), hot).map(lambda edits: apply_edits(data, edits))


@st.composite
def mutated_json_file(draw, base: Any, *, indent: int | None = 2) -> bytes:
    """A JSON file: ``base`` mutated as JSON, as bytes, or both, and written in one of a few encodings."""
    kind = draw(FILE_KINDS)
    doc = draw(mutated_json(base)) if kind in ("json", "both", "encoding") else base
    text = dump(doc, indent=indent, ascii_only=draw(st.booleans()))
    encoding = draw(ENCODINGS) if kind == "encoding" else "utf-8"
    data = text.encode(encoding, errors="replace" if encoding != "utf-8" else "surrogatepass")
    if kind in ("bytes", "both"):
        data = draw(mutated_bytes(data))
    return data


# --- the real inputs ---------------------------------------------------------------------------------------------


@dataclass
class Artifacts:
    export: Path  # a tiny export: model.onnx, tokenizer.json, tokenizer_config.json, manifest.json
    model: bytes
    hot: list[int]  # offsets of model.onnx's protobuf tags and lengths (not inside tensor payloads)
    props: dict[str, str]  # the export's adaret.* metadata
    tokenizer: dict  # the export's tokenizer.json, its vocabulary cut to 200 entries (fast to parse)
    tokenizer_config: dict
    manifest: dict
    checkpoint: Path  # a copy of the tiny checkpoint, whose config.json the fuzzer rewrites
    checkpoint_config: dict


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("not a protobuf varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _message_offsets(buf: bytes, base: int, depth: int, out: list[int]) -> bool:
    """Append the offset of every tag and length in ``buf`` (a protobuf message), recursing into length-delimited
    fields that parse as messages; False, appending nothing, when ``buf`` is not a message."""
    found, pos = [], 0
    try:
        while pos < len(buf):
            found.append(base + pos)
            key, pos = _read_varint(buf, pos)
            wire = key & 7
            if key >> 3 == 0:
                raise ValueError("field number 0")
            if wire == 0:
                _, pos = _read_varint(buf, pos)
            elif wire == 2:
                found.append(base + pos)
                size, pos = _read_varint(buf, pos)
                if pos + size > len(buf):
                    raise ValueError("field past the end")
                if depth < 8 and size > 1:
                    _message_offsets(buf[pos:pos + size], base + pos, depth + 1, found)
                pos += size
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                raise ValueError("group or unknown wire type")
        if pos != len(buf):
            raise ValueError("field past the end")
    except ValueError:
        return False
    out.extend(found)
    return True


def _field(number: int, wire: int, payload: bytes) -> bytes:
    """A protobuf field: ``payload`` is the value's bytes (a varint's, or a length-delimited field's content)."""
    return _encode_varint(number << 3 | wire) + (_encode_varint(len(payload)) + payload if wire == 2 else payload)


def _with_props(model: bytes, props: dict[str, str]) -> bytes:
    """``model`` (a serialised ModelProto) with its metadata_props (field 14) replaced by ``props``."""
    kept, pos = [], 0
    while pos < len(model):
        start = pos
        key, pos = _read_varint(model, pos)
        if key & 7 == 2:
            size, pos = _read_varint(model, pos)
            pos += size
        else:  # a varint: the top level of a ModelProto holds no fixed-width fields
            _, pos = _read_varint(model, pos)
        if key >> 3 != 14:
            kept.append(model[start:pos])
    entries = [_field(14, 2, _field(1, 2, key.encode(errors="surrogatepass"))
                      + _field(2, 2, value.encode(errors="surrogatepass"))) for key, value in props.items()]
    return b"".join(kept + entries)


def _small_tokenizer(full: dict, size: int = 200) -> dict:
    """The same tokenizer.json with only its first ``size`` vocabulary entries ([PAD], [UNK], [CLS], [SEP] and
    [MASK] among them): every structure stays, parsing takes a millisecond."""
    small = copy.deepcopy(full)
    small["model"]["vocab"] = {token: i for token, i in full["model"]["vocab"].items() if i < size}
    small["added_tokens"] = [t for t in full["added_tokens"] if t["id"] < size]
    return small


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Where the fuzzers write their inputs, a directory each."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def artifacts(tiny_checkpoint, tiny_dynamic_export, work) -> Artifacts:
    export = Path(tiny_dynamic_export.config.out)  # read only: the fuzzers write mutated copies into ``work``
    model = (export / "model.onnx").read_bytes()
    hot: list[int] = []
    assert _message_offsets(model, 0, 0, hot)
    checkpoint = work / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint)
    return Artifacts(export=export, model=model, hot=sorted(set(hot)),
                     props=GraphFile.read(export / "model.onnx").metadata.to_props(),
                     tokenizer=_small_tokenizer(json.loads((export / "tokenizer.json").read_text())),
                     tokenizer_config=json.loads((export / "tokenizer_config.json").read_text()),
                     manifest=json.loads((export / "manifest.json").read_text()),
                     checkpoint=checkpoint, checkpoint_config=json.loads((checkpoint / "config.json").read_text()))


def put(path: Path, data: bytes) -> None:
    """Write ``data`` as a new file: rewriting one in place costs milliseconds on ext4, which flushes a file that
    was truncated and written again when it is closed (auto_da_alloc)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def _workdir(work: Path, name: str) -> Path:
    path = work / name
    path.mkdir(exist_ok=True)
    return path


# --- graph metadata ----------------------------------------------------------------------------------------------

METADATA_FIELDS = [f.name for f in dataclasses.fields(ExportMetadata)]
PROPS_OPS = st.sampled_from(["drop", "text", "json", "raw", "mutate", "mutate", "swap", "rename", "add"])
PROPS_NAMES = st.sampled_from([*METADATA_FIELDS, "extra", ""]) | st.text(max_size=6)
PROPS_TEXTS = st.text(max_size=12) | st.sampled_from(RAW_TEXT)


@st.composite
def mutated_props(draw, base: dict[str, str]) -> dict[str, str]:
    """The ``adaret.*`` entries of a real export, with entries dropped, renamed, added, swapped between fields, or
    given random text, random JSON, a mutation of their own JSON, or a troublesome literal."""
    props = dict(base)
    for _ in range(draw(st.integers(1, 4))):
        key = pick(draw, sorted(props) or ["adaret.form"])
        op = draw(PROPS_OPS)
        value = props.get(key, "")
        if op == "drop":
            props.pop(key, None)
        elif op == "text":
            props[key] = draw(st.text(max_size=20))
        elif op == "json":
            props[key] = dump(draw(json_values), indent=None)
        elif op == "raw":
            props[key] = pick(draw, RAW_TEXT + RAW_JSON)
        elif op == "mutate":
            try:
                decoded = json.loads(value)
            except (ValueError, RecursionError):  # not JSON, or an earlier mutation's deep nesting
                decoded = value
            props[key] = dump(draw(mutated_json(decoded)), indent=None)
        elif op == "swap":
            props[key] = props[pick(draw, sorted(props))]
        elif op == "rename":
            props.pop(key, None)
            props[pick(draw, [key.upper(), key.removeprefix("adaret."), key + "_", "adaret." + key])] = value
        else:
            props["adaret." + draw(PROPS_NAMES)] = draw(PROPS_TEXTS)
    return props


def load_metadata(props: dict[str, str]) -> ExportMetadata:
    meta = ExportMetadata.from_props(props, "model.onnx")
    assert_typed(meta)
    written = meta.to_props()  # what loads, writes back and loads the same (as text: NaN != NaN)
    assert ExportMetadata.from_props(written).to_props() == written
    return meta


@pytest.mark.parametrize("mode", MODES)
def test_metadata_from_props(mode, artifacts):
    @fuzz_settings("metadata", mode)
    @given(props=mutated_props(artifacts.props))
    def run(props):
        expect_clean("metadata", lambda: load_metadata(props))

    run()


# --- the engine sidecar ------------------------------------------------------------------------------------------

PLAN = b"not a real plan"  # its sha256 is the sidecar's plan_sha256


def _sidecar_dict() -> dict:
    ranges = ShapeRange((1, 128), (8, 128), (32, 128))
    profile = Profile(128, {"input_ids": ranges, "attention_mask": ranges, "token_type_ids": ranges})
    return EngineSidecar(
        tensorrt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", precision="fp16",
        target="datacenter", profiles=[profile, profile], device_memory_bytes=[12_582_912, 6_291_456],
        onnx_sha256="ab" * 32, onnx_file="model_seq128.onnx", plan_sha256=hashlib.sha256(PLAN).hexdigest(), budget=0.4,
        training_budget=0.4, schedule={"denominator": 10000, "numerators": [10000, 3965, 1494, 543]}, seq_len=128,
        keep_counts={"128": [128, 51, 20, 7]}, checkpoint_sha256="ef" * 32, label_names=["a", "b", "c"],
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["logits"],
        hardware_compat=None, dla_core=None, decisions={"builder_flags": ["FP16"], "notes": []},
        layer_summary={"layers": 12}, adaret_version="0.1.0", built_at="2025-01-01T00:00:00+00:00",
        build_seconds=12.5).to_dict()


SIDECAR = _sidecar_dict()


def use_sidecar(sidecar: EngineSidecar) -> None:
    """What the runtime does with a loaded sidecar: check it against this machine and its plan, and read it as an
    export's metadata."""
    assert_typed(sidecar)
    check_compatible(sidecar, tensorrt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
    check_plan_matches(sidecar, PLAN)
    metadata_from_sidecar(sidecar)


@pytest.mark.parametrize("mode", MODES)
def test_sidecar_from_dict(mode):
    @fuzz_settings("sidecar-dict", mode)
    @given(data=mutated_json(SIDECAR, max_ops=4))
    def run(data):
        data = _as_parsed(data)
        expect_clean("sidecar-dict", lambda: use_sidecar(EngineSidecar.from_dict(data, source="model.plan.json")))

    run()


@pytest.mark.parametrize("mode", MODES)
def test_load_sidecar(mode, work):
    plan = _workdir(work, "sidecar") / "model.plan"
    put(plan, PLAN)

    @fuzz_settings("sidecar-file", mode)
    @given(data=mutated_json_file(SIDECAR))
    def run(data):
        put(sidecar_path(plan), data)
        expect_clean("sidecar-file", lambda: use_sidecar(load_sidecar(plan)))

    run()


# --- the export manifest -----------------------------------------------------------------------------------------


def check_export_dir(directory: Path) -> None:
    listed = read_manifest(directory)
    holds_only_an_export(directory)
    check_manifest(directory, [directory / "model.onnx"])
    assert listed is None or isinstance(listed, dict)


@pytest.mark.parametrize("mode", MODES)
def test_manifest(mode, artifacts, work):
    directory = _workdir(work, "manifest")
    for name in ("tokenizer_config.json", "export_report.json"):  # listed and present; model.onnx is listed only
        shutil.copy(artifacts.export / name, directory / name)

    @fuzz_settings("manifest", mode)
    @given(data=mutated_json_file(artifacts.manifest))
    def run(data):
        put(directory / "manifest.json", data)
        expect_clean("manifest", lambda: check_export_dir(directory))

    run()


# --- ONNX graphs: the explain scanner and ONNX Runtime -----------------------------------------------------------


def read_graph_file(path: Path) -> GraphFile:
    graph = GraphFile.read(path)
    assert_typed(graph.metadata)
    assert all(isinstance(name, str) for name in graph.output_names + graph.order_names)
    return graph


@pytest.mark.parametrize("mode", MODES)
def test_graph_file_read(mode, artifacts, work):
    path = _workdir(work, "graph") / "model.onnx"

    @fuzz_settings("graph-file", mode)
    @given(edits=byte_edits(len(artifacts.model), artifacts.hot))
    def run(edits):
        put(path, apply_edits(artifacts.model, edits))
        expect_clean("graph-file", lambda: read_graph_file(path))

    run()


def _model_dir(artifacts: Artifacts, work: Path, name: str, *, model: bool = True) -> Path:
    """A directory with the export's graph (unless ``model`` is False) and the small tokenizer beside it."""
    directory = _workdir(work, name)
    if model:
        put(directory / "model.onnx", artifacts.model)
    put(directory / "tokenizer.json", json.dumps(artifacts.tokenizer).encode())
    put(directory / "tokenizer_config.json", json.dumps(artifacts.tokenizer_config).encode())
    return directory


@pytest.mark.parametrize("mode", MODES)
def test_runtime_load_mutated_model(mode, artifacts, work):
    directory = _model_dir(artifacts, work, "load-model", model=False)

    @fuzz_settings("load-model", mode)
    @given(edits=byte_edits(len(artifacts.model), artifacts.hot))
    def run(edits):
        put(directory / "model.onnx", apply_edits(artifacts.model, edits))
        expect_clean("load-model", lambda: load(directory / "model.onnx", threads=1))

    run()


@pytest.mark.parametrize("mode", MODES)
def test_runtime_load_mutated_metadata(mode, artifacts, work):
    """A well-formed graph whose adaret.* metadata is mutated: what from_props accepts, the session must take."""
    directory = _model_dir(artifacts, work, "load-metadata", model=False)

    @fuzz_settings("load-metadata", mode)
    @given(props=mutated_props(artifacts.props))
    def run(props):
        put(directory / "model.onnx", _with_props(artifacts.model, props))
        expect_clean("load-metadata", lambda: load(directory / "model.onnx", threads=1))

    run()


def _tokenizer_files(artifacts: Artifacts) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(st.tuples(st.just("tokenizer.json"), mutated_json_file(artifacts.tokenizer, indent=None)),
                     st.tuples(st.just("tokenizer_config.json"), mutated_json_file(artifacts.tokenizer_config)))


@pytest.mark.parametrize("mode", MODES)
def test_runtime_load_mutated_tokenizer(mode, artifacts, work):
    directory = _model_dir(artifacts, work, "load-tokenizer")

    @fuzz_settings("load-tokenizer", mode)
    @given(file=_tokenizer_files(artifacts))
    def run(file):
        name, data = file
        _model_dir(artifacts, work, "load-tokenizer", model=False)  # both valid again, then one replaced
        put(directory / name, data)
        expect_clean("load-tokenizer", lambda: load(directory / "model.onnx", threads=1))

    run()


@pytest.mark.parametrize("mode", MODES)
def test_text_encoder_from_dir(mode, artifacts, work):
    """The tokenizer half of ``load``, without a session per input: many more inputs for the same time."""
    directory = _model_dir(artifacts, work, "tokenizer-dir", model=False)

    @fuzz_settings("tokenizer-dir", mode)
    @given(file=_tokenizer_files(artifacts))
    def run(file):
        name, data = file
        _model_dir(artifacts, work, "tokenizer-dir", model=False)
        put(directory / name, data)
        expect_clean("tokenizer-dir", lambda: TextEncoder.from_dir(directory))

    run()


def read_vocabulary(path: Path) -> Vocabulary:
    vocab = Vocabulary.from_tokenizer_file(path)
    assert_typed(vocab)
    return vocab


@pytest.mark.parametrize("mode", MODES)
def test_vocabulary_from_tokenizer_file(mode, artifacts, work):
    path = _workdir(work, "vocabulary") / "tokenizer.json"

    @fuzz_settings("vocabulary", mode)
    @given(data=mutated_json_file(artifacts.tokenizer, indent=None))
    def run(data):
        put(path, data)
        expect_clean("vocabulary", lambda: read_vocabulary(path))

    run()


# --- checkpoints -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_checkpoint_config(mode, artifacts):
    config = artifacts.checkpoint / "config.json"

    @fuzz_settings("checkpoint", mode)
    @given(data=mutated_json_file(artifacts.checkpoint_config))
    def run(data):
        put(config, data)
        expect_clean("checkpoint", lambda: RetentionCheckpoint.from_pretrained(artifacts.checkpoint))

    run()


# --- data files --------------------------------------------------------------------------------------------------

ROWS = [("Oil prices rose sharply on Monday.", "business"), ('The film, "Dune", won three awards.', "film"),
        ("Shares fell; the bank said nothing.", "business"), ("The striker scored twice.", "sport"),
        ("A new phone, again.", "tech"), ("Rates held at 5%.", "business"), ("The band's tour ends.", "film"),
        ("Chips got faster\nand cheaper.", "tech"), ("The cup final is sold out.", "sport"),
        ("Café owners protest the tax.", "business"), ("Critics loved it.", "film"), ("New laptop, old bugs.", "tech")]


def _csv_text() -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", "label", "source"])
    writer.writerows((text, label, "wire") for text, label in ROWS)
    return out.getvalue()


CSV = _csv_text().encode()
JSONL_ROWS = [{"text": text, "label": label, "id": i} for i, (text, label) in enumerate(ROWS)]
CSV_OPS = st.sampled_from(["none", "header", "ragged", "huge", "empty", "header-only", "blank-lines"])


@st.composite
def mutated_csv(draw) -> bytes:
    """The CSV with its structure mutated (columns dropped or renamed in the header, ragged rows, a field over the
    csv module's size limit, no rows at all) or its bytes (at commas, quotes and line ends mostly), or both."""
    lines = CSV.decode().split("\n")
    op = draw(CSV_OPS)
    if op == "header":
        columns = lines[0].split(",")
        columns[draw(st.integers(0, len(columns) - 1))] = pick(draw, ["", "Text", "label", "text ", '"'])
        lines[0] = ",".join(columns)
    elif op == "ragged":
        row = draw(st.integers(1, len(lines) - 1))
        lines[row] = pick(draw, [lines[row] + ",extra", lines[row].split(",")[0], "", ",,,,"])
    elif op == "huge":
        lines.insert(1, "x" * 140_000 + ",business,wire")
    elif op == "empty":
        lines = []
    elif op == "header-only":
        lines = lines[:1]
    elif op == "blank-lines":
        lines = [line for pair in zip(lines, [""] * len(lines), strict=True) for line in pair]
    data = "\n".join(lines).encode()
    if op == "none" or draw(st.booleans()):
        data = draw(mutated_bytes(data, [i for i, b in enumerate(data) if b in b',"\n'] if data else None))
    return data


@st.composite
def mutated_jsonl(draw) -> bytes:
    """The JSONL with one or more lines mutated as JSON (or replaced by a non-object), or its bytes, or both."""
    rows: list[Any] = copy.deepcopy(JSONL_ROWS)
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, len(rows) - 1))
        rows[index] = draw(mutated_json(rows[index]) | RAW_JSON_VALUES)
    if draw(st.booleans()):
        rows = rows[:draw(st.integers(0, len(rows)))]
    ascii_only = draw(st.booleans())  # a lone surrogate as a JSON escape, or as (invalid) UTF-8 bytes
    data = "\n".join(dump(row, indent=None, ascii_only=ascii_only) for row in rows).encode(errors="surrogatepass")
    if draw(st.booleans()):
        data = draw(mutated_bytes(data, [i for i, b in enumerate(data) if b in b'{}":,\n'] if data else None))
    return data


@pytest.mark.parametrize("mode", MODES)
def test_load_splits_csv(mode, work):
    path = _workdir(work, "data") / "data.csv"

    @fuzz_settings("csv", mode)
    @given(data=mutated_csv())
    def run(data):
        put(path, data)
        expect_clean("csv", lambda: load_splits(str(path)))

    run()


@pytest.mark.parametrize("mode", MODES)
def test_load_splits_jsonl(mode, work):
    path = _workdir(work, "data") / "data.jsonl"

    @fuzz_settings("jsonl", mode)
    @given(data=mutated_jsonl())
    def run(data):
        put(path, data)
        expect_clean("jsonl", lambda: load_splits(str(path)))

    run()


# --- crashes the fuzzers found, replayed ---------------------------------------------------------------------------
# Each replay is the smallest input of its kind that the fuzzers found (or, for the scanner, its shortest form).

DEEP_JSON = "[" * DEEP + "]" * DEEP
LONG_NUMBER = "9" * 5000  # json.loads raises ValueError: over Python's 4300-digit limit for int()


def _replay_graph(data: bytes) -> Callable[..., Any]:
    def replay(tmp_path: Path, fixture: Callable[[str], Any]) -> Any:
        put(tmp_path / "model.onnx", data)
        return GraphFile.read(tmp_path / "model.onnx")

    return replay


def _replay_manifest(text: str) -> Callable[..., Any]:
    def replay(tmp_path: Path, fixture: Callable[[str], Any]) -> Any:
        put(tmp_path / "manifest.json", text.encode())
        return check_manifest(tmp_path, [])

    return replay


def _replay_data(name: str, text: str) -> Callable[..., Any]:
    def replay(tmp_path: Path, fixture: Callable[[str], Any]) -> Any:
        put(tmp_path / name, text.encode())
        return load_splits(str(tmp_path / name))

    return replay


def _replay_tokenizer(name: str, text: str) -> Callable[..., Any]:
    def replay(tmp_path: Path, fixture: Callable[[str], Any]) -> Any:
        shutil.copy(resolve_model_source(PACKAGED_MODEL) / "tokenizer.json", tmp_path / "tokenizer.json")
        put(tmp_path / name, text.encode())
        return TextEncoder.from_dir(tmp_path)

    return replay


def _replay_checkpoint(text: str) -> Callable[..., Any]:
    def replay(tmp_path: Path, fixture: Callable[[str], Any]) -> Any:
        put(tmp_path / "config.json", text.encode())
        put(tmp_path / "model.safetensors", b"")
        return RetentionCheckpoint.from_pretrained(tmp_path)

    return replay


def _replay_checkpoint_edit(edit: Callable[[dict], Any]) -> Callable[..., Any]:
    """The tiny checkpoint with ``edit`` applied to its config.json (its weights still match)."""
    def replay(tmp_path: Path, fixture: Callable[[str], Any]) -> Any:
        checkpoint = tmp_path / "checkpoint"
        shutil.copytree(fixture("tiny_checkpoint"), checkpoint)
        config = json.loads((checkpoint / "config.json").read_text())
        edit(config)
        put(checkpoint / "config.json", json.dumps(config).encode())
        return RetentionCheckpoint.from_pretrained(checkpoint)

    return replay


def _replay_max_positions(tmp_path: Path, fixture: Callable[[str], Any]) -> Any:
    """A two-node dynamic graph whose metadata records 10**10 positions."""
    from onnx import TensorProto, helper, save

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    nodes = [helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["m"], ["logits"], axes=[1], keepdims=1)]
    model = helper.make_model(helper.make_graph(nodes, "g", [ids, mask], [logits]),
                              opset_imports=[helper.make_opsetid("", 17)])
    ExportMetadata(form="dynamic", budget=1.0, max_positions=10**10).write_to(model)
    save(model, str(tmp_path / "model.onnx"))
    return load(tmp_path / "model.onnx", threads=1)


def _replay_invalid_utf8_name(tmp_path: Path, fixture: Callable[[str], Any]) -> Any:
    """An Identity node whose input is named by the byte 0xe1 (not UTF-8), which no tensor produces."""
    node = _field(1, 2, b"\xe1") + _field(2, 2, b"y") + _field(4, 2, b"Identity")
    graph = _field(1, 2, node) + _field(2, 2, b"g") + _field(12, 2, _field(1, 2, b"y"))
    put(tmp_path / "model.onnx", _field(1, 0, _encode_varint(8)) + _field(8, 2, _field(2, 0, _encode_varint(17)))
        + _field(7, 2, graph))
    return load(tmp_path / "model.onnx", threads=1)


def _replay_invalid_utf8_metadata(tmp_path: Path, fixture: Callable[[str], Any]) -> Any:
    """A valid one-node graph whose adaret.form is a lone surrogate's bytes (not UTF-8)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    put(tmp_path / "model.onnx", _with_props(model.SerializeToString(), {"adaret.form": "\ud800"}))
    return load(tmp_path / "model.onnx", threads=1)


def _replay_sidecar(tmp_path: Path, fixture: Callable[[str], Any]) -> Any:
    data = copy.deepcopy(SIDECAR)
    data["profiles"][0]["inputs"]["input_ids"]["min"][0] = float("inf")
    put(tmp_path / "model.plan.json", dump(data).encode())  # "Infinity", which Python's json reads
    return load_sidecar(tmp_path / "model.plan")


def _replay_manifest_symlink(tmp_path: Path, fixture: Callable[[str], Any]) -> Any:
    """A listed name that is a symlink to a file outside the export directory."""
    outside = tmp_path / "outside"
    outside.mkdir()
    put(outside / "secret", b"not part of the export")
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.onnx").symlink_to(outside / "secret")
    put(export / "manifest.json", json.dumps({"format": "adaret-export-manifest",
                                              "files": {"model.onnx": {"sha256": "0" * 64}}}).encode())
    return check_manifest(export, [])


def _manifest_listing(name: str) -> str:
    return json.dumps({"format": "adaret-export-manifest", "files": {name: {"sha256": "0" * 64}}})


@dataclass(frozen=True)
class FixedCrash:
    """An input that once escaped a loader: now refused with one line that says ``says``."""

    id: str
    fuzzer: str
    says: str
    replay: Callable[[Path, Callable[[str], Any]], Any]


def _hard_concrete(**values: float) -> Callable[..., Any]:
    return _replay_checkpoint_edit(lambda config: config["retention"]["hard_concrete"].update(values))


FIXED_CRASHES: list[FixedCrash] = [
    # A varint where ONNX has a message (metadata_props, the graph) was scanned as bytes: TypeError.
    FixedCrash("explain-varint-as-message", "graph-file", "not a valid ONNX model",
               _replay_graph(_field(14, 0, b"\x01"))),
    FixedCrash("explain-varint-as-graph", "graph-file", "not a valid ONNX model", _replay_graph(_field(7, 0, b"\x01"))),
    # A varint where ONNX has a string (a node's op_type) went to bytes(n): 8 GiB for 2**33, OverflowError for 2**70.
    FixedCrash("explain-varint-as-string", "graph-file", "not a valid ONNX model",
               _replay_graph(_field(7, 2, _field(1, 2, _field(4, 0, _encode_varint(2**70)))))),
    FixedCrash("explain-overlong-varint", "graph-file", "not a valid ONNX model",
               _replay_graph(_field(1, 0, b"\xff" * 20 + b"\x01"))),
    # Path.is_file raised OSError ENAMETOOLONG for a listed name over 255 bytes.
    FixedCrash("manifest-long-name", "manifest", "cannot be looked up", _replay_manifest(_manifest_listing("x" * 300))),
    FixedCrash("manifest-surrogate-name", "manifest", "cannot be looked up",
               _replay_manifest(_manifest_listing("\ud800"))),
    FixedCrash("manifest-absolute-name", "manifest", "not a file name inside",
               _replay_manifest(_manifest_listing("/etc/hostname"))),
    FixedCrash("manifest-parent-name", "manifest", "not a file name inside",
               _replay_manifest(_manifest_listing("../manifest.json"))),
    FixedCrash("manifest-symlink-outside", "manifest", "resolves outside", _replay_manifest_symlink),
    # A lone surrogate could not be encoded for the split hash (UnicodeEncodeError).
    FixedCrash("jsonl-surrogate", "jsonl", "line 1: the 'text' value holds a lone surrogate",
               _replay_data("data.jsonl", '{"text": "\\ud800", "label": "a"}\n{"text": "b", "label": "b"}\n')),
    FixedCrash("jsonl-surrogate-label", "jsonl", "line 2: the 'label' value holds a lone surrogate",
               _replay_data("data.jsonl", '{"text": "a", "label": "a"}\n{"text": "b", "label": "\\udfff"}\n')),
    # Tokenizer.token_to_id raised UnicodeEncodeError for a pad_token that is a lone surrogate.
    FixedCrash("tokenizer-config-surrogate", "tokenizer-dir", "pad_token holds a lone surrogate",
               _replay_tokenizer("tokenizer_config.json", '{"pad_token": "\\ud800"}')),
    # Out of the gate's domain: math.log of a non-positive number (gamma >= 0), ZeroDivisionError (zeta 0).
    FixedCrash("checkpoint-hard-concrete-gamma", "checkpoint", "retention.hard_concrete.gamma must be < 0",
               _hard_concrete(gamma=0.1)),
    FixedCrash("checkpoint-hard-concrete-zeta", "checkpoint", "retention.hard_concrete.zeta must be > 1",
               _hard_concrete(zeta=0)),
    FixedCrash("checkpoint-hard-concrete-beta", "checkpoint", "retention.hard_concrete.beta must be > 0",
               _hard_concrete(beta=0)),
    FixedCrash("checkpoint-hard-concrete-eps", "checkpoint", "retention.hard_concrete.eps must be in (0, 0.5)",
               _hard_concrete(eps=0.5)),
    # ONNX Runtime's binding raised UnicodeDecodeError for a message quoting, or metadata holding, non-UTF-8 bytes.
    FixedCrash("ort-invalid-utf8", "load-model", "names or metadata are not UTF-8", _replay_invalid_utf8_name),
    FixedCrash("ort-metadata-invalid-utf8", "load-metadata", "names or metadata are not UTF-8",
               _replay_invalid_utf8_metadata),
    # Fixed before these replays were kept: JSON past the recursion or the int digit limits, absurd numbers.
    FixedCrash("manifest-deep-json", "manifest", "nested too deeply", _replay_manifest(DEEP_JSON)),
    FixedCrash("manifest-long-number", "manifest", "a number too long",
               _replay_manifest('{"format": ' + LONG_NUMBER + "}")),
    FixedCrash("jsonl-deep-json", "jsonl", "line 1 is nested too deeply", _replay_data("data.jsonl", DEEP_JSON + "\n")),
    FixedCrash("tokenizer-config-long-number", "tokenizer-dir", "a number too long",
               _replay_tokenizer("tokenizer_config.json", '{"model_max_length": ' + LONG_NUMBER + "}")),
    FixedCrash("checkpoint-deep-json", "checkpoint", "nested too deeply", _replay_checkpoint(DEEP_JSON)),
    FixedCrash("max-positions-huge", "load-metadata", "beyond any encoder's positions", _replay_max_positions),
    FixedCrash("sidecar-infinity", "sidecar-file", "malformed optimization profile", _replay_sidecar),
]


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in FIXED_CRASHES])
def test_a_fixed_crash_is_refused_with_one_line(case, tmp_path, request, capfd):
    """Under the fuzzers' oracle (one line, time and memory limits), and refused rather than loaded, with nothing
    printed besides (ONNX Runtime's session fallback used to print "EP Error ... Falling back" to stdout)."""
    messages: list[str] = []

    def call() -> Any:
        try:
            return case.replay(tmp_path, request.getfixturevalue)
        except AdaretError as exc:
            messages.append(str(exc))
            raise

    expect_clean(case.fuzzer, call, tolerate_known=False)
    assert messages, f"{case.id}: loaded instead of being refused"
    assert case.says in messages[0], messages[0]
    assert "EP Error" not in capfd.readouterr().out


# --- known bugs (in loaders outside this files) ----------------------------------------------------------
# None open. A new one gets an entry here, with its replay, until its loader is fixed.
KNOWN_BUGS: list[KnownBug] = []


@pytest.mark.parametrize("bug", [
    pytest.param(bug, id=bug.id, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=bug.reason))
    for bug in KNOWN_BUGS])
def test_known_bug(bug, tmp_path, request):
    """Fails (xfail) while the bug is there; passes, failing the strict xfail, once it is fixed: then delete its
    KNOWN_BUGS entry, and the fuzzers guard against it again."""
    try:
        expect_clean(bug.fuzzers[0], lambda: bug.replay(tmp_path, request.getfixturevalue), tolerate_known=False)
    except AssertionError as exc:
        if exc.__cause__ is None or not bug.matches(bug.fuzzers[0], exc.__cause__):
            raise RuntimeError(f"the replay of {bug.id} failed otherwise: {exc}") from exc
        raise


def test_the_default_run_fuzzes_ten_thousand_inputs(request):
    """The issue's floor; counted from the runs when every default fuzzer ran in this session."""
    assert sum(EXAMPLES.values()) >= 10_000
    if set(RUNS) < set(EXAMPLES):
        pytest.skip("not every fuzzer ran in this session")
    assert sum(RUNS.values()) >= 10_000, dict(RUNS)
