"""One error model (issue 18), training / export / calibration side: bad input is refused where it is read.

An expected failure is one line on stderr, ``adaret <cmd>: error: <what> (<hint>)``, exit 1 (2 for a bad flag), no
traceback; and it is found before the work it would spoil (model loading, exports, training).
"""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from adaret.cli import build_parser, main
from adaret.core.errors import AdaretError
from adaret.core.fileio import sha256_file


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(args))
    return exc.value.code, capsys.readouterr().err.strip()


def _assert_one_line(code, err, *fragments, exit_code=1):
    assert code == exit_code, (code, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def _copy(tiny_checkpoint, tmp_path, name="ckpt") -> Path:
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / name))


def _edit_config(checkpoint: Path, change) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    change(config)
    (checkpoint / "config.json").write_text(json.dumps(config))


def _export(checkpoint, tmp_path, capsys):
    return _run(["export", "--budget", "0.4", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                 "--no-optimize"], capsys)


def _no_model_loading(monkeypatch):
    """Training must read and check its data before it loads a model."""
    import adaret.training.trainer as trainer

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(trainer, "load_encoder", loaded)


# ------------------------------------------------------------------------------- 1. encodings and rows


def test_checkpoint_config_that_is_not_utf8_is_one_line(tiny_checkpoint, tmp_path, capsys):
    checkpoint = _copy(tiny_checkpoint, tmp_path)
    raw = (checkpoint / "config.json").read_bytes()
    (checkpoint / "config.json").write_bytes(raw.replace(b"synthetic", b"synth\xffetic", 1))
    code, err = _export(checkpoint, tmp_path, capsys)
    _assert_one_line(code, err, str(checkpoint), "config.json", "UTF-8")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_data_file_that_is_not_utf8_names_the_file_and_line(suffix, tmp_path, capsys, monkeypatch):
    _no_model_loading(monkeypatch)
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        lines = [json.dumps({"text": f"text {i}", "label": "ab"[i % 2]}).encode() for i in range(3)]
        lines.append(b'{"text": "caf\xe9", "label": "a"}')
    else:
        lines = [b"text,label"] + [f"text {i},{'ab'[i % 2]}".encode() for i in range(2)] + [b"caf\xe9,a"]
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, err = _run(["train", "--data", str(path), "--out", str(tmp_path / "c")], capsys)
    _assert_one_line(code, err, str(path), "line 4", "UTF-8")
    assert not (tmp_path / "c").exists()


