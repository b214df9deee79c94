import pytest
import torch

from adaret.modeling import RetentionConfig, RetentionModel, encoder_from_config, expected_budget
from adaret.training.batching import Encoded
from adaret.training.data import load_splits
from adaret.training.sgda import ClassificationTask, run_sgda, total_steps
from adaret.training.trainer import TrainConfig
from tests.conftest import LABELS, tiny_bert_config


@torch.no_grad()
def _mean_cost(model, data: Encoded) -> float:
    model.train()  # the training-time expectation, as the dual sees it
    costs = [float(expected_budget(model(**b.inputs).expected_masks, b.attention_mask.float()))
             for b in data.batches(8)]
    return sum(costs) / len(costs)


def test_short_sgda_run_moves_the_budget_towards_its_target(tokenizer):
    torch.manual_seed(0)
    splits = load_splits("bbc-news")
    train_set = Encoded(splits.train.subset(list(range(0, 1780, 20)), "slice"), tokenizer, max_length=48)
    eval_set = Encoded(splits.eval.subset(list(range(16)), "slice"), tokenizer, max_length=48)
    # gates start almost fully open (C ~ 0.9); the budget is 0.4
    model = RetentionModel(encoder_from_config(tiny_bert_config()), RetentionConfig(LABELS, init_budget=0.9))
    model.freeze_backbone()
    config = TrainConfig(out="unused", budget=0.4, epochs=3, min_steps=0, lr_primal=3e-2, eval_every=1000)
    teacher = torch.zeros(len(train_set), len(LABELS))
    before = _mean_cost(model, train_set)
    result = run_sgda(model, train_set, config,
                      ClassificationTask(config, teacher, eval_set, torch.zeros(len(eval_set), len(LABELS))))
    after = _mean_cost(model, train_set)
    assert before > 0.8
    assert abs(after - 0.4) < 0.5 * abs(before - 0.4)
    assert result.duals.upper.value >= 0.0 and result.duals.lower.value >= 0.0
    assert result.steps == 3 * train_set.num_batches(8) and result.history[-1].step == result.steps


def test_step_count_has_a_floor_independent_of_the_data_size():
    assert total_steps(100, 8, 1.0, min_steps=400, max_steps=None) == 400
    assert total_steps(10_000, 8, 1.0, min_steps=400, max_steps=None) == 1250
    assert total_steps(10_000, 8, 1.0, min_steps=400, max_steps=600) == 600
    assert total_steps(100, 8, 2.0, min_steps=0, max_steps=None) == 26


@pytest.mark.slow
def test_default_adapter_training_reaches_its_targets(tmp_path):
    """The full demo-adapter recipe (about 4 minutes on 2 cores)."""
    from adaret.training.trainer import train

    checkpoint = train(TrainConfig(out=str(tmp_path / "ckpt"), budget=0.4))
    metrics = checkpoint.info.metrics
    assert metrics["hard_over_full"] >= 0.97
    assert abs(metrics["achieved_budget"] - 0.4) <= 0.02


def test_distillation_term_is_zero_at_the_teacher_and_positive_elsewhere():
    from torch.nn import functional as F

    from adaret.training.head import distillation_loss

    torch.manual_seed(0)
    logits, labels = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    ce = F.cross_entropy(logits, labels)
    assert torch.isclose(distillation_loss(logits, labels, logits.clone(), 1.0), ce)
    assert distillation_loss(logits, labels, torch.randn(4, 5), 1.0) > ce
    assert torch.isclose(distillation_loss(logits, labels, None, 1.0), ce)


def test_head_warm_up_fits_the_full_model(tokenizer, minilm_dir):
    from adaret.modeling import load_encoder
    from adaret.training.head import pooled_features
    from adaret.training.trainer import warm_up_head

    splits = load_splits("bbc-news")
    train_set = Encoded(splits.train.subset(list(range(0, 1780, 30)), "slice"), tokenizer, max_length=64)
    model = RetentionModel(load_encoder(minilm_dir), RetentionConfig(LABELS))
    model.freeze_backbone()
    features = pooled_features(model, train_set, 8)
    teacher = warm_up_head(model, features, train_set, TrainConfig(out="unused", head_epochs=200))
    assert teacher.shape == (len(train_set), 5)
    train_accuracy = float((teacher.argmax(-1) == torch.tensor(train_set.labels)).float().mean())
    assert train_accuracy > 0.9  # MiniLM's [CLS; mean] features separate BBC topics almost linearly


