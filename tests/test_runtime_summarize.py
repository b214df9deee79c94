"""The torch-free summarization runtime: ``adaret.runtime.load(export_dir).summarize(texts)`` and ``adaret summarize``.

The tiny encoder-decoder of test_export_summarization, exported once at budget 0.4; the runtime's tokens are
checked against ``RetentionSeq2Seq.generate`` on each text alone (chunked by the function training uses).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CHUNKS, SPECIAL, run_with_imports_blocked

import adaret.runtime as rt
from adaret.cli import main
from adaret.core.chunks import document_chunks, pad_chunks, plain_tokenizer
from adaret.core.errors import AdaretError
from adaret.export.seq2seq import PARITY_TEXT
from adaret.runtime.session import model_files
from adaret.runtime.summarize import Summarizer, beam_search, greedy_hypotheses
from adaret.training.seq2seq_checkpoint import Seq2SeqCheckpoint

BUDGET = 0.4
TEXTS = [
    PARITY_TEXT,  # more than two chunks of 64 tokens
    "Shares fell on the stock market.",
    "The striker scored twice in the second half and the home side won the league title on Sunday.",
    PARITY_TEXT[:400],
    "",  # an empty document is one [CLS] [SEP] row
]


@pytest.fixture(scope="module")
def export_dir(summarizer_export) -> Path:
    return summarizer_export.out_dir


@pytest.fixture(scope="module")
def summarizer(export_dir) -> Summarizer:
    loaded = rt.load(export_dir)
    assert isinstance(loaded, Summarizer)
    return loaded


@pytest.fixture(scope="module")
def reference_tokens(summarizer_checkpoint) -> list[list[int]]:
    """PyTorch greedy tokens of each text alone, before the end token."""
    checkpoint = Seq2SeqCheckpoint.from_pretrained(summarizer_checkpoint, "eager")
    schedule = checkpoint.info.keep_schedule.rescaled(BUDGET)
    plain = plain_tokenizer(checkpoint.tokenizer.backend_tokenizer)
    found = []
    for text in TEXTS:
        documents = document_chunks(plain, [text], chunk_length=CHUNKS.chunk_length,
                                    max_source_tokens=CHUNKS.max_source_tokens, cls_id=SPECIAL["start"],
                                    sep_id=SPECIAL["end"])
        ids, mask = pad_chunks(documents, SPECIAL["pad"])
        tokens = checkpoint.model.generate(torch.from_numpy(ids), torch.from_numpy(mask), start_id=SPECIAL["start"],
                                           end_id=SPECIAL["end"], max_new_tokens=CHUNKS.max_target_tokens - 1,
                                           mode="hard", schedule=schedule)[0].tolist()
        found.append(tokens[:tokens.index(SPECIAL["end"])] if SPECIAL["end"] in tokens else tokens)
    return found


def test_greedy_tokens_are_torch_generate_tokens(summarizer, reference_tokens):
    chunks = document_chunks(summarizer.tokenizer, TEXTS[:1], chunk_length=CHUNKS.chunk_length,
                             max_source_tokens=CHUNKS.max_source_tokens, cls_id=101, sep_id=102)
    assert len(chunks[0]) >= 3  # the multi-chunk case is there
    lengths = {len(tokens) for tokens in reference_tokens}
    assert len(lengths) > 1 and max(lengths) == CHUNKS.max_target_tokens - 1  # some end early, some run out
    together = summarizer.generate(TEXTS)  # one batch: a document's summary does not depend on its neighbours
    assert [h.tokens for h in together] == reference_tokens
    one_by_one = [summarizer.generate([text], batch_size=1)[0].tokens for text in TEXTS]
    assert one_by_one == reference_tokens
    assert [h.finished for h in together] == [len(t) < CHUNKS.max_target_tokens - 1 for t in reference_tokens]


def test_summaries_are_decoded_without_special_tokens(summarizer, reference_tokens):
    summaries = summarizer.summarize(TEXTS, max_new_tokens=5)
    assert len(summaries) == len(TEXTS) and all(isinstance(s, str) for s in summaries)
    assert all("[SEP]" not in s and "[CLS]" not in s for s in summaries)
    assert summaries[0] == summarizer.tokenizer.decode(reference_tokens[0][:5], skip_special_tokens=True)


def test_beam_search_with_one_beam_is_greedy(summarizer):
    documents = document_chunks(summarizer.tokenizer, TEXTS, chunk_length=CHUNKS.chunk_length,
                                max_source_tokens=CHUNKS.max_source_tokens, cls_id=101, sep_id=102)
    memory, mask = summarizer.memory(documents)
    steps = CHUNKS.max_target_tokens - 1
    greedy = summarizer.graphs.greedy(memory, mask, start_id=101, end_id=102, max_new_tokens=steps,
                                      keep_logits=True)
    one_beam = beam_search(summarizer.graphs, memory, mask, start_id=101, end_id=102, max_new_tokens=steps,
                           num_beams=1)
    assert one_beam == greedy_hypotheses(greedy.tokens, greedy.logits, 102)


def test_four_beams_score_at_least_greedy(summarizer):
    greedy = summarizer.generate(TEXTS)
    beams = summarizer.generate(TEXTS, num_beams=4)
    assert all(b.score >= g.score - 1e-9 for b, g in zip(beams, greedy, strict=True))
    assert any(b.score > g.score + 1e-6 for b, g in zip(beams, greedy, strict=True))  # the search found better
    assert all(len(b.tokens) <= CHUNKS.max_target_tokens - 1 for b in beams)
    assert len(summarizer.summarize(TEXTS, num_beams=4, max_new_tokens=6)) == len(TEXTS)


@pytest.mark.parametrize("call, message", [
    (lambda s: s.summarize("one text"), "takes a list of texts"),
    (lambda s: s.summarize([]), "empty list"),
    (lambda s: s.summarize(["x"], num_beams=0), "num_beams must be a positive integer"),
    (lambda s: s.summarize(["x"], max_new_tokens=500), "exceeds the decoder.s 127 positions"),
    (lambda s: s.classify(["x"]), "is a summarization export; classify() needs"),
])
def test_bad_calls_are_one_line(summarizer, call, message):
    with pytest.raises(AdaretError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(summarizer)


def test_a_summarization_directory_is_named_as_such(export_dir, tmp_path):
    with pytest.raises(AdaretError, match="is a summarization export"):
        model_files(export_dir)  # what load() would run for a classifier, and what serving reads
    with pytest.raises(AdaretError, match="is not a summarization export"):
        Summarizer(tmp_path)


RUNTIME_WITHOUT_TORCH = """
    import adaret.runtime
    summarizer = adaret.runtime.load(sys.argv[1])
    print(summarizer.generate(["Shares fell on the stock market."], num_beams=2)[0].tokens)