def test_jsonl_row_without_the_label_column_names_the_file_and_line(tmp_path, capsys, monkeypatch):
    _no_model_loading(monkeypatch)
    path = tmp_path / "data.jsonl"
    rows = [{"text": "one", "label": "a"}, {"text": "two", "label": "b"}, {"text": "three"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, err = _run(["train", "--data", str(path), "--out", str(tmp_path / "c")], capsys)
    _assert_one_line(code, err, str(path), "line 3", "'label'")


@pytest.mark.parametrize("content, line, message", [
    ("text,label\na,x\nb,y\nc\n", "line 4", "'label'"),  # a short row: csv fills the label with None
    ("text,label\na,x\nb, c,y\n", "line 3", "more fields"),  # an unquoted comma shifts the label
])
def test_csv_row_with_missing_or_extra_fields_names_the_line(content, line, message, tmp_path, capsys, monkeypatch):
    _no_model_loading(monkeypatch)
    path = tmp_path / "data.csv"
    path.write_text(content)
    code, err = _run(["train", "--data", str(path), "--out", str(tmp_path / "c")], capsys)
    _assert_one_line(code, err, str(path), line, message)


# ------------------------------------------------------------------------------- 2. checkpoint config fields


def _set(section, key, value):
    def change(config):
        config[section][key] = value
    return change


def _no_source(config):
    base = config["base_model"]
    base.update(in_checkpoint=False, weights_sha256="0" * 64)
    del base["source"]


def _backbone(key, value):
    def change(config):
        config["base_model"]["config"][key] = value
    return change


def _retention_not_an_object(config):
    config["retention"] = "cls_mean"


@pytest.mark.parametrize("tamper, fragments", [
    (_retention_not_an_object, ["retention", "object"]),
    (_set("retention", "pooling", "max"), ["retention.pooling", "'max'", "cls_mean"]),
    (_set("retention", "label_names", "abc"), ["retention.label_names"]),
    (_set("schedule", "keep_fractions", "0.5"), ["schedule.keep_fractions", "list"]),
    (_set("schedule", "keep_fractions", [1.0, 0.6, -0.35, 0.2]), ["schedule.keep_fractions", "-0.35", "[0, 1]"]),
    (_set("schedule", "keep_fractions", [1.0, 1.6, 0.35, 0.2]), ["schedule.keep_fractions", "1.6"]),
    (_set("schedule", "keep_fractions", [1.0, "0.6", 0.35, 0.2]), ["schedule.keep_fractions", "'0.6'"]),
    (_set("schedule", "keep_fractions", [1.0, 0.6]), ["schedule.keep_fractions", "2 values", "4 layers"]),
    (_set("training", "budget", "lots"), ["training.budget"]),
    (_set("training", "budget", None), ["training.budget"]),
    (_no_source, ["base_model.source"]),
    (_backbone("max_position_embeddings", 1e12), ["max_position_embeddings", "whole number"]),
    (_backbone("max_position_embeddings", 10**12), ["max_position_embeddings", "parameters"]),
    (_backbone("hidden_size", 0), ["hidden_size", "0"]),
    (_backbone("num_attention_heads", 5), ["num_attention_heads", "hidden_size"]),
    (_backbone("model_type", "gpt2"), ["base_model.config", "unsupported encoder type 'gpt2'"]),
    (_backbone("layer_norm_eps", "tiny"), ["base_model.config", "layer_norm_eps"]),
], ids=["retention-str", "pooling", "label-names", "fractions-str", "fraction-negative", "fraction-above-1",
        "fraction-str", "fractions-length", "training-budget", "training-budget-missing", "no-source",
        "positions-float", "positions-huge",
        "hidden-zero", "heads", "model-type", "field-type"])
def test_tampered_checkpoint_config_is_one_line_naming_the_field(tamper, fragments, tiny_checkpoint, tmp_path,
                                                                 capsys):
    checkpoint = _copy(tiny_checkpoint, tmp_path)
    _edit_config(checkpoint, tamper)
    with pytest.raises(AdaretError) as exc:  # the library refuses it where the config is read ...
        from adaret.training.checkpoint import RetentionCheckpoint

        RetentionCheckpoint.from_pretrained(checkpoint)
    assert str(checkpoint) in str(exc.value)
    code, err = _export(checkpoint, tmp_path, capsys)  # ... and the command line says so in one line
    _assert_one_line(code, err, str(checkpoint), *fragments)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("positions", [1e12, 10**12])
def test_a_model_directory_with_an_absurd_config_is_refused_before_loading(positions, minilm_dir, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    config = json.loads((minilm_dir / "config.json").read_text()) | {"max_position_embeddings": positions}
    (model / "config.json").write_text(json.dumps(config))
    code, err = _run(["train", "--model", str(model), "--out", str(tmp_path / "c")], capsys)
    _assert_one_line(code, err, str(model / "config.json"), "max_position_embeddings")
    assert not (tmp_path / "c").exists()


def test_calibrate_reads_the_same_checked_config(tiny_checkpoint, tmp_path):
    """INT8 calibration reads the checkpoint's config without loading its weights: the same checks apply."""
    from adaret.calibration.checkpoint import read_checkpoint

    checkpoint = _copy(tiny_checkpoint, tmp_path)
    _edit_config(checkpoint, _retention_not_an_object)
    with pytest.raises(AdaretError, match="retention"):
        read_checkpoint(checkpoint)


def test_checkpoint_tensor_of_the_wrong_shape_is_named(tiny_checkpoint, tmp_path, capsys):
    checkpoint = _copy(tiny_checkpoint, tmp_path)
    weights = checkpoint / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["gates.2.scorer.weight"] = torch.zeros(1, 16)
    save_file(tensors, str(weights), metadata={"format": "adaret-retention-checkpoint"})
    _edit_config(checkpoint, lambda config: config.update(weights_sha256=sha256_file(weights)))
    code, err = _export(checkpoint, tmp_path, capsys)
    _assert_one_line(code, err, str(checkpoint), "gates.2.scorer.weight", "[1, 16]", "[1, 32]")


def test_a_sane_backbone_config_still_loads(tiny_checkpoint):
    from adaret.training.checkpoint import RetentionCheckpoint

    checkpoint = RetentionCheckpoint.from_pretrained(tiny_checkpoint)
    assert checkpoint.model.encoder.num_layers == len(checkpoint.info.schedule["keep_fractions"])


# ------------------------------------------------------------------------------- 3. flags


@pytest.mark.parametrize("argv, flag", [
    (["calibrate", "--checkpoint", "c", "--batch-size", "0"], "--batch-size"),
    (["calibrate", "--checkpoint", "c", "--max-length", "0"], "--max-length"),
    (["train", "--out", "x", "--max-train-samples", "0"], "--max-train-samples"),
    (["train", "--out", "x", "--max-eval-samples", "0"], "--max-eval-samples"),
    (["train", "--out", "x", "--epochs", "nan"], "--epochs"),
    (["train", "--out", "x", "--epochs", "inf"], "--epochs"),
    (["train", "--out", "x", "--batch-size", "0"], "--batch-size"),
    (["train", "--out", "x", "--eval-every", "0"], "--eval-every"),
    (["train", "--out", "x", "--lr", "nan"], "--lr"),
    (["export", "--budget", "0.4", "--opset", "99"], "--opset"),
    (["export", "--budget", "0.4", "--tolerance", "nan"], "--tolerance"),
    (["export", "--budget", "0.4", "--tolerance", "-0.001"], "--tolerance"),
    (["export", "--budget", "0.4", "--batch", "0"], "--batch"),
])
def test_bad_flags_are_refused_by_the_parser(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err.strip()
    _assert_one_line(exc.value.code, err, f"argument {flag}", exit_code=2)


def test_the_newest_opset_onnx_knows_is_accepted():
    import onnx

    from adaret.core.constants import MIN_OPSET

    newest = onnx.defs.onnx_opset_version()
    args = build_parser().parse_args(["export", "--budget", "0.4", "--opset", str(newest), "--tolerance", "0"])
    assert args.opset == newest and args.tolerance == 0.0
    assert build_parser().parse_args(["export", "--budget", "0.4"]).opset == MIN_OPSET


def test_library_configs_refuse_the_same_values():
    import math

    from adaret.export.pipeline import ExportConfig, validate_config
    from adaret.training.config import TrainConfig

    for bad in (dict(opset=99), dict(tolerance=math.nan), dict(tolerance=-1.0)):
        with pytest.raises(AdaretError):
            validate_config(ExportConfig(budget=0.4, **bad), 128)
    for bad in (dict(epochs=math.inf), dict(epochs=math.nan), dict(max_eval_samples=0), dict(eval_every=0),
                dict(lr_primal=math.nan), dict(eval_fold=-1), dict(eval_fold=1, task="question-answering")):
        with pytest.raises(AdaretError):
            TrainConfig(out="x", **bad).validate()


def test_library_calibration_refuses_bad_batching(tiny_checkpoint):
    from adaret.calibration.checkpoint import QuantizeConfig
    from adaret.calibration.schedule.measure import calibrate_schedule

    for bad in (dict(batch_size=0), dict(max_length=0), dict(max_length=1)):
        with pytest.raises(AdaretError, match=r"--batch-size|--max-length"):
            QuantizeConfig(checkpoint=str(tiny_checkpoint), onnx="m.onnx", output="m.int8.onnx", **bad)
        with pytest.raises(AdaretError, match=r"--batch-size|--max-length"):
            calibrate_schedule(tiny_checkpoint, "bbc-news", samples=8, progress=False, **bad)


# ------------------------------------------------------------------------------- 4. fail late


def test_bench_checks_its_data_before_any_export(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import adaret.validation.bench as bench

    def exported(*args, **kwargs):
        raise AssertionError("bench exported before it checked --data")

    monkeypatch.setattr(bench, "run_export", exported)
    no_label = tmp_path / "nolabel.jsonl"
    no_label.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(10)))
    base = ["bench", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "r"), "--seq-len", "32"]
    for data, message in ((tmp_path / "missing.jsonl", "does not exist"), (no_label, "'label'")):
        code, err = _run([*base, "--data", str(data)], capsys)
        _assert_one_line(code, err, str(data), message)


def test_train_finds_an_unwritable_out_before_the_work(tmp_path, capsys, monkeypatch):
    import adaret.training.trainer as trainer

    def worked(*args, **kwargs):
        raise AssertionError("training started before --out was claimed")

    monkeypatch.setattr(trainer, "_run_training", worked)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = _run(["train", "--out", str(blocker / "ckpt")], capsys)
    _assert_one_line(code, err, "cannot create output directory", str(blocker))


def test_optimize_finds_an_unwritable_output_before_the_passes(tmp_path, capsys, monkeypatch):
    import adaret.graph_passes.pipeline as pipeline

    def worked(*args, **kwargs):
        raise AssertionError("the passes started before -o was claimed")

    monkeypatch.setattr(pipeline, "_load", lambda path: (object(), None))
    monkeypatch.setattr(pipeline, "ParityProbe", worked)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = _run(["optimize", str(tmp_path / "model.onnx"), "-o", str(blocker / "model.opt.onnx")], capsys)
    _assert_one_line(code, err, "cannot create output directory", str(blocker))


# ------------------------------------------------------------------------------- 5. the calibrate message


def test_agreement_shortfall_states_the_bound_it_compared():
    from adaret.calibration.int8.quantize import agreement_shortfall
    from adaret.calibration.int8.sensitivity import SearchReport

    search = SearchReport(target=0.99, texts=64, kept_positions=4096, agreement_all_int8=0.98, agreement=0.9949,
                          agreement_lower=0.9876, restored=["a", "b"])
    assert not search.reached
    note = agreement_shortfall(search)
    assert "0.9876" in note and "lower bound" in note and "below the target 0.99" in note
    assert "2 MatMuls back in fp32" in note
    assert "agreement on the calibration texts is 0.9949, below" not in note
