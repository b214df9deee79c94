"""``adaret classify MODEL TEXT...``, ``adaret answer MODEL QUESTION --context-file F``, ``adaret summarize EXPORT
(TEXT | --file F)`` and ``adaret explain MODEL TEXT``: the runtime from the command line (torch-free, like the
runtime)."""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import json
import os
import sys
from pathlib import Path

from adaret.core.cli_args import add_command, positive_int
from adaret.core.errors import AdaretError
from adaret.runtime.limits import DEFAULT_MAX_CHARS, check_text

MAX_CHARS_HELP = "refuse a text of more characters than this, before tokenising it (default: %(default)s)"
CLASSIFY_DESCRIPTION = """Load an exported model (model.onnx, an export directory, or a .plan) with adaret.runtime
and print the label and probabilities of each text. Texts longer than the model's maximum length are truncated, with
a warning."""
ANSWER_DESCRIPTION = """Load a question-answering export with adaret.runtime and print the best answer span(s) of
the context file for the question: the text, its score (start + end logit) and its character span in the file. A
context longer than one model window is read in overlapping windows."""
SUMMARIZE_DESCRIPTION = """Load a summarization export directory (encoder_model.onnx, decoder_model.onnx,
decoder_with_past_model.onnx and summarization.json, as adaret export --task summarization writes it) with
adaret.runtime and print a summary of one document: the text given, or the whole of --file. The document is cut
into the chunks the model was trained on (tokens past the trained maximum are not read); the summary is greedy, or
beam search with --num-beams."""
EXPLAIN_DESCRIPTION = """Run a text through an exported graph and show, layer by layer, which of its tokens that
layer processed, read from the graph's own TopK choices (its kept_positions outputs when exported --with-positions).
The text is padded as classify pads it, since the kept counts follow the padded length; a text longer than the
model's maximum is truncated, with a note. Prints one line per layer (or JSON with --json)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "classify", "classify texts with an exported model (ONNX Runtime or TensorRT)",
                    CLASSIFY_DESCRIPTION)
    p.add_argument("model", help="exported .onnx graph, export directory, or TensorRT .plan")
    p.add_argument("texts", nargs="*", default=[],
                   help="texts to classify (or use --file); options may come before, between or after them, "
                        "and -- ends the options")
    p.add_argument("--file", default=None, help="read one text per line from this UTF-8 file ('-' for stdin)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="texts per batch (default: %(default)s)")
    _add_text_output_flags(p, "print one JSON object per text")
    p.set_defaults(run=_run_classify)
    _parse_intermixed(p)
    _register_answer(sub)
    _register_summarize(sub)
    _register_explain(sub)


def _parse_intermixed(parser: argparse.ArgumentParser) -> None:
    """Let texts and options come in any order (``classify MODEL --json one two --batch-size 2 three``).

    The top-level parser hands a subcommand's arguments to its ``parse_known_args``, which matches the positionals
    in one run: ``MODEL`` alone fills ``model`` and an empty ``texts``, so a text after an option is left over and
    refused. ``parse_known_intermixed_args`` parses the options first and then every positional; it calls
    ``parse_known_args`` itself, which must then be the plain one.
    """
    plain = parser.parse_known_args

    def intermixed(args=None, namespace=None):
        parser.parse_known_args = plain  # type: ignore[method-assign]
        try:
            return parser.parse_known_intermixed_args(args, namespace)
        finally:
            parser.parse_known_args = intermixed  # type: ignore[method-assign]

    parser.parse_known_args = intermixed  # type: ignore[method-assign]


def _register_answer(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "answer", "answer a question from a context with an exported question-answering model",
                    ANSWER_DESCRIPTION)
    p.add_argument("model", help="exported question-answering .onnx graph or export directory")
    p.add_argument("question", help="the question")
    p.add_argument("--context-file", required=True, metavar="FILE",
                   help="UTF-8 file holding the context to search ('-' for stdin)")
    p.add_argument("--top-k", type=positive_int, default=1, help="how many answers to print (default: %(default)s)")
    _add_text_output_flags(p, "print one JSON object with the question and its answers")
    p.set_defaults(run=_run_answer)


def _register_summarize(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "summarize", "summarize a document with an exported summarization model",
                    SUMMARIZE_DESCRIPTION)
    p.add_argument("model", metavar="EXPORT", help="summarization export directory")
    p.add_argument("text", nargs="?", default=None, help="the document to summarize (or use --file)")
    p.add_argument("--file", default=None, metavar="FILE",
                   help="UTF-8 file holding the document, read whole ('-' for stdin)")
    p.add_argument("--max-new-tokens", type=positive_int, default=None, metavar="N",
                   help="most summary tokens to generate (default: what the model was trained on, from the export)")
    p.add_argument("--num-beams", type=positive_int, default=1, metavar="K",
                   help="beam search with K beams, length-normalised (default: %(default)s, greedy)")
    _add_text_output_flags(p, "print one JSON object with the summary and its score")
    p.set_defaults(run=_run_summarize)


def _register_explain(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "explain", "show which tokens each layer of an exported model kept for a text",
                    EXPLAIN_DESCRIPTION)
    p.add_argument("model", help="export directory (its model.onnx, or the smallest model_seq<N>.onnx bucket that "
                                 "holds the text) or an unoptimised .onnx graph; optimised *.opt.onnx graphs no "
                                 "longer hold the structure this reads")
    p.add_argument("text", help="the text to explain")
    p.add_argument("--html", metavar="PATH", default=None,
                   help="also write a self-contained HTML page: the text shaded by how many layers kept each "
                        "token, and a token-by-layer table")
    p.add_argument("--png", metavar="PATH", default=None,
                   help="also write the token-by-layer map as a PNG image (needs matplotlib)")
    _add_text_output_flags(p, "print the tokens and the kept positions of each layer as JSON instead of the text "
                              "view")
    p.set_defaults(run=_run_explain)


def _add_text_output_flags(p: argparse.ArgumentParser, json_help: str) -> None:
    """The flags every text command shares: the text-length limit, and JSON output described by ``json_help``."""
    p.add_argument("--max-chars", type=positive_int, default=DEFAULT_MAX_CHARS, help=MAX_CHARS_HELP)
    p.add_argument("--json", action="store_true", help=json_help)


def _read_texts(args: argparse.Namespace) -> list[str]:
    """The command line's texts, then the file's non-blank lines; each checked (``adaret.runtime.limits``) and
    named by where it came from."""
    texts = [check_text(_argv_text(text, name := f"text {n} on the command line"), args.max_chars, name)
             for n, text in enumerate(args.texts, start=1)]
    if args.file:
        texts += _file_texts(args.file, args.max_chars)
    return texts


def _argv_text(text: str, name: str) -> str:
    """A command-line text as the shell's bytes meant it, as UTF-8.

    Python decodes argv with the locale's encoding and ``surrogateescape``: bytes it cannot decode arrive as lone
    surrogates, which no tokenizer takes. Their bytes are recovered and decoded as UTF-8, or refused.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a surrogate that no undecodable byte made: check_text names it
        return text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AdaretError(f"{name} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}); pass "
                          "UTF-8 text, or a UTF-8 file with --file") from None