def test_shuffled_batches_cover_every_example_once_and_group_lengths():
    import random

    data = Encoded.__new__(Encoded)
    lengths = [random.Random(i).randint(3, 300) for i in range(1000)]
    data.ids, data.labels, data.pad_id = [[7] * n for n in lengths], [0] * 1000, 0
    epochs = [list(data.batches(8, shuffle=True, seed=seed)) for seed in (1, 2)]
    for batches in epochs:
        assert sorted(int(i) for b in batches for i in b.indices) == list(range(1000))
        padded = sum(b.input_ids.numel() for b in batches)
        assert padded < 1.1 * sum(lengths)  # random batches of these lengths pad to ~1.8x
    first = [b.indices.tolist() for b in epochs[0]]
    assert first != [b.indices.tolist() for b in epochs[1]]  # a new order every epoch


def test_cli_train_defaults_are_the_library_defaults(monkeypatch):
    """`adaret train` with no options trains exactly TrainConfig's recipe (the defaults cannot drift)."""
    from adaret import cli
    from adaret.training import trainer
    from adaret.training.config import PACKAGED_MODEL

    captured = {}

    def fake_train(config, command=None):
        captured["config"] = config
        raise KeyboardInterrupt  # stop before any work; run_guarded turns this into exit 130

    monkeypatch.setattr(trainer, "train", fake_train)
    assert cli.main(["train", "--out", "ck"]) == 130
    assert captured["config"] == TrainConfig(out="ck", model=PACKAGED_MODEL)
    cli.main(["train", "--out", "ck", "--fine-tune-backbone", "--no-refit-head", "--min-steps", "5"])
    config = captured["config"]
    assert (config.freeze_backbone, config.refit_head, config.min_steps) == (False, False, 5)


def test_convergence_notes_name_a_moving_budget_and_a_rising_accuracy():
    from dataclasses import replace

    from adaret.modeling import BudgetDuals
    from adaret.training.sgda import SgdaResult, ValidationPoint

    def result(points, final_lambda=None):
        history = [ValidationPoint(50 * (i + 1), c, acc, acc) for i, (c, acc) in enumerate(points)]
        history[-1] = replace(history[-1], dual_lambda=final_lambda)
        best = None
        for point in history:
            best = point if point.ranks_above(best, 0.4) else best
        return SgdaResult(BudgetDuals(0.4, 0.2), 0.4, 50 * len(points), best=best, history=history)

    assert result([(0.41, 0.80), (0.40, 0.81), (0.39, 0.80)]).convergence_notes(0.4, 100) == []
    moving = result([(0.40, 0.80), (0.39, 0.80), (0.35, 0.80)]).convergence_notes(0.4, 100)
    assert len(moving) == 1 and "0.350" in moving[0] and "step 100" in moving[0]
    rising = result([(0.40, 0.70), (0.40, 0.72), (0.40, 0.80)]).convergence_notes(0.4, 100)
    assert len(rising) == 1 and "rising" in rising[0]
    assert "no evaluation met the budget" in result([(0.6, 0.8)]).convergence_notes(0.4, 100)[-1]
    overshot = result([(0.5, 0.4), (0.456, 0.415), (0.322, 0.277)], final_lambda=21.1).convergence_notes(0.4, 400)
    assert "lower --lr-dual" in overshot[0] and "nearest to it (step 100, at 0.456)" in overshot[-1]
    # below the budget with the multiplier at 0 it did not overshoot: a slower dual would not help
    undershot = result([(0.37, 0.80), (0.36, 0.80), (0.35, 0.80)], final_lambda=0.0).convergence_notes(0.4, 100)
    assert "train longer: --min-steps)" in undershot[0] and "lr-dual" not in undershot[0]


