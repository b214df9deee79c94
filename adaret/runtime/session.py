"""``adaret.runtime.load(path) -> Session``: one interface over ONNX Runtime graphs and TensorRT plans."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaret.core.dummy_inputs import Vocabulary
from adaret.core.errors import AdaretError
from adaret.core.io_spec import ATTENTION_MASK, CLASSIFICATION, INPUT_IDS, INPUT_NAMES, LOGITS
from adaret.core.metadata import ExportMetadata
from adaret.core.outputs import check_manifest
from adaret.core.padding import PAD_MULTIPLE, PlannedBatch, bucket_widths, padded_batches, smallest_width
from adaret.core.qa_windows import Span
from adaret.core.seq2seq_graphs import is_summarization_export
from adaret.runtime import qa
from adaret.runtime.limits import DEFAULT_MAX_CHARS, check_max_chars, check_positive, check_texts
from adaret.runtime.runners import OrtRunner, Runner, SessionFromOnnx, TrtRunner
from adaret.runtime.text import DEFAULT_MAX_LENGTH, Encoded, TextEncoder

if TYPE_CHECKING:
    from adaret.runtime.summarize import Summarizer

STATIC_GRAPH = re.compile(r"model_seq(\d+)(?:\.opt)?\.onnx")


@dataclass(frozen=True)
class Prediction:
    """One text's result: the top label, and a probability per label (in ``label_names`` order)."""

    label: str
    index: int
    probabilities: np.ndarray
    label_names: tuple[str, ...]
    truncated: bool = False

    @property
    def scores(self) -> dict[str, float]:
        return {name: float(p) for name, p in zip(self.label_names, self.probabilities, strict=True)}


