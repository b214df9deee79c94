"""Schedule calibration on a synthetic gate setting whose keep fractions are computable by hand."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from conftest import save_tiny_checkpoint

from adaret.calibration.data import MIN_SAMPLES, calibration_texts
from adaret.calibration.schedule.measure import calibrate_schedule, write_calibrated_checkpoint
from adaret.calibration.schedule.plot import plot_schedule
from adaret.cli import main
from adaret.core.errors import AdaretError
from adaret.training.checkpoint import RetentionCheckpoint

OPEN_PROBS = {1: 0.8, 2: 0.5, 3: 0.25}  # P(gate open) per gated layer (layer 0 is ungated)
WORDS = ["alpha", "river", "market", "goal", "vote", "film", "chip", "rain"]


def _fixed_gate_checkpoint(path, tokenizer):
    """Scorer weights 0 and a bias per layer: every real non-CLS token has the same P(open) = OPEN_PROBS[l]."""
    save_tiny_checkpoint(path, tokenizer)
    checkpoint = RetentionCheckpoint.from_pretrained(path)
    for layer, gate in checkpoint.model.gates.items():
        with torch.no_grad():
            gate.scorer.weight.zero_()
            gate.scorer.bias.fill_(gate.params.log_alpha_for_open_prob(OPEN_PROBS[int(layer)]))
    checkpoint.save_pretrained(path)
    return path


def _write_csv(path, lengths):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        for i, words in enumerate(lengths):
            writer.writerow({"text": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(words)),
                             "label": "ab"[i % 2]})
    return path


def _expected_fractions(real_lengths):
    """E[kept]/real per example: CLS is always kept (forced logit), the other n-1 survive with prod p."""
    fractions = []
    for layer in range(4):
        survive = math.prod(OPEN_PROBS[k] for k in range(1, layer + 1))
        fractions.append(sum((1 + (n - 1) * survive) / n for n in real_lengths) / len(real_lengths))
    return fractions


def test_schedule_calibration_reproduces_hand_computed_fractions(tmp_path, tokenizer):
    ckpt = _fixed_gate_checkpoint(tmp_path / "ckpt", tokenizer)
    data = _write_csv(tmp_path / "calib.csv", [3, 5, 8, 12, 4, 6, 9, 2, 7, 10])
    checkpoint, calibration = calibrate_schedule(ckpt, str(data), samples=10, max_length=64, progress=False)
    texts = calibration_texts(str(data), samples=10, seed=0).texts
    real = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=64)["input_ids"]]
    assert calibration.fractions == pytest.approx(_expected_fractions(real), abs=1e-5)
    assert calibration.previous == pytest.approx([1.0, 0.6, 0.35, 0.2])

    out = write_calibrated_checkpoint(checkpoint, calibration, tmp_path / "calibrated")
    reloaded = RetentionCheckpoint.from_pretrained(out)
    assert reloaded.info.schedule["keep_fractions"] == pytest.approx(calibration.fractions)
    assert reloaded.info.schedule["calibration"]["samples"] == 10
    assert reloaded.info.keep_schedule.fractions[0] == 1.0  # the export reads it like a trained schedule
    png = plot_schedule(calibration, tmp_path / "schedule.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedule_only_cli_updates_checkpoint_in_place(tmp_path, tokenizer, capsys):
    ckpt = _fixed_gate_checkpoint(tmp_path / "ckpt", tokenizer)
    data = _write_csv(tmp_path / "calib.csv", [4] * 12)
    code = main(["calibrate", "--checkpoint", str(ckpt), "--data", str(data), "--samples", "8", "--schedule-only",
                 "--max-length", "32", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    schedule = RetentionCheckpoint.from_pretrained(ckpt).info.schedule
    n = len(tokenizer("alpha river market goal")["input_ids"])
    assert schedule["keep_fractions"][1] == pytest.approx((1 + (n - 1) * 0.8) / n, abs=1e-5)
    assert (ckpt / "keep_schedule.png").is_file()


def test_too_few_or_no_calibration_texts(tmp_path):
    data = _write_csv(tmp_path / "small.csv", [3, 4, 5, 6, 7] * 4)
    with pytest.raises(AdaretError, match="too few calibration samples"):
        calibration_texts(str(data), samples=64)
    with pytest.raises(AdaretError, match="too few for calibration"):
        calibration_texts(str(data), samples=2)
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n" + "".join(f"{' ' * (i + 1)},{'ab'[i % 2]}\n" for i in range(12)))
    with pytest.raises(AdaretError, match="no calibration data"):
        calibration_texts(str(empty), samples=MIN_SAMPLES)


def test_a_checkpoint_trained_on_one_fold_calibrates_on_its_own_training_split():
    """With --eval-fold k, fold 0's training split holds fold k's held-out texts: calibration must not draw them."""
    from adaret.training.data import load_splits

    held_out = set(load_splits("political-speeches", seed=0, eval_fold=3).eval.texts)
    drawn = calibration_texts("political-speeches", samples=100, split="train", seed=0, eval_fold=3).texts
    assert drawn and not set(drawn) & held_out
    assert set(calibration_texts("political-speeches", samples=100, split="train", seed=0).texts) & held_out
