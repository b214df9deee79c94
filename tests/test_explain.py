"""`adaret explain`: kept positions from the graph's own TopKs, against a --with-positions export; views; errors."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from adaret.cli import main
from adaret.core.errors import AdaretError
from adaret.core.metadata import ExportMetadata
from adaret.runtime.explain import (
    Explainer,
    GraphFile,
    RetentionGraph,
    compose_positions,
    render_html,
    render_text,
    write_png,
)

TEXTS = [
    "Oil prices rose.",
    "Shares in the bank fell sharply after the results.",
    "The film won three awards at the festival on Sunday night, including best director, and the cast "
    "thanked the crew, the writers and everyone who had waited ten years to see the story on screen.",
    "The minister said the government had no plans to raise taxes. " * 20,  # past the 128 positions: truncated
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def default_dir(tiny_dynamic_export) -> Path:
    return tiny_dynamic_export.config.out_dir


@pytest.fixture(scope="module")
def positions_dir(tiny_positions_export) -> Path:
    """The same checkpoint and budget as ``default_dir``, exported --with-positions."""
    return tiny_positions_export.config.out_dir


def _feeds(batch: int, width: int, seed: int) -> dict[str, np.ndarray]:
    """Random ids with CLS first; every row but the first is right-padded to a random length."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, (batch, width), dtype=np.int64)
    ids[:, 0] = 101
    mask = np.ones_like(ids)
    for row in range(1, batch):
        mask[row, rng.integers(2, width + 1):] = 0
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _rule(numerator: int, n: int) -> int:
    return n if numerator == 10_000 else max(2, (numerator * n + 9_999) // 10_000)


def test_compose_positions_follows_the_chain_of_kept_slots():
    orders = [np.array([[0, 2, 3, 5]]), np.array([[0, 3]])]
    kept = compose_positions(orders, width=6)
    assert [k.tolist() for k in kept] == [[[0, 2, 3, 5]], [[0, 5]]]
    assert compose_positions([], width=6) == []


def test_composed_positions_equal_a_with_positions_export(default_dir, positions_dir):
    """The core check: TopK orders exposed from the default export, composed in numpy, equal the kept_positions_l*
    outputs of a --with-positions export of the same checkpoint, element for element."""
    composed, returned = RetentionGraph(default_dir / "model.onnx"), RetentionGraph(positions_dir / "model.onnx")
    assert not composed.from_outputs and returned.from_outputs and composed.pruned == [1, 2, 3]
    for batch, width, seed in ((1, 2, 0), (3, 7, 1), (4, 33, 2), (2, 96, 3), (2, 128, 4)):
        feeds = _feeds(batch, width, seed)
        got, want = composed.kept_positions(feeds), returned.kept_positions(feeds)
        assert sorted(got) == sorted(want) == [2, 3, 4]
        for layer in want:
            assert got[layer].dtype == want[layer].dtype and np.array_equal(got[layer], want[layer]), (width, layer)


def test_exposed_orders_match_the_same_graphs_positions_in_one_run(positions_dir):
    """On one graph and one run: its order-restoring TopKs, composed, give its own kept_positions outputs."""
    graph = GraphFile.read(positions_dir / "model.onnx")
    assert len(graph.order_names) == 3
    wanted = [f"kept_positions_l{j}" for j in (2, 3, 4)]
    edited = graph.with_outputs(graph.order_names)
    model = onnx.load_from_string(edited)  # the wire-level edit is a valid model that onnx itself reads back
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == ["logits", *wanted, *graph.order_names]
    assert graph.metadata == ExportMetadata.from_model(model) and graph.output_names == ["logits", *wanted]
    session = ort.InferenceSession(edited, providers=["CPUExecutionProvider"])
    feeds = _feeds(3, 64, seed=5)
    fetched = session.run([*graph.order_names, *wanted], feeds)
    for got, want in zip(compose_positions(fetched[:3], 64), fetched[3:], strict=True):
        assert np.array_equal(got, want)


def test_explained_texts_follow_the_keep_rule(default_dir, positions_dir):
    explainer, reference = Explainer(default_dir), Explainer(positions_dir)
    numerators = explainer.graph(None).metadata.schedule["numerators"]
    for text in TEXTS:
        e, want = explainer.explain(text), reference.explain(text)
        assert (e.layers, e.slots, e.tokens) == (want.layers, want.slots, want.tokens)
        n = len(e.tokens)
        assert e.width == (128 if n > 96 else -(-n // 32) * 32) and e.truncated == (text is TEXTS[-1])
        assert e.slots == [_rule(k, e.width) for k in numerators]
        assert e.layers[0] == list(range(n)) and e.retained
        for previous, kept, slots in zip(e.layers, e.layers[1:], e.slots[1:], strict=False):
            assert kept[0] == 0 and set(kept) <= set(previous)
            assert len(kept) == min(slots, len(previous))  # padding ranks below every real token
    long = explainer.explain(TEXTS[-1])
    assert long.slots == explainer.graph(None).metadata.keep_counts["128"] and len(long.tokens) == 128


def test_static_buckets_pick_the_smallest_that_holds_the_text(default_dir, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(default_dir / name, tmp_path / name)
    for n in (32, 64):
        shutil.copyfile(default_dir / "model.onnx", tmp_path / f"model_seq{n}.onnx")
    explainer = Explainer(tmp_path)
    assert explainer.widths == [32, 64] and explainer.max_length == 64
    short, medium, long = (explainer.explain(t) for t in TEXTS[1:])
    assert (short.model.name, short.width) == ("model_seq32.onnx", 32)
    assert (medium.model.name, medium.width) == ("model_seq64.onnx", 64) and not medium.truncated
    assert len(long.tokens) == 64 and long.truncated and "truncated" in render_text(long)


def test_text_html_and_json_views(default_dir):
    e = Explainer(default_dir).explain('Oil <b>prices</b> & "gas" rose.')
    text = render_text(e).splitlines()
    assert text[0].startswith("model.onnx, budget 0.5:") and len(text) == 5
    assert text[1] == f"layer 1 keeps {len(e.tokens)}/{len(e.tokens)}: " + " ".join(e.tokens)
    page = render_html([e])
    assert "<b>" not in page and all(f">{x}</" in page for x in ("&lt;", "&gt;", "&amp;", "&quot;", "gas"))
    kept, cells = e.kept_matrix(), page.count('<td class="kept">')
    assert cells == kept.sum() and cells + page.count("<td></td>") == kept.size
    assert render_html([e, Explainer(default_dir).explain(TEXTS[2])]).count("<section>") == 2
    layers = e.as_dict()["layers"]
    assert [x["positions"] for x in layers] == e.layers and json.loads(json.dumps(e.as_dict()))["width"] == 32


def test_cli_prints_and_writes_html_png_and_json(default_dir, tmp_path, capsys):
    html, png = tmp_path / "out" / "kept.html", tmp_path / "kept.png"
    assert main(["explain", str(default_dir), TEXTS[1], "--html", str(html), "--png", str(png)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1].startswith("layer 1 keeps 12/12: [CLS] shares in the bank")
    assert f"wrote {html}" in err and html.read_text().startswith("<!doctype html>")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 2_000
    assert main(["explain", str(default_dir / "model.onnx"), TEXTS[0], "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tokens"][0] == "[CLS]" and [x["layer"] for x in data["layers"]] == [1, 2, 3, 4]


@pytest.mark.parametrize(("target", "message"), [
    ("missing", "does not exist"),
    ("tokenizer.json", "expected an export directory or a .onnx graph"),
    ("empty", "holds no model.onnx or model_seq<N>.onnx"),
])
def test_bad_paths_give_one_line(default_dir, tmp_path, capsys, target, message):
    (tmp_path / "empty").mkdir()
    path = default_dir / target if target == "tokenizer.json" else tmp_path / target
    assert main(["explain", str(path), "text"]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_html_onto_a_directory_is_one_line(default_dir, tmp_path, capsys):
    assert main(["explain", str(default_dir), "text", "--html", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().err


def test_corrupt_graph_is_one_line(default_dir, tmp_path):
    shutil.copyfile(default_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "model.onnx").write_bytes((default_dir / "model.onnx").read_bytes()[:5000])
    with pytest.raises(AdaretError, match="not a valid ONNX model"):
        Explainer(tmp_path)


def test_an_optimised_graph_is_refused_with_a_pointer_to_model_onnx(default_dir, tmp_path):
    """The ort-cpu passes drop the order-restoring TopKs; the count check must notice rather than misreport."""
    from adaret.graph_passes.pipeline import optimize

    shutil.copyfile(default_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    optimize(default_dir / "model.onnx", tmp_path / "model.opt.onnx", passes=["order-restore-elimination"])
    with pytest.raises(AdaretError, match=r"0 order-restoring TopK node\(s\) for 3 pruned layer\(s\).*model\.onnx"):
        Explainer(tmp_path / "model.opt.onnx")


def test_a_graph_without_retention_keeps_every_token(default_dir, tmp_path):
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    nodes = [helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["m"], ["logits"], axes=[1], keepdims=1)]
    model = helper.make_model(helper.make_graph(nodes, "full", [ids, mask], [logits]),
                              opset_imports=[helper.make_opsetid("", 17)])
    ExportMetadata(form="dynamic", budget=1.0, max_positions=128,
                   schedule={"denominator": 10_000, "numerators": [10_000] * 4}).write_to(model)
    onnx.save(model, str(tmp_path / "model.onnx"))
    shutil.copyfile(default_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    e = Explainer(tmp_path).explain(TEXTS[1])
    assert not e.retained and e.layers == [list(range(len(e.tokens)))] * 4 and e.slots == [32] * 4
    assert "drops no tokens" in render_text(e)


def test_png_without_matplotlib_is_one_line(default_dir, tmp_path, monkeypatch):
    e = Explainer(default_dir).explain(TEXTS[0])
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import raise ImportError
    with pytest.raises(AdaretError, match="needs matplotlib"):
        write_png(e, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_validation_report_explains_three_examples(default_dir, tmp_path):
    from adaret.validation.report import _explain_examples, markdown

    shutil.copyfile(default_dir / "model.onnx", tmp_path / "model.onnx")
    shutil.copyfile(default_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    opt = tmp_path / "model.opt.onnx"  # stands in for the optimised graph: the report reads the plain one
    opt.write_bytes(b"not read")
    summary = _explain_examples(opt, TEXTS, tmp_path)
    assert summary["model"] == str(tmp_path / "model.onnx")
    assert [e["eval_index"] for e in summary["examples"]] == [0, 1, 2]
    assert summary["examples"][2]["kept_per_layer"][0] == summary["examples"][2]["tokens"]
    assert (tmp_path / "kept_tokens.html").read_text().count("<section>") == 3
    (tmp_path / "model.onnx").unlink()
    assert "skipped" in _explain_examples(opt, TEXTS, tmp_path)
    lines = markdown({"command": "", "checkpoint": "", "checkpoint_sha256": "0" * 12, "data": "", "eval_examples": 0,
                      "batch_size": 1, "max_length": 128, "device": "cpu", "threads": 1, "passed": True,
                      "full": {}, "rows": [], "checks": [], "machine": {"cpu": "", "cores": 1}, "versions": {},
                      "memory_workload": {"batch": 1, "seq_len": 1}, "kept_tokens": summary})
    assert "[kept_tokens.html](kept_tokens.html)" in lines and "- example 1: 12 -> 12 -> 10 -> 5" in lines


EXPLAIN_WITHOUT_TORCH = textwrap.dedent("""
    import sys

    class Block:
        BLOCKED = ("torch", "transformers", "onnx", "onnxscript", "onnx_ir", "matplotlib")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked: explain must not need it")
            return None

    sys.meta_path.insert(0, Block())
    from adaret.runtime.explain import Explainer, render_html
    explanation = Explainer(sys.argv[1]).explain("Shares fell on the stock market.")
    render_html([explanation])
    from adaret.cli import main
    assert main(["explain", sys.argv[1], "Oil prices rose.", "--json"]) == 0
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in Block.BLOCKED)
    assert not heavy, heavy
""")


def test_explain_imports_and_runs_with_torch_and_onnx_unimportable(default_dir):
    """The default export needs graph surgery; it must work on a runtime-only install (no torch, no onnx)."""
    done = subprocess.run([sys.executable, "-c", EXPLAIN_WITHOUT_TORCH, str(default_dir)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["layers"][0]["layer"] == 1
