"""Calibration batches over real task text, tokenised with the checkpoint's tokenizer."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader
from tqdm.auto import tqdm

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def encode_batches(texts: Sequence[str], tokenizer, *, batch_size: int, max_length: int,
                   seq_len: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """int64 feeds; padded to ``seq_len`` for a static graph, else to the longest text of each batch."""
    padding = "max_length" if seq_len else "longest"
    length = seq_len or max_length
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start:start + batch_size]), truncation=True, max_length=length,
                        padding=padding, return_tensors="np")
        ids = enc["input_ids"].astype(np.int64)
        yield {"input_ids": ids, "attention_mask": enc["attention_mask"].astype(np.int64),
               "token_type_ids": np.zeros_like(ids)}


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
