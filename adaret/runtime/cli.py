"""``adaret classify MODEL TEXT...`` and ``adaret explain MODEL TEXT``: the runtime from the command line
(torch-free, like the runtime)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
    _register_explain(sub)


def _register_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="show which tokens each layer of an exported model kept for a text",
                       description="Run a text through an exported graph and show, layer by layer, which of its "
                                   "tokens that layer processed, read from the graph's own TopK choices (its "
                                   "kept_positions outputs when exported --with-positions). The text is padded as "
                                   "classify pads it, since the kept counts follow the padded length; a text "
                                   "longer than the model's maximum is truncated, with a note. Prints one line "
                                   "per layer (or JSON with --json).")
    p.add_argument("model", help="export directory (its model.onnx, or the smallest model_seq<N>.onnx bucket that "
                                 "holds the text) or an unoptimised .onnx graph; optimised *.opt.onnx graphs no "
                                 "longer hold the structure this reads")
    p.add_argument("text", help="the text to explain")
    p.add_argument("--html", metavar="PATH", default=None,
                   help="also write a self-contained HTML page: the text shaded by how many layers kept each "
                        "token, and a token-by-layer table")
    p.add_argument("--png", metavar="PATH", default=None,
                   help="also write the token-by-layer map as a PNG image (needs matplotlib)")
    p.add_argument("--json", action="store_true",
                   help="print the tokens and the kept positions of each layer as JSON instead of the text view")
    p.set_defaults(run=_run_explain)


def _read_texts(args: argparse.Namespace) -> list[str]:
    from adaret.core.errors import AdaretError

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


def _run_explain(args: argparse.Namespace) -> int:
    from adaret.runtime.explain import Explainer, render_text, write_html, write_png

    explanation = Explainer(args.model).explain(args.text)
    written = []
    if args.html:
        written.append(write_html([explanation], Path(args.html)))
    if args.png:
        written.append(write_png(explanation, Path(args.png)))
    print(json.dumps(explanation.as_dict()) if args.json else render_text(explanation))
    for path in written:  # on stderr, so that --json output stays parseable
        print(f"wrote {path}", file=sys.stderr)
    return 0
