"""What both halves of calibration read: a deterministic sample of a dataset's examples (texts for classification,
SQuAD questions for question answering), and the batching a library caller asks for. Plain Python: the INT8 half
imports it too."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from adaret.core.data_files import is_table_file
from adaret.core.errors import AdaretError
from adaret.core.fileio import sha256_file
from adaret.core.io_spec import CLASSIFICATION, QUESTION_ANSWERING
from adaret.core.squad import SquadExample, read_squad, split_by_context, squad_dev_path, squad_train_path
from adaret.training.data import BUILTIN_DATASETS, TextDataset, load_splits

MIN_SAMPLES = 8  # fewer texts than this give activation ranges (and f_l) that one outlier can move
SPLITS = ("train", "eval", "all")
SQUAD = "squad"  # the official SQuAD v1.1 train (calibration) and dev (held-out) files


@dataclass(frozen=True)
class QuestionSet:
    """Calibration questions, and the files they were read from (by name and sha256: no machine paths)."""

    name: str
    examples: list[SquadExample]
    files: dict[str, str]  # file name -> sha256

    def __len__(self) -> int:
        return len(self.examples)


def default_split(data: str, task: str = CLASSIFICATION.task) -> str:
    """Built-in sets calibrate on their training split (the eval split stays held out for accuracy); a user's
    file is all calibration data."""
    builtin = data == SQUAD if task == QUESTION_ANSWERING.task else data in BUILTIN_DATASETS
    return "train" if builtin else "all"


def default_data(task: str) -> str:
    return SQUAD if task == QUESTION_ANSWERING.task else "bbc-news"


def calibration_data(task: str, data: str, *, samples: int, split: str | None = None,
                     seed: int = 0, eval_fold: int = 0) -> TextDataset | QuestionSet:
    """The calibration examples of an export of ``task``: texts for classification, questions for QA.
    ``eval_fold``: the checkpoint's ``--eval-fold`` (classification), so that "train" is its own training split."""
    if task == QUESTION_ANSWERING.task:
        return calibration_questions(data, samples=samples, split=split, seed=seed)
    if data == SQUAD:
        raise AdaretError("--data squad is question-answering data; calibrate a classification export on "
                          f"{', '.join(BUILTIN_DATASETS)} or a .csv/.tsv/.jsonl/.json file")
    return calibration_texts(data, samples=samples, split=split, seed=seed, eval_fold=eval_fold)


def calibration_texts(data: str, *, samples: int, split: str | None = None, seed: int = 0,
                      eval_fold: int = 0) -> TextDataset:
    """``samples`` texts drawn from ``split`` of ``data`` (split by ``seed`` and ``eval_fold``, as training split
    it) with ``seed``; the same arguments give the same texts."""
    _check_samples(samples)
    split = _checked_split(split or default_split(data))
    pool = _split(data, split, seed, eval_fold)
    pool = pool.subset([i for i, text in enumerate(pool.texts) if text.strip()], "nonempty")
    if len(pool) == 0:
        raise AdaretError(f"no calibration data: {data} ({split} split) has no non-empty texts")
    return pool.subset(_draw(len(pool), samples, seed, f"{data} ({split} split) has {len(pool)} texts"),
                       f"calib{samples}")


def calibration_questions(data: str, *, samples: int, split: str | None = None, seed: int = 0) -> QuestionSet:
    """``samples`` questions (with their contexts and answers) drawn from ``split`` of ``squad`` or a SQuAD-format
    JSON file with ``seed``, in file order; the same arguments give the same questions."""
    _check_samples(samples)
    split = _checked_split(split or default_split(data, QUESTION_ANSWERING.task))
    # any user's table but .json, which for question answering is SQuAD-format data
    if data in BUILTIN_DATASETS or (is_table_file(data) and Path(data).suffix.lower() != ".json"):
        raise AdaretError(f"--data {data} is classification data; calibrate a question-answering export on squad "
                          "or a SQuAD-format JSON file")
    pool, files = _question_split(data, split, seed)
    chosen = _draw(len(pool), samples, seed, f"{data} ({split} split) has {len(pool)} questions")
    return QuestionSet(data, [pool[i] for i in chosen], files)


def _question_split(data: str, split: str, seed: int) -> tuple[list[SquadExample], dict[str, str]]:
    if data == SQUAD:
        paths = {"train": [squad_train_path()], "eval": [squad_dev_path()]}.get(split)
        paths = paths or [squad_train_path(), squad_dev_path()]
        return [e for path in paths for e in read_squad(path)], {p.name: sha256_file(p) for p in paths}
    path = Path(data)
    examples = read_squad(path)
    files = {path.name: sha256_file(path)}
    if split == "all":
        return examples, files
    train, held_out = split_by_context(examples, seed)  # the rule question-answering training splits by
    return (held_out if split == "eval" else train), files


def _check_samples(samples: int) -> None:
    if samples < MIN_SAMPLES:
        raise AdaretError(f"--samples {samples} is too few for calibration; use at least {MIN_SAMPLES}")


def _checked_split(split: str) -> str:
    if split not in SPLITS:
        raise AdaretError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return split


def _draw(available: int, samples: int, seed: int, what: str) -> list[int]:
    """``samples`` of ``available`` indices, sorted; ``what`` says what the data holds when it is too little."""
    if available < samples:
        raise AdaretError(f"too few calibration samples: {what}, fewer than --samples {samples}")
    # Shuffled, not the first N: the readers group texts by label and SQuAD groups questions by article, so the
    # first N would be one class or one topic.
    return sorted(random.Random(seed).sample(range(available), samples))


def _split(data: str, split: str, seed: int, eval_fold: int = 0) -> TextDataset:
    splits = load_splits(data, seed=seed, eval_fold=eval_fold)
    splits.train.announce_notes()
    if split == "train":
        return splits.train
    if split == "eval":
        return splits.eval
    return TextDataset(data, splits.train.texts + splits.eval.texts, splits.train.labels + splits.eval.labels,
                       splits.train.label_names)


def check_batching(batch_size: int, max_length: int | None) -> None:
    """The calibration batch size and text length a library caller gives (the command line's types refuse the same
    values first)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AdaretError(f"--batch-size must be an integer >= 1, got {batch_size!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or max_length < 2):
        raise AdaretError(f"--max-length must be an integer >= 2, got {max_length!r}")
