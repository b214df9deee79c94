"""``adaret classify MODEL TEXT...``: the runtime from the command line (torch-free, like the runtime)."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify texts with an exported model (ONNX Runtime or TensorRT)",
                       description="Load an exported model (model.onnx, an export directory, or a .plan) with "
                                   "adaret.runtime and print the label and probabilities of each text. Texts "
                                   "longer than the model's maximum length are truncated, with a warning.")
    p.add_argument("model", help="exported .onnx graph, export directory, or TensorRT .plan")
    p.add_argument("texts", nargs="*", help="texts to classify (or use --file)")
    p.add_argument("--file", default=None, help="read one text per line from this file ('-' for stdin)")
    p.add_argument("--batch-size", type=int, default=8, help="texts per batch (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object per text")
    p.set_defaults(run=_run_classify)


def _read_texts(args: argparse.Namespace) -> list[str]:
    from adaret.errors import AdaretError

    texts = list(args.texts)
    if args.file:
        try:
            handle = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise AdaretError(f"cannot read {args.file}: {exc.strerror}") from None
        with handle:
            texts += [line.rstrip("\n") for line in handle if line.strip()]
    return texts


def _run_classify(args: argparse.Namespace) -> int:
    from adaret.runtime import load

    session = load(args.model)
    for text, prediction in zip(texts := _read_texts(args), session.classify(texts, args.batch_size), strict=True):
        if args.json:
            print(json.dumps({"text": text, "label": prediction.label, "scores": prediction.scores,
                              "truncated": prediction.truncated}))
        else:
            print(f"{prediction.label}\t{prediction.probabilities[prediction.index]:.3f}\t{text[:60]}")
    return 0