def test_gates_within_the_budget_win_and_outside_it_the_nearest_does():
    from adaret.training.sgda import ValidationPoint

    def point(step, cost, accuracy):
        return ValidationPoint(step, cost, accuracy, agreement=0.0)

    assert point(1, 0.41, 0.5).ranks_above(point(2, 0.45, 0.9), 0.4)  # within beats a better one outside
    assert not point(1, 0.45, 0.9).ranks_above(point(2, 0.41, 0.5), 0.4)
    assert point(1, 0.41, 0.8).ranks_above(point(2, 0.39, 0.7), 0.4)  # within: accuracy
    assert point(1, 0.456, 0.4).ranks_above(point(2, 0.322, 0.9), 0.4)  # outside: nearness first
    assert not point(1, 0.5, 0.9).ranks_above(point(2, 0.45, 0.1), 0.4)
    assert point(1, 0.45, 0.3).ranks_above(None, 0.4)


def test_the_selected_step_is_restored_whole_when_head_and_backbone_learn_too(tokenizer):
    """Selection keeps the best evaluation's step; with --tune-head and a fine-tuned backbone (as question answering
    trains), head and backbone must come back from that step too, not stay at the last one."""
    from adaret.training.sgda import ValidationPoint

    torch.manual_seed(0)
    splits = load_splits("bbc-news")
    train_set = Encoded(splits.train.subset(list(range(0, 320, 20)), "slice"), tokenizer, max_length=32)
    model = RetentionModel(encoder_from_config(tiny_bert_config()), RetentionConfig(LABELS, init_budget=0.4))
    config = TrainConfig(out="unused", budget=0.4, min_steps=4, max_steps=4, eval_every=1, tune_head=True,
                         freeze_backbone=False, lr_primal=3e-2, lr_backbone=1e-2)
    snapshots = {}

    class FirstStepIsBest(ClassificationTask):
        def evaluate(self, model, step):
            snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}
            return ValidationPoint(step, relaxed_budget=0.4, hard_accuracy=1.0 if step == 1 else 0.0, agreement=0.0)

    teacher = torch.zeros(len(train_set), len(LABELS))
    result = run_sgda(model, train_set, config, FirstStepIsBest(config, teacher, train_set, teacher))
    assert result.best.step == 1
    final = model.state_dict()
    for name in ("head.weight", "gates.1.scorer.weight", "encoder.backbone.encoder.layer.0.output.dense.weight"):
        assert torch.equal(final[name], snapshots[1][name]), name
        assert not torch.equal(snapshots[1][name], snapshots[4][name]), f"{name} did not change after step 1"


def test_when_no_step_meets_the_budget_the_nearest_steps_gates_are_restored(tokenizer):
    """An overshooting run: the final gates are furthest from the budget, and step 2's come back."""
    from adaret.training.sgda import ValidationPoint

    torch.manual_seed(0)
    splits = load_splits("bbc-news")
    train_set = Encoded(splits.train.subset(list(range(0, 320, 20)), "slice"), tokenizer, max_length=32)
    model = RetentionModel(encoder_from_config(tiny_bert_config()), RetentionConfig(LABELS, init_budget=0.4))
    config = TrainConfig(out="unused", budget=0.4, min_steps=4, max_steps=4, eval_every=1, lr_primal=3e-2)
    costs, snapshots = {1: 0.5, 2: 0.45, 3: 0.32, 4: 0.25}, {}

    class Overshoots(ClassificationTask):
        def evaluate(self, model, step):
            snapshots[step] = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("gates.")}
            return ValidationPoint(step, relaxed_budget=costs[step], hard_accuracy=1.0 - costs[step], agreement=0.0)

    teacher = torch.zeros(len(train_set), len(LABELS))
    result = run_sgda(model, train_set, config, Overshoots(config, teacher, train_set, teacher))
    assert result.best.step == 2
    final = model.state_dict()
    assert all(torch.equal(final[name], tensor) for name, tensor in snapshots[2].items())
    assert not all(torch.equal(snapshots[2][name], tensor) for name, tensor in snapshots[4].items())


