"""Issue 18, the runtime and ONNX-tool side: what ``adaret.runtime`` and ``adaret classify`` accept as input, how far
they trust a graph's metadata, ``adaret build --check`` / ``adaret compare`` on files that are not ONNX, and the
permissions of what an export writes.

One small dynamic export (written under umask 022) serves every test.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import adaret.runtime as rt
from adaret.cli import main
from adaret.core.errors import AdaretError
from adaret.core.fileio import atomic_file
from adaret.core.metadata import MetadataError
from adaret.core.onnx_files import save_model
from adaret.core.outputs import output_dir
from adaret.runtime.limits import DEFAULT_MAX_CHARS
from adaret.runtime.runners import OrtRunner
from adaret.runtime.session import Session
from adaret.runtime.text import TextEncoder

LABELS = ["business", "entertainment", "politics", "sports", "tech"]


@pytest.fixture(scope="module")
def export_dir(tiny_dynamic_export) -> Path:
    return tiny_dynamic_export.config.out_dir  # exported under umask 022, which the permission test checks against


@pytest.fixture(scope="module")
def session(export_dir) -> Session:
    return rt.load(export_dir)


def one_line_error(capsys, code: int, *, exit_code: int = 1) -> str:
    err = capsys.readouterr().err.strip()
    assert code == exit_code, err
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------------------------- 1. inputs


def test_command_line_texts_that_are_not_utf8_are_one_line_errors(export_dir, capsys):
    """A shell passes argv bytes; Python hands undecodable ones on as lone surrogates (surrogateescape)."""
    latin1 = b"caf\xe9 au lait".decode("utf-8", "surrogateescape")
    code = main(["classify", str(export_dir), "fine", latin1])
    err = one_line_error(capsys, code)
    assert "text 2 on the command line" in err and "UTF-8" in err and "0xe9" in err
    # valid UTF-8 arrives decoded and is classified as usual
    assert main(["classify", str(export_dir), "café au lait", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "café au lait"


def test_explain_text_that_is_not_utf8_is_a_one_line_error(export_dir, capsys):
    code = main(["explain", str(export_dir), b"\xff\xfe".decode("utf-8", "surrogateescape")])
    assert "UTF-8" in one_line_error(capsys, code)


def test_file_with_non_utf8_bytes_names_the_line(export_dir, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"first line\n\nthird \xff line\n")
    code = main(["classify", str(export_dir), "--file", str(texts)])
    err = one_line_error(capsys, code)
    assert "line 3" in err and "UTF-8" in err and str(texts) in err


def test_stdin_with_non_utf8_bytes_is_a_one_line_error(export_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ok\nbad \xc3\x28\n"), encoding="ascii"))
    code = main(["classify", str(export_dir), "--file", "-"])
    assert "line 2" in one_line_error(capsys, code)
    # stdin is read as UTF-8 whatever the locale says
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("caf\u00e9\n".encode()), encoding="ascii"))
    assert main(["classify", str(export_dir), "--file", "-", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "caf\u00e9"


def test_lone_surrogate_is_refused_naming_the_text(session):
    with pytest.raises(AdaretError, match=r"texts\[1\] .*surrogate .*U\+D800"):
        session.classify(["fine", "\ud800"])


def test_explainer_refuses_a_lone_surrogate(export_dir):
    from adaret.runtime.explain import Explainer

    with pytest.raises(AdaretError, match="surrogate"):
        Explainer(export_dir).explain("a \udcff b")


def test_ragged_ids_are_refused(session):
    with pytest.raises(AdaretError, match="ragged"):
        session.run([[101, 2054, 102], [101, 102]])
    with pytest.raises(AdaretError, match="ragged"):
        session.run([[101, 2054, 102]], attention_mask=[[1, 1, 1], [1]])


def test_a_row_without_real_tokens_is_refused(session):
    ids = np.array([[101, 2054, 102], [101, 2054, 102]])
    mask = np.array([[1, 1, 1], [0, 0, 0]])
    with pytest.raises(AdaretError, match=r"attention_mask row 1 .*no real token"):
        session.run(ids, attention_mask=mask)


@pytest.mark.parametrize(("ids", "mask", "message"), [
    ([[101, -5, 102]], None, r"input_ids .*-5 at \[0, 1\].*vocabulary"),
    ([[101, 30522, 102]], None, r"input_ids .*30522 at \[0, 1\].*30522"),
    ([[101, 2**40, 102]], None, r"input_ids .*vocabulary"),
    (np.array([[101, 2**63 + 5, 102]], dtype=np.uint64), None, r"input_ids .*vocabulary"),
    ([[101, 2054, 102]], [[1, 2, 1]], r"attention_mask .*only 0 and 1.*2 at \[0, 1\]"),
    ([[101, 2054, 102]], [[1, 1, -1]], r"attention_mask .*only 0 and 1"),
])
def test_out_of_range_ids_and_masks_are_refused(session, ids, mask, message):
    assert session.vocabulary.size == 30522
    with pytest.raises(AdaretError, match=message):
        session.run(ids, attention_mask=mask)


def test_in_range_edges_still_run(session):
    ids = np.array([[101, 30521, 0, 102]])
    logits = session.run(ids, attention_mask=np.array([[1, 1, 1, 0]]))["logits"]
    assert logits.shape == (1, 5) and np.isfinite(logits).all()


def test_text_length_is_capped_before_tokenising(export_dir, session):
    assert DEFAULT_MAX_CHARS == 1_000_000 and session.max_chars == DEFAULT_MAX_CHARS
    huge = "word " * (DEFAULT_MAX_CHARS // 5) + "x"
    started = time.perf_counter()
    with pytest.raises(AdaretError, match=r"texts\[1\] has 1,000,001 characters.*1,000,000"):
        session.classify(["short", huge])
    assert time.perf_counter() - started < 1.0  # refused before the tokenizer sees it
    small = rt.load(export_dir, max_chars=20)
    assert small.classify(["x" * 20])[0].label in LABELS
    with pytest.raises(AdaretError, match=r"texts\[0\] has 21 characters"):
        small.classify(["x" * 21])
    with pytest.raises(AdaretError, match="max_chars"):
        rt.load(export_dir, max_chars=0)


def test_classify_command_caps_characters(export_dir, capsys):
    code = main(["classify", str(export_dir), "--max-chars", "10", "short", "far too long for it"])
    assert "text 2 on the command line has 19 characters" in one_line_error(capsys, code)


def test_classify_options_may_follow_texts(export_dir, capsys):
    assert main(["classify", str(export_dir), "first", "--json", "second", "--batch-size", "1", "third"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["first", "second", "third"]
    assert main(["classify", "--json", str(export_dir), "--", "--dash text"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "--dash text"


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_classify_batch_size_must_be_positive(export_dir, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["classify", str(export_dir), "--batch-size", value, "hello"])
    assert exit_info.value.code == 2
    assert "--batch-size" in capsys.readouterr().err


def test_session_batch_size_must_be_positive(session):
    with pytest.raises(AdaretError, match="batch_size"):
        session.classify(["hello"], batch_size=0)


# --------------------------------------------------------------------------------------------- 2. metadata


def graph_with(export_dir: Path, directory: Path, **props: str) -> Path:
    """A copy of the export's plain graph (with its tokenizer) whose ``adaret.<key>`` entries are replaced."""
    directory.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(export_dir / "model.onnx"))
    for entry in model.metadata_props:
        if entry.key.removeprefix("adaret.") in props:
            entry.value = props[entry.key.removeprefix("adaret.")]
    onnx.save(model, str(directory / "model.onnx"))
    shutil.copyfile(export_dir / "tokenizer.json", directory / "tokenizer.json")
    return directory / "model.onnx"


