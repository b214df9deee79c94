import pytest
import torch

from adaret.modeling import RetentionConfig, RetentionModel, encoder_from_config, expected_budget
from adaret.training.batching import Encoded
from adaret.training.data import load_splits
from adaret.training.trainer import TrainConfig, _run_sgda
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
    config = TrainConfig(out="unused", budget=0.4, epochs=3, lr_primal=3e-2, eval_every=1000)
    before = _mean_cost(model, train_set)
    duals, _ = _run_sgda(model, train_set, eval_set, config)
    after = _mean_cost(model, train_set)
    assert before > 0.8
    assert abs(after - 0.4) < 0.5 * abs(before - 0.4)
    assert duals.upper.value >= 0.0 and duals.lower.value >= 0.0


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

    from adaret.training.trainer import task_loss_with_teacher

    torch.manual_seed(0)
    logits, labels = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    ce = F.cross_entropy(logits, labels)
    assert torch.isclose(task_loss_with_teacher(logits, labels, logits.clone(), 1.0), ce)
    assert task_loss_with_teacher(logits, labels, torch.randn(4, 5), 1.0) > ce
    assert torch.isclose(task_loss_with_teacher(logits, labels, None, 1.0), ce)


def test_head_warm_up_fits_the_full_model(tokenizer, minilm_dir):
    from adaret.modeling import load_encoder
    from adaret.training.trainer import warm_up_head

    splits = load_splits("bbc-news")
    train_set = Encoded(splits.train.subset(list(range(0, 1780, 30)), "slice"), tokenizer, max_length=64)
    model = RetentionModel(load_encoder(minilm_dir), RetentionConfig(LABELS))
    model.freeze_backbone()
    teacher = warm_up_head(model, train_set, TrainConfig(out="unused", head_epochs=200))
    assert teacher.shape == (len(train_set), 5)
    train_accuracy = float((teacher.argmax(-1) == torch.tensor(train_set.labels)).float().mean())
    assert train_accuracy > 0.9  # MiniLM's [CLS; mean] features separate BBC topics almost linearly