def test_the_backbone_is_fine_tuned_by_default_only_past_six_layers():
    from adaret.training.config import FROZEN_MAX_LAYERS, TrainConfig, backbone_is_frozen

    default = TrainConfig(out="x")
    assert default.freeze_backbone is None  # decided once the encoder is known
    assert backbone_is_frozen(default, FROZEN_MAX_LAYERS) and not backbone_is_frozen(default, FROZEN_MAX_LAYERS + 1)
    assert backbone_is_frozen(TrainConfig(out="x", task="summarization"), 12)  # measured frozen only
    for chosen in (True, False):  # a flag the user gave always wins
        for layers in (2, 12):
            assert backbone_is_frozen(TrainConfig(out="x", freeze_backbone=chosen), layers) is chosen


def test_a_deep_encoder_is_fine_tuned_stored_and_said_so(minilm_dir, tmp_path):
    """Trained with the defaults, a 7-layer encoder gets its backbone fine-tuned: the checkpoint records the choice,
    stores the backbone, and the run's notes say why and how to keep it frozen."""
    import json
    import shutil

    from transformers import BertModel

    from adaret.training.checkpoint import RetentionCheckpoint
    from adaret.training.trainer import run_training

    backbone = tmp_path / "deep-bert"
    torch.manual_seed(0)
    BertModel(tiny_bert_config(num_hidden_layers=7)).save_pretrained(backbone)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, backbone / name)
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": f"{word} report {i}", "label": word}) + "\n"
                            for i in range(20) for word in ("sport", "business")))
    config = TrainConfig(out=str(tmp_path / "ckpt"), model=str(backbone), data=str(data), min_steps=0, max_steps=2,
                         eval_every=1, head_epochs=2, max_length=16)
    run_training(config)
    info = RetentionCheckpoint.from_pretrained(tmp_path / "ckpt").info
    assert info.training["freeze_backbone"] is False and info.base_model["in_checkpoint"] is True
    assert any("fine-tuned, the default for an encoder of more than 6 layers (this one has 7)" in note
               for note in info.metrics["data_notes"])


def test_dual_restarts_reach_the_multipliers_gate_training_uses(tokenizer):
    splits = load_splits("bbc-news")
    train_set = Encoded(splits.train.subset(list(range(0, 160, 20)), "slice"), tokenizer, max_length=32)
    model = RetentionModel(encoder_from_config(tiny_bert_config()), RetentionConfig(LABELS, init_budget=0.4))
    teacher = torch.zeros(len(train_set), len(LABELS))
    for restarts in (False, True):
        config = TrainConfig(out="unused", budget=0.4, min_steps=1, max_steps=1, eval_every=1,
                             dual_restarts=restarts)
        result = run_sgda(model, train_set, config, ClassificationTask(config, teacher, train_set, teacher))
        assert result.duals.upper.restarts is restarts and result.duals.lower.restarts is restarts


def test_gates_with_a_position_prior_train_and_load(tiny_backbone, tmp_path):
    """--gate-positions: the prior's two weights are gate parameters, so SGDA moves them from their truncation-like
    start; the checkpoint records the setting, and --resume refuses a run that asks for the other."""
    from adaret.core.errors import AdaretError
    from adaret.modeling.gates import POSITION_INIT
    from adaret.training.checkpoint import RetentionCheckpoint
    from adaret.training.trainer import train

    settings = dict(model=str(tiny_backbone), max_train_samples=40, max_eval_samples=8, epochs=0.1, min_steps=0,
                    max_steps=4, max_length=32, head_epochs=2, eval_every=1000, max_validation=8, refit_head=False)
    out = tmp_path / "ckpt"
    train(TrainConfig(out=str(out), gate_positions=True, **settings))
    model = RetentionCheckpoint.from_pretrained(out).model
    assert model.config.gate_positions
    for gate in model.gates.values():
        assert not torch.equal(gate.position_weights.detach(), torch.tensor([POSITION_INIT, 0.0]))
    with pytest.raises(AdaretError, match="gate positions"):
        train(TrainConfig(out=str(tmp_path / "again"), resume=str(out), **settings))