def test_label_count_that_differs_from_the_logits_width_is_refused_at_load(export_dir, tmp_path, capsys):
    graph = graph_with(export_dir, tmp_path, label_names=json.dumps(["a", "b", "c"]))
    with pytest.raises(AdaretError, match=r"3 label_names .*logits .*5"):
        rt.load(graph)
    err = one_line_error(capsys, main(["classify", str(graph), "hello"]))
    assert "label_names" in err


def test_label_count_is_checked_at_the_first_run_when_the_width_is_dynamic(session):
    """A runner that cannot tell its logits width (a TensorRT plan reports none) is checked on its output."""
    real = session.runners[None]

    class UnknownWidth:
        def __init__(self):
            self.input_specs, self.output_names = real.input_specs, real.output_names
            self.output_shapes = {"logits": (None, None)}
            self.metadata = real.metadata.updated(label_names=["a", "b"])

        def infer(self, feeds):
            return real.infer(feeds)

    lenient = Session({None: UnknownWidth()}, session.encoder)
    with pytest.raises(AdaretError, match=r"2 label_names .*logits .*5"):
        lenient.classify(["hello"])
    with pytest.raises(AdaretError, match="label_names"):
        lenient.run([[101, 102]])


@pytest.mark.parametrize(("props", "message"), [
    ({"label_names": "not json"}, "label_names"),
    ({"label_names": json.dumps([1, 2, 3, 4, 5])}, "label_names"),
    ({"seq_len": '"7"'}, "seq_len"),
    ({"seq_len": "7"}, "seq_len"),
    ({"budget": "1.5"}, "budget"),
    ({"budget": "nan"}, "budget"),
    ({"budget": '"half"'}, "budget"),
])
def test_malformed_metadata_is_one_line_at_load_and_classify(export_dir, tmp_path, capsys, props, message):
    graph = graph_with(export_dir, tmp_path, **props)
    with pytest.raises(MetadataError, match=message) as error:
        rt.load(graph)
    assert "\n" not in str(error.value)
    assert message in one_line_error(capsys, main(["classify", str(graph), "hello"]))


