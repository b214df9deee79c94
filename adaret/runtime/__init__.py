"""The edge runtime: one Session over ONNX Runtime graphs and TensorRT plans, with the artifact's tokenizer.

It imports neither torch nor transformers: a deployment installs ``adaret[runtime]`` (numpy, onnxruntime,
tokenizers), plus tensorrt for ``.plan`` files.

    session = adaret.runtime.load("out/export-b0.4")     # or .../model.onnx, or a .plan
    for prediction in session.classify(["some text", "another"]):
        print(prediction.label, prediction.scores)

    qa = adaret.runtime.load("out/qa-export-b0.4")           # a question-answering export
    best = qa.answer("Who wrote it?", context)[0]            # Span: text, score, start_char, end_char

    summarizer = adaret.runtime.load("out/summarization-b0.4")  # a summarization export: a Summarizer
    print(summarizer.summarize([long_text], num_beams=4)[0])

Attributes load lazily, so that ``adaret.runtime.cli`` (imported whenever the ``adaret`` parser is built)
does not import onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaret.core.lazy import by_module, lazy_attributes

if TYPE_CHECKING:  # for type checkers and editors; at run time the names resolve in __getattr__
    from adaret.core.qa_windows import Span
    from adaret.runtime.session import Prediction, Session, load
    from adaret.runtime.summarize import Hypothesis, Summarizer
    from adaret.runtime.text import TruncationWarning

_EXPORTS = by_module({
    "adaret.runtime.session": ("load", "Session", "Prediction"),
    "adaret.runtime.summarize": ("Summarizer", "Hypothesis"),
    "adaret.runtime.text": ("TruncationWarning",),
    "adaret.core.qa_windows": ("Span",),
})

__all__ = ["Hypothesis", "Prediction", "Session", "Span", "Summarizer", "TruncationWarning", "load"]

__getattr__ = lazy_attributes(__name__, _EXPORTS)
