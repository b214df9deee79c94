"""Triton Python-backend model: UTF-8 texts -> the graph's token inputs, with the tokenizer exported beside it.

Each request's texts are encoded with special tokens, truncated to ``max_length`` and right-padded with ``pad_id``
(mask 0, token types 0): to ``width`` for a static graph, else to the next multiple of 32 of the request's longest
text (at most ``max_length``), the padding rule of ``adaret.core.padding`` that ``Session.classify`` applies per
text. A request of one text is therefore padded exactly as ``Session.classify`` pads it.

``decode_texts`` is also the rule of ``adaret.serving.backend``, which imports it from here: this module must stay
importable outside Triton, so ``triton_python_backend_utils`` is imported when the model is initialised.
"""

import json
import os

import numpy as np
from tokenizers import Tokenizer

PAD_MULTIPLE = 32


class TritonPythonModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        settings = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.max_length = int(settings["max_length"])
        self.pad_id = int(settings["pad_id"])
        self.width = int(settings["width"]) if settings.get("width") else None
        self.outputs = json.loads(settings["outputs"])
        path = os.path.join(args["model_repository"], args["model_version"], "tokenizer.json")
        self.tokenizer = Tokenizer.from_file(path)
        self.tokenizer.no_padding()  # padding is per request, below
        self.tokenizer.enable_truncation(self.max_length)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self.pb.InferenceResponse(output_tensors=self._encode(request)))
            except ValueError as exc:  # a bad request gets an error; the others in the batch are answered
                responses.append(self.pb.InferenceResponse(error=self.pb.TritonError(str(exc))))
        return responses

    def _encode(self, request):
        texts = decode_texts(self.pb.get_input_tensor_by_name(request, "text").as_numpy())
        encodings = self.tokenizer.encode_batch(texts)
        longest = max(len(e.ids) for e in encodings)
        width = self.width or min(-(-longest // PAD_MULTIPLE) * PAD_MULTIPLE, self.max_length)
        ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)] = encoding.ids
            mask[row, :len(encoding.ids)] = 1
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return [self.pb.Tensor(name, arrays[name]) for name in self.outputs]


def decode_texts(array):
    """A request's texts: UTF-8 bytes (Triton's BYTES), each with at least one non-space character; a bad one raises
    ValueError, naming its position."""
    texts = []
    for position, item in enumerate(array.reshape(-1)):
        if not isinstance(item, bytes | str):
            raise ValueError(f"text[{position}] must be a UTF-8 string, got {type(item).__name__}")
        try:
            text = item.decode("utf-8") if isinstance(item, bytes) else item
        except UnicodeDecodeError as exc:
            raise ValueError(f"text[{position}] is not valid UTF-8 (byte {exc.start})") from None
        if not text.strip():
            raise ValueError(f"text[{position}] is empty: send at least one non-space character")
        texts.append(text)
    return texts