# --------------------------------------------------------------------------------------------- 3. ONNX tools


@pytest.fixture
def not_onnx(export_dir, tmp_path) -> dict[str, Path]:
    head = tmp_path / "head.onnx"
    head.write_bytes((export_dir / "model.onnx").read_bytes()[:100])
    text = tmp_path / "notes.onnx"
    text.write_text("these are notes, not a graph\n")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    return {"head": head, "text": text, "empty": empty}


@pytest.mark.parametrize("kind", ["head", "text", "empty"])
def test_build_check_on_a_file_that_is_not_onnx(not_onnx, capsys, kind):
    code = main(["build", str(not_onnx[kind]), "--check"])
    err = one_line_error(capsys, code)
    assert not_onnx[kind].name in err and "ONNX" in err


@pytest.mark.parametrize("kind", ["head", "text", "empty"])
def test_compare_on_a_file_that_is_not_onnx(export_dir, not_onnx, capsys, kind):
    graph = str(export_dir / "model.onnx")
    for args in ([str(not_onnx[kind]), graph], [graph, str(not_onnx[kind])]):
        err = one_line_error(capsys, main(["compare", *args, "--seq-len", "16"]))
        assert not_onnx[kind].name in err and "ONNX" in err


def test_load_model_errors(tmp_path):
    from adaret.core import graph_facts as gf

    with pytest.raises(AdaretError, match="does not exist"):
        gf.load_model(tmp_path / "absent.onnx")
    with pytest.raises(AdaretError, match="is a directory"):
        gf.load_model(tmp_path)


# --------------------------------------------------------------------------------------------- 4. permissions


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_export_files_follow_the_umask(export_dir):
    assert mode(export_dir) == 0o755
    for name in ("model.onnx", "model.opt.onnx", "tokenizer.json", "manifest.json", "export_report.json"):
        assert mode(export_dir / name) == 0o644, name
    assert {p.name: oct(mode(p)) for p in export_dir.iterdir() if mode(p) not in (0o644, 0o755)} == {}


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                              (0o002, 0o664, 0o775)])
def test_atomic_writers_give_what_a_plain_open_gives(tmp_path, umask, file_mode, dir_mode):
    previous = os.umask(umask)
    try:
        with atomic_file(tmp_path / "plain.txt") as tmp:
            tmp.write_text("x")
        graph = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
        save_model(graph, tmp_path / "graph.onnx")
        with output_dir(tmp_path / "out") as out:
            staged = out.staging()
            (staged / "a.txt").write_text("a")
            (staged / "nested").mkdir()
            assert mode(staged) == dir_mode
            out.publish(staged, manifest=True)
        with open(tmp_path / "reference.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "reference.txt") == file_mode
    for path in (tmp_path / "plain.txt", tmp_path / "graph.onnx", tmp_path / "out" / "a.txt",
                 tmp_path / "out" / "manifest.json"):
        assert mode(path) == file_mode, path
    assert mode(tmp_path / "out") == dir_mode
    assert not [p for p in tmp_path.rglob("*.adaret.tmp")]


def test_session_is_unchanged_for_good_input(session):
    """Sanity: the checks reject nothing that classify itself feeds."""
    texts = ["Shares fell.", "A late goal sealed the cup.", ""]
    assert [p.label in LABELS for p in session.classify(texts, batch_size=2)] == [True] * 3
    assert isinstance(session.encoder, TextEncoder) and isinstance(session.runners[None], OrtRunner)