class Session:
    """Runs an exported model: ``run`` on token arrays, ``classify`` on texts, ``answer`` on questions.

    ``runners`` maps a static graph's bucket length to its runner, or ``None`` to the one dynamic runner.
    ``max_chars`` caps the characters of each text, checked before tokenising (``adaret.runtime.limits``).
    """

    def __init__(self, runners: Mapping[int | None, Runner], encoder: TextEncoder | None = None, *,
                 max_length: int | None = None, pad_multiple: int = PAD_MULTIPLE, source: Path | None = None,
                 max_chars: int = DEFAULT_MAX_CHARS):
        if not runners:
            raise AdaretError("a session needs at least one model")
        self.runners = dict(runners)
        self.encoder = encoder
        self.source = source
        first = next(iter(self.runners.values()))
        self.input_specs = first.input_specs
        self.output_names = first.output_names
        self.metadata: ExportMetadata = first.metadata
        self.static_lengths = sorted(k for k in self.runners if k is not None)
        self.max_length = self._max_length(max_length)
        self.widths = bucket_widths(self.max_length, self.static_lengths, pad_multiple)
        self.max_chars = check_max_chars(max_chars)
        self._id_limit: int | None = None
        for runner in self.runners.values():  # a width the graph fixes is checked now, any other on each run
            width = (getattr(runner, "output_shapes", {}).get(LOGITS) or (None,))[-1]
            if width is not None:
                self._check_label_count(width)

    def _check_label_count(self, width: int) -> None:
        """``label_names`` must name every logit: the metadata is typed, but only the graph knows its width."""
        count = len(self.metadata.label_names)
        if count and count != width:
            raise AdaretError(f"the graph's metadata lists {count} label_names but its logits output has {width} "
                              f"columns; re-export the model, or fix adaret.label_names")

    def _max_length(self, requested: int | None) -> int:
        """The longest input: the largest static bucket, else the graph's recorded positions, else the tokenizer's
        limit; a ``requested`` length may only lower it."""
        if self.static_lengths:
            limit = max(self.static_lengths)
        else:
            recorded = self.metadata.max_positions or (self.encoder.model_max_length if self.encoder else None)
            limit = int(recorded or DEFAULT_MAX_LENGTH)
        return min(requested, limit) if requested else limit

    @property
    def input_names(self) -> list[str]:
        return list(self.input_specs)

    @property
    def label_names(self) -> list[str]:
        return list(self.metadata.label_names)

    @property
    def budget(self) -> float | None:
        return self.metadata.budget

    @property
    def vocabulary(self) -> Vocabulary:
        """Size and special ids: recorded by the export, else read from the tokenizer beside the graph."""
        if self.metadata.vocabulary:
            return Vocabulary.from_dict(self.metadata.vocabulary)
        if self.encoder is None:
            raise AdaretError("the graph records no vocabulary and no tokenizer.json lies beside it")
        return Vocabulary.from_tokenizer(self.encoder.tokenizer)

    def _vocabulary_size(self) -> int | None:
        """Ids must be below this: ``vocabulary.size`` (None: no vocabulary known, and ONNX Runtime's Gather is the
        only check). Only the size is needed, so a tokenizer without [CLS]/[SEP] still serves."""
        if self._id_limit is None:
            if self.metadata.vocabulary:
                self._id_limit = self.vocabulary.size
            elif self.encoder is not None:
                self._id_limit = int(self.encoder.tokenizer.get_vocab_size())
        return self._id_limit

    @property
    def device_memory_bytes(self) -> list[int] | None:
        """A TensorRT plan's activation memory per profile (from its sidecar); None for ONNX graphs."""
        return getattr(next(iter(self.runners.values())), "device_memory_bytes", None)

    @property
    def providers(self) -> list[str]:
        return list(getattr(next(iter(self.runners.values())), "providers", []))

    # --- arrays ------------------------------------------------------------------------------------

    def run(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> dict[str, np.ndarray]:
        """Run one batch; arrays are [batch, sequence] integers. A static model's input is padded to its bucket.

        Ids must lie in the vocabulary (``Session.vocabulary``), the mask must hold only 0 and 1, and every row
        needs at least one real token (a row masked out entirely has nothing to pool: its logits would be NaN).
        """
        feeds = self._checked_feeds({"input_ids": input_ids, "attention_mask": attention_mask,
                                     "token_type_ids": token_type_ids})
        width = feeds["input_ids"].shape[1]
        key, target = self._bucket_for(width)
        if target > width:
            feeds = _pad_right(feeds, target, self.encoder.pad_id if self.encoder else 0)
        outputs = self.runners[key].infer(feeds)
        if LOGITS in outputs:
            self._check_label_count(int(np.shape(outputs[LOGITS])[-1]))
        return outputs

    def _checked_feeds(self, given: dict[str, Any]) -> dict[str, np.ndarray]:
        if given["input_ids"] is None:
            raise AdaretError("run() needs input_ids")
        ids = _as_tokens("input_ids", given["input_ids"])
        defaults = {"attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        feeds = {}
        for name in INPUT_NAMES:
            value = given[name]
            if name not in self.input_specs:
                if value is not None and name == "token_type_ids" and np.any(value):
                    raise AdaretError("this model takes no token_type_ids")
                continue
            array = ids if name == "input_ids" else (defaults[name] if value is None else _as_tokens(name, value))
            if array.shape != ids.shape:
                raise AdaretError(f"{name} has shape {array.shape} but input_ids has shape {ids.shape}")
            feeds[name] = array
        self._check_shape(ids.shape)
        self._check_values(feeds)  # before the cast: an int64 cast would wrap a uint64 id past 2**63
        return {name: array.astype(self.input_specs[name].dtype, copy=False) for name, array in feeds.items()}

    def _check_values(self, feeds: dict[str, np.ndarray]) -> None:
        ids = feeds[INPUT_IDS]
        size = self._vocabulary_size()
        bad = (ids < 0) if size is None else ((ids < 0) | (ids >= size))
        if bad.any():
            where = _first(bad)
            allowed = "non-negative" if size is None else f"in [0, {size})"
            raise AdaretError(f"input_ids holds {ids[where]} at {list(where)}: ids must be {allowed}, the model's "
                              f"vocabulary{'' if size is None else f' of {size} tokens'}")
        mask = feeds.get(ATTENTION_MASK)
        if mask is None:
            return
        bad = (mask != 0) & (mask != 1)
        if bad.any():
            where = _first(bad)
            raise AdaretError(f"attention_mask must hold only 0 and 1, got {mask[where]} at {list(where)}")
        empty = ~mask.any(axis=1)
        if empty.any():
            raise AdaretError(f"attention_mask row {int(np.argmax(empty))} has no real token (all 0): every row "
                              "needs at least one 1, or its logits are undefined")

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        batch, width = shape
        if batch < 1 or width < 1:
            raise AdaretError(f"input_ids has an empty dimension: shape {shape}")
        fixed_batch = self.input_specs["input_ids"].shape[0]
        if fixed_batch is not None and batch != fixed_batch:
            raise AdaretError(f"this model was exported for batch {fixed_batch}, got batch {batch}")
        if width > self.max_length:
            raise AdaretError(f"sequence length {width} exceeds the model's maximum of {self.max_length} tokens")

    def _bucket_for(self, width: int) -> tuple[int | None, int]:
        if not self.static_lengths:
            return None, width
        bucket = smallest_width(self.static_lengths, width)  # width <= max_length was checked
        return bucket, bucket

    # --- texts -------------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Token ids per text with the artifact's tokenizer; over ``max_length`` tokens is truncated with a
        ``TruncationWarning``."""
        texts = check_texts(texts, self.max_chars, "classify()")
        if self.encoder is None:
            raise AdaretError(f"no tokenizer.json next to {self.source or 'the model'}: texts need the tokenizer "
                              "that export writes beside the graph")
        return self.encoder.encode(texts, self.max_length)

    def batches(self, encoded: Encoded, batch_size: int = 8,
                max_tokens: int | None = None) -> Iterator[tuple[PlannedBatch, dict[str, np.ndarray]]]:
        """Bucketed, padded feeds: exactly what ``classify`` runs, for comparisons that must see the same inputs."""
        check_positive("batch_size", batch_size)
        pad_id = self.encoder.pad_id if self.encoder else 0
        for batch, feeds in padded_batches(encoded.ids, self.widths, batch_size, pad_id, max_tokens):
            yield batch, {name: feeds[name] for name in self.input_names if name in feeds}

    def classify(self, texts: Sequence[str], batch_size: int = 8, max_tokens: int | None = None) -> list[Prediction]:
        """Labels and probabilities for each text, in input order. A run holds at most ``batch_size`` texts and,
        where ``max_tokens`` is given, at most that many padded tokens (but always one text). Each text is padded
        to its own bucket, so neither setting changes an answer."""
        predictions: list[Prediction | None] = [None] * len(texts)
        for indices, found in self.classify_runs(texts, batch_size, max_tokens):
            for index, prediction in zip(indices, found, strict=True):
                predictions[index] = prediction
        return predictions  # type: ignore[return-value]  # every position is filled by exactly one run

    def classify_runs(self, texts: Sequence[str], batch_size: int = 8,
                      max_tokens: int | None = None) -> Iterator[tuple[list[int], list[Prediction]]]:
        """``classify``, one model run at a time: the positions of the run's texts in ``texts`` and their
        predictions, as soon as the run is done (shortest bucket first). A server answers early requests with it
        while later ones still run."""
        qa.check_task(self, CLASSIFICATION.task, "classify()")
        check_positive("batch_size", batch_size)
        encoded = self.encode(texts)
        for batch, feeds in self.batches(encoded, batch_size, max_tokens):
            out = self.run(**feeds)["logits"]
            yield batch.indices, [self._prediction(out[row], encoded.truncated[index])
                                  for row, index in enumerate(batch.indices)]

    def answer(self, question: str, context: str, top_k: int = 1) -> list[Span]:
        """A question-answering export's ``top_k`` best answers in ``context``, best first: each a ``Span`` with
        the answer text, its score (start + end logit) and its characters ``context[start_char:end_char]``. A
        context longer than one window is read in overlapping windows (the export's ``question_answering``
        settings)."""
        return qa.answer_one(self, question, context, top_k=top_k)

    def answer_batch(self, questions: Sequence[str], contexts: Sequence[str], top_k: int = 1,
                     batch_size: int = 8, max_tokens: int | None = None) -> list[list[Span]]:
        """``answer`` for each (question, context) pair, in input order; ``batch_size`` counts windows, and
        ``max_tokens`` (if given) caps the padded tokens of one run."""
        return qa.answer_batch(self, questions, contexts, top_k=top_k, batch_size=batch_size, max_tokens=max_tokens)

    def _prediction(self, logits: np.ndarray, truncated: bool) -> Prediction:
        shifted = np.exp(logits.astype(np.float64) - logits.max())
        probabilities = (shifted / shifted.sum()).astype(np.float32)
        names = tuple(self.label_names or (f"LABEL_{i}" for i in range(len(logits))))
        index = int(np.argmax(probabilities))
        return Prediction(names[index], index, probabilities, names, truncated)


def _as_tokens(name: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError:  # numpy refuses a list of rows of different lengths
        raise AdaretError(f"{name} is ragged: every row must have the same length (pad the shorter ones and mask "
                          "the padding out with attention_mask)") from None
    if not np.issubdtype(array.dtype, np.integer):
        raise AdaretError(f"{name} must be an integer array (int64), got dtype {array.dtype}")
    if array.ndim != 2:
        raise AdaretError(f"{name} must have rank 2 [batch, sequence], got shape {array.shape}")
    return array


def _pad_right(feeds: dict[str, np.ndarray], width: int, pad_id: int) -> dict[str, np.ndarray]:
    extra = width - feeds["input_ids"].shape[1]
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0}
    return {name: np.pad(array, ((0, 0), (0, extra)), constant_values=fill[name]) for name, array in feeds.items()}


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def load(path: str | Path, *, memory: str | None = None, threads: int | None = None,
         providers: list[str] | None = None, max_length: int | None = None,
         pad_multiple: int = PAD_MULTIPLE, max_chars: int = DEFAULT_MAX_CHARS) -> Session | Summarizer:
    """Open an exported model: a ``.onnx`` graph (ONNX Runtime), a ``.plan`` (TensorRT), or an export directory
    (its dynamic graph, else all of its ``model_seq<N>`` buckets; the optimised ``.opt.onnx`` of each where
    export wrote one). The tokenizer next to it is used for ``classify``. A directory whose ``manifest.json``
    (written by export) does not match its files, or does not list the graph picked, is refused.

    A summarization export directory (one with ``summarization.json``) opens as an
    ``adaret.runtime.summarize.Summarizer`` instead, whose ``summarize(texts)`` runs its three graphs (``memory``,
    ``threads``, ``providers`` and ``max_chars`` apply to it; ``max_length`` and ``pad_multiple`` do not: it cuts
    documents into the chunks it was trained on).

    ``memory`` picks the CPU allocator (see ``adaret.runtime.options.MEMORY_MODES``; default: arena off),
    ``threads`` the intra-op threads, ``providers`` overrides the execution providers, ``max_length`` caps the
    tokens per text (default: the model's bucket, ``max_positions`` metadata, or the tokenizer's limit),
    ``max_chars`` the characters per text, refused before tokenising (default ``DEFAULT_MAX_CHARS``, 1,000,000).
    A graph whose ``label_names`` do not match its logits width is refused.
    """
    check_max_chars(max_chars)
    path = Path(path)
    if path.is_dir() and is_summarization_export(path):
        from adaret.runtime.summarize import Summarizer

        return Summarizer(path, memory=memory, threads=threads, providers=providers, max_chars=max_chars)
    files = model_files(path)
    runners: dict[int | None, Runner] = {}
    for file in files:
        if file.suffix == ".plan":
            runner: Runner = TrtRunner(file)
        else:
            runner = OrtRunner(SessionFromOnnx(file, memory=memory, threads=threads, providers=providers))
        runners[_static_length(runner)] = runner
    if None in runners and len(runners) > 1:
        raise AdaretError(f"{path}: mixes a dynamic graph with static ones; load one form")
    directory = path if path.is_dir() else path.parent
    encoder = TextEncoder.from_dir(directory) if (directory / "tokenizer.json").is_file() else None
    return Session(runners, encoder, max_length=max_length, pad_multiple=pad_multiple, source=path,
                   max_chars=max_chars)


def model_files(path: Path) -> list[Path]:
    """The files ``load(path)`` runs, in its order: an export directory's graphs (manifest checked), or the one
    ``.onnx``/``.plan`` given."""
    if path.is_dir():
        graphs = _graphs_in(path)
        # An export directory is one set: a graph or tokenizer left by another (or an interrupted) export must not
        # be served next to this one's. Without a manifest (older exports, hand-made directories) nothing is checked.
        check_manifest(path, graphs)
        return graphs
    if not path.exists():
        raise AdaretError(f"model file {path} does not exist")
    if path.suffix not in (".onnx", ".plan"):
        raise AdaretError(f"{path.name}: expected a .onnx graph or a .plan TensorRT engine")
    return [path]


def _graphs_in(directory: Path) -> list[Path]:
    """An export directory's graphs, preferring the graph-pass output (``*.opt.onnx``) of each: it is the one
    export optimised for deployment and checked against the plain graph."""
    def best(stem: str) -> Path | None:
        return next((p for p in (directory / f"{stem}.opt.onnx", directory / f"{stem}.onnx") if p.is_file()), None)

    dynamic = best("model")
    if dynamic is not None:
        return [dynamic]
    lengths = sorted({int(m[1]) for p in directory.glob("model_seq*.onnx") if (m := STATIC_GRAPH.fullmatch(p.name))})
    if not lengths:
        if is_summarization_export(directory):
            raise AdaretError(f"{directory} is a summarization export (encoder_model.onnx, decoder_model.onnx, "
                              "decoder_with_past_model.onnx): open it with adaret.runtime.load, or adaret summarize")
        raise AdaretError(f"{directory} holds no model.onnx or model_seq<N>.onnx")
    return [p for n in lengths if (p := best(f"model_seq{n}")) is not None]


def _static_length(runner: Runner) -> int | None:
    """A static graph's bucket length (from its metadata, else its input shape); None for a dynamic graph."""
    return runner.metadata.seq_len
