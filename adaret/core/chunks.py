"""Long documents as encoder rows: chunks of at most ``chunk_length`` tokens, each ``[CLS] piece [SEP]``.

Training (PyTorch) and the torch-free runtime cut documents with this one function, on the ``tokenizers`` object
both hold, so that an exported summarizer sees exactly the rows it was trained on. Each chunk is encoded as its own
row with its own top-M; the decoder reads the concatenation of the chunks' retained memories.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def plain_tokenizer(tokenizer):
    """A copy of a ``tokenizers.Tokenizer`` with its truncation and padding switched off (they would cut a long
    document before it is chunked)."""
    from tokenizers import Tokenizer

    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_truncation()
    plain.no_padding()
    return plain


def chunk_ids(content: Sequence[int], *, chunk_length: int, max_source_tokens: int, cls_id: int,
              sep_id: int) -> list[list[int]]:
    """``content`` (token ids without special tokens) cut to ``max_source_tokens`` and into chunks; at least one
    chunk (an empty document is ``[CLS] [SEP]``)."""
    if chunk_length < 3:
        raise ValueError(f"chunk_length must be at least 3, got {chunk_length}")
    piece = chunk_length - 2
    content = list(content[:max_source_tokens])
    pieces = [content[start:start + piece] for start in range(0, len(content), piece)] or [[]]
    return [[cls_id, *part, sep_id] for part in pieces]


def document_chunks(tokenizer, texts: Sequence[str], *, chunk_length: int, max_source_tokens: int, cls_id: int,
                    sep_id: int) -> list[list[list[int]]]:
    """Every text's chunks; ``tokenizer`` is a ``tokenizers.Tokenizer`` (see ``plain_tokenizer``)."""
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [chunk_ids(encoding.ids, chunk_length=chunk_length, max_source_tokens=max_source_tokens, cls_id=cls_id,
                      sep_id=sep_id) for encoding in encodings]


def pad_chunks(documents: Sequence[Sequence[Sequence[int]]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` [documents, most chunks, longest chunk] (int64); a document with fewer
    chunks gets all-padding rows, which the decoder never sees (their memory mask is 0)."""
    chunks = max(len(doc) for doc in documents)
    length = max(len(chunk) for doc in documents for chunk in doc)
    ids = np.full((len(documents), chunks, length), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, doc in enumerate(documents):
        for index, chunk in enumerate(doc):
            ids[row, index, :len(chunk)] = chunk
            mask[row, index, :len(chunk)] = 1
    return ids, mask