def _file_texts(file: str, max_chars: int) -> list[str]:
    """One text per non-blank line of ``file`` ('-': stdin), read as UTF-8 whatever the locale."""
    source, data = _read_bytes(file)
    texts = []
    for number, raw in enumerate(data.splitlines(), start=1):
        name = f"line {number} of {source}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AdaretError(f"{name} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}); "
                              "save the file as UTF-8") from None
        if line.strip():
            texts.append(check_text(line, max_chars, name))
    return texts


def _read_bytes(file: str) -> tuple[str, bytes]:
    """How to name ``file`` ('-': stdin) in messages, and its bytes without a UTF-8 byte-order mark."""
    source = "stdin" if file == "-" else file
    try:
        if file == "-":
            stream = getattr(sys.stdin, "buffer", None)
            data = stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
        else:
            data = Path(file).read_bytes()
    except OSError as exc:
        raise AdaretError(f"cannot read {source}: {exc.strerror}") from None
    return source, data.removeprefix(codecs.BOM_UTF8)


def _read_context(file: str, max_chars: int, needs: str = "the context file must hold the text to search") -> str:
    source, data = _read_bytes(file)
    try:
        context = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AdaretError(f"{source} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at byte {exc.start + 1}); "
                          "save the file as UTF-8") from None
    if not context.strip():
        raise AdaretError(f"{source} is empty: {needs}")
    return check_text(context, max_chars, source)