"""

def test_runtime_imports_no_torch(export_dir, summarizer):
    done = run_with_imports_blocked(RUNTIME_WITHOUT_TORCH, str(export_dir))
    assert done.returncode == 0, done.stderr[-2000:]
    want = summarizer.generate(["Shares fell on the stock market."], num_beams=2)[0].tokens
    assert done.stdout.strip() == str(want)


def test_summarize_command(export_dir, summarizer, tmp_path, capsys):
    document = tmp_path / "doc.txt"
    document.write_text(PARITY_TEXT, encoding="utf-8")
    assert main(["summarize", str(export_dir), "--file", str(document)]) == 0
    assert capsys.readouterr().out.strip() == summarizer.summarize([PARITY_TEXT])[0].strip()
    assert main(["summarize", str(export_dir), TEXTS[2], "--num-beams", "4", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out.strip() == summarizer.summarize(TEXTS[2:3], num_beams=4,
                                                                   max_new_tokens=6)[0].strip()


def one_line(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 1 and err and "\n" not in err and "Traceback" not in err, err
    return err


def test_summarize_command_errors_are_one_line(export_dir, tmp_path, capsys):
    missing = str(tmp_path / "nope.txt")
    assert "cannot read" in one_line(capsys, main(["summarize", str(export_dir), "--file", missing]))
    classifier = tmp_path / "classifier"
    classifier.mkdir()
    (classifier / "model.onnx").write_bytes(b"")
    assert "not a summarization export" in one_line(capsys, main(["summarize", str(classifier), "some text"]))
    assert "nothing to summarize" in one_line(capsys, main(["summarize", str(export_dir)]))
    assert "not both" in one_line(capsys, main(["summarize", str(export_dir), "x", "--file", missing]))


def test_summarize_help_explains_itself(capsys):
    with pytest.raises(SystemExit):
        main(["summarize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "summarization export directory" in text and "--num-beams" in text and "--file" in text
    assert "chunks the model was trained on" in text
