"""Calibration batches over real task text, tokenised with the checkpoint's tokenizer."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader
from tqdm.auto import tqdm

from adaret.core.io_spec import INPUT_NAMES
from adaret.core.padding import bucket_widths, padded_batches


def encode_planned(texts: Sequence[str], tokenizer, *, batch_size: int, max_length: int,
                   seq_len: int | None = None) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    """(indices of the texts, int64 feeds) per batch, padded exactly as the runtime pads them when it serves
    (``adaret.core.padding``): to ``seq_len`` for a static graph, else each text to its own bucket width.
    K_l follows the padded length, so calibrating or measuring agreement under any other padding would look
    at token choices the deployment never makes."""
    length = seq_len or max_length
    ids = tokenizer(list(texts), truncation=True, max_length=length)["input_ids"]
    widths = [seq_len] if seq_len else bucket_widths(max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for batch, feeds in padded_batches(ids, widths, batch_size, pad_id):
        yield batch.indices, feeds


def encode_batches(texts: Sequence[str], tokenizer, *, batch_size: int, max_length: int,
                   seq_len: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The feeds of ``encode_planned``, for uses where the order of texts does not matter (calibration)."""
    for _, feeds in encode_planned(texts, tokenizer, batch_size=batch_size, max_length=max_length, seq_len=seq_len):
        yield feeds


class TextCalibrationReader(CalibrationDataReader):
    """Feeds ORT's calibrator one tokenised batch per ``get_next``, with a progress bar over the batches."""

    def __init__(self, texts: Sequence[str], tokenizer, *, batch_size: int = 8, max_length: int = 512,
                 seq_len: int | None = None, input_names: Sequence[str] = INPUT_NAMES, progress: bool = True,
                 desc: str = "calibration batches"):
        self.texts, self.tokenizer = list(texts), tokenizer
        self.batch_size, self.max_length, self.seq_len = batch_size, max_length, seq_len
        self.input_names = tuple(input_names)
        self.progress, self.desc = progress, desc
        self.rewind()

    @property
    def num_batches(self) -> int:
        return -(-len(self.texts) // self.batch_size)

    def rewind(self) -> None:
        self._batches = encode_batches(self.texts, self.tokenizer, batch_size=self.batch_size,
                                       max_length=self.max_length, seq_len=self.seq_len)
        self._bar = tqdm(total=self.num_batches, desc=self.desc, unit="batch", leave=False,
                         disable=not self.progress)

    def get_next(self) -> dict[str, np.ndarray] | None:
        feeds = next(self._batches, None)
        if feeds is None:
            self._bar.close()
            return None
        self._bar.update(1)
        return {name: feeds[name] for name in self.input_names}

    def __len__(self) -> int:
        return self.num_batches