def _run_answer(args: argparse.Namespace) -> int:
    from adaret.runtime import load

    question = check_text(_argv_text(args.question, "the question"), args.max_chars, "the question")
    if not question.strip():
        raise AdaretError("the question is empty")
    context = _read_context(args.context_file, args.max_chars)  # both before the model loads
    spans = load(args.model, max_chars=args.max_chars).answer(question, context, top_k=args.top_k)
    if args.json:
        print(json.dumps({"question": question, "answers": [dataclasses.asdict(span) for span in spans]}))
        return 0
    for span in spans:  # one line per answer, whatever line breaks the context has inside the span
        print(f"{' '.join(span.text.split())}\t{span.score:.3f}\t{span.start_char}:{span.end_char}")
    return 0


def _summarize_document(args: argparse.Namespace) -> str:
    if (args.text is None) == (args.file is None):
        raise AdaretError("give the document as TEXT or with --file, not both" if args.text is not None
                          else "nothing to summarize: give the document as TEXT or with --file")
    if args.file is not None:
        document = _read_context(args.file, args.max_chars, "it must hold the document to summarize")
    else:
        document = check_text(_argv_text(args.text, "the text"), args.max_chars, "the text")
    if not document.strip():
        raise AdaretError("the text is empty")
    return document


def _run_summarize(args: argparse.Namespace) -> int:
    from adaret.runtime.summarize import Summarizer

    document = _summarize_document(args)  # before the model loads: a bad file is reported at once
    summarizer = Summarizer(args.model, max_chars=args.max_chars)
    hypothesis = summarizer.generate([document], max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)[0]
    summary = summarizer.decode(hypothesis)
    if args.json:
        print(json.dumps({"summary": summary, "score": hypothesis.score, "finished": hypothesis.finished,
                          "num_beams": args.num_beams}))
    else:
        print(summary)
    return 0


def _run_classify(args: argparse.Namespace) -> int:
    from adaret.runtime import load

    texts = _read_texts(args)  # before the model loads: a bad text is reported at once
    session = load(args.model, max_chars=args.max_chars)
    for text, prediction in zip(texts, session.classify(texts, args.batch_size), strict=True):
        if args.json:
            print(json.dumps({"text": text, "label": prediction.label, "scores": prediction.scores,
                              "truncated": prediction.truncated}))
        else:
            print(f"{prediction.label}\t{prediction.probabilities[prediction.index]:.3f}\t{text[:60]}")
    return 0


def _run_explain(args: argparse.Namespace) -> int:
    from adaret.runtime.explain import Explainer, render_text, write_html, write_png

    text = check_text(_argv_text(args.text, "the text"), args.max_chars, "the text")
    explanation = Explainer(args.model, max_chars=args.max_chars).explain(text)
    written = []
    if args.html:
        written.append(write_html([explanation], Path(args.html)))
    if args.png:
        written.append(write_png(explanation, Path(args.png)))
    print(json.dumps(explanation.as_dict()) if args.json else render_text(explanation))
    for path in written:  # on stderr, so that --json output stays parseable
        print(f"wrote {path}", file=sys.stderr)
    return 0
