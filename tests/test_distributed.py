"""Multi-process gate training (``adaret.training.distributed``): two gloo processes against one process that sees
the same global batches.

The two runs draw their Hard-Concrete noise differently (each rank has its own stream), so they are equal only in
distribution. The equality test pins the noise (``eps`` a hair below 1/2 clamps every draw to u = 1/2), which
leaves the two runs computing the same sums in a different order: per rank, then across ranks in the all-reduce,
against one pass over the whole batch. That is float32 rounding, about 1e-7 relative per operation, carried
through a few AdamW steps; ``TOLERANCE`` allows a hundred times that.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import LABELS, make_tiny_model

from adaret.core.errors import AdaretError
from adaret.training import distributed
from adaret.training.batching import Encoded
from adaret.training.config import PACKAGED_MODEL, TrainConfig
from adaret.training.data import TextDataset
from adaret.training.sgda import ClassificationTask, run_sgda

WORLD = 2
PER_RANK = 2
# In global batches of 4, the last batch of an epoch of 11 examples has 3 rows, split 2 and 1 (the ranks' losses are
# weighted 2/3 and 1/3); of 13 examples, a single row, which leaves rank 1 without rows (it runs one at weight zero).
SIZES = (11, 13)
VALIDATION = 4
PINNED_NOISE = {"eps": 0.5 - 1e-7}
TOLERANCE = 1e-5
WORDS = ["the", "market", "rose", "as", "minister", "spoke", "about", "film", "music", "and", "final", "match",
         "of", "season", "while", "band", "played"]


def _data(size: int) -> tuple[Encoded, Encoded]:
    from transformers import AutoTokenizer

    from adaret.training.checkpoint import resolve_model_source

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_source(PACKAGED_MODEL)), local_files_only=True)
    rng = random.Random(size)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(3, 40))) for _ in range(size + VALIDATION)]
    labels = [rng.randrange(len(LABELS)) for _ in texts]
    dataset = TextDataset("synthetic", texts, labels, LABELS)
    return (Encoded(dataset.subset(list(range(size)), "train"), tokenizer, max_length=64),
            Encoded(dataset.subset(list(range(size, len(texts))), "validation"), tokenizer, max_length=64))


def _train(size: int, batch_size: int) -> dict:
    train_set, validation = _data(size)
    # Gates start almost open (C ~ 0.9 against a budget of 0.4), so lambda moves from the first step.
    model = make_tiny_model(hard_concrete=PINNED_NOISE, init_budget=0.9)
    model.freeze_backbone()
    config = TrainConfig(out="unused", budget=0.4, batch_size=batch_size, epochs=2, min_steps=0, lr_primal=3e-2,
                         eval_every=1000)
    teacher = torch.randn(len(train_set), len(LABELS), generator=torch.Generator().manual_seed(1))
    task = ClassificationTask(config, teacher, validation, torch.zeros(len(validation), len(LABELS)))
    result = run_sgda(model, train_set, config, task)
    return {"gates": model.gates.state_dict(), "lambda": result.duals.upper.value, "mu": result.duals.lower.value,
            "steps": result.steps, "history": result.history}


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.save({size: _train(size, PER_RANK) for size in SIZES}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]


@pytest.mark.parametrize("size", SIZES)
def test_two_processes_match_one_process_with_the_doubled_batch(two_processes, size):
    torch.set_num_threads(1)
    single = _train(size, PER_RANK * WORLD)
    rank0 = two_processes[0][size]
    assert rank0["steps"] == single["steps"] == 2 * -(-size // (PER_RANK * WORLD))  # 2 epochs of global batches
    worst = max(float((rank0["gates"][k] - single["gates"][k]).abs().max()) for k in single["gates"])
    print(f"{size} examples: max |gate parameter difference| {worst:.2e}, |lambda difference| "
          f"{abs(rank0['lambda'] - single['lambda']):.2e} (lambda {single['lambda']:.4f}), |mu difference| "
          f"{abs(rank0['mu'] - single['mu']):.2e} (mu {single['mu']:.4f})")
    assert worst <= TOLERANCE
    assert single["lambda"] > 0.0  # the comparison of the multipliers means something
    assert rank0["lambda"] == pytest.approx(single["lambda"], rel=TOLERANCE, abs=TOLERANCE)
    assert rank0["mu"] == pytest.approx(single["mu"], rel=TOLERANCE, abs=TOLERANCE)


@pytest.mark.parametrize("size", SIZES)
def test_every_rank_ends_with_the_same_gates_multipliers_and_decisions(two_processes, size):
    rank0, rank1 = (ranks[size] for ranks in two_processes)
    for name, tensor in rank0["gates"].items():
        assert torch.equal(tensor, rank1["gates"][name]), name
    assert (rank0["lambda"], rank0["mu"]) == (rank1["lambda"], rank1["mu"])
    assert rank0["history"] == rank1["history"]  # evaluated on rank 0, broadcast


def test_a_single_process_is_left_alone(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.session():
        assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.is_main()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.launched()


def test_a_partial_launch_environment_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(AdaretError, match="start multi-process training with torchrun"):
        distributed.launched()


# --- adaret train under torchrun, and --resume ----------------------------------------------------------------


@pytest.fixture(scope="module")
def torchrun_checkpoint(tmp_path_factory, tiny_backbone) -> Path:
    out = tmp_path_factory.mktemp("torchrun") / "ck"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
               "-m", "adaret.cli", "train", "--model", str(tiny_backbone), "--out", str(out),
               "--max-train-samples", "40", "--max-eval-samples", "8", "--max-validation", "8", "--max-length", "32",
               "--min-steps", "0", "--max-steps", "4", "--eval-every", "2", "--head-epochs", "2"]
    done = subprocess.run(command, env=env | {"OMP_NUM_THREADS": "1"}, cwd=out.parent, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_torchrun_trains_and_rank_0_alone_writes_the_checkpoint(torchrun_checkpoint):
    from adaret.training.checkpoint import RetentionCheckpoint

    checkpoint = RetentionCheckpoint.from_pretrained(torchrun_checkpoint)
    metrics = checkpoint.info.metrics
    assert metrics["processes"] == WORLD
    assert metrics["sgda_steps"] == 3  # 36 training examples in global batches of 2 x 8
    selected = next(p for p in metrics["validation_history"] if p["step"] == metrics["gate_duals"]["step"])
    assert metrics["gate_duals"]["lambda"] == selected["dual_lambda"]
    assert sorted(p.name for p in torchrun_checkpoint.iterdir()) == ["config.json", "model.safetensors",
                                                                     "tokenizer.json", "tokenizer_config.json"]


def test_resume_starts_from_the_checkpoint_gates_head_and_multipliers(torchrun_checkpoint, tiny_backbone):
    from adaret.modeling import RetentionConfig, RetentionModel, load_encoder
    from adaret.training.checkpoint import RetentionCheckpoint
    from adaret.training.trainer import resume_from, resumed_duals

    saved = RetentionCheckpoint.from_pretrained(torchrun_checkpoint)
    labels = saved.info.label_names
    config = TrainConfig(out="unused", model=str(tiny_backbone), resume=str(torchrun_checkpoint))
    model = RetentionModel(load_encoder(tiny_backbone), RetentionConfig(label_names=labels))
    model.freeze_backbone()
    resumed = resume_from(config, model, tiny_backbone, labels)
    for name, tensor in saved.model.gates.state_dict().items():
        assert torch.equal(model.gates.state_dict()[name], tensor), name
    assert torch.equal(model.head.weight, saved.reference_head.weight)  # the head gate training ran with
    duals = resumed_duals(config, resumed)
    gate_duals = json.loads((torchrun_checkpoint / "config.json").read_text())["metrics"]["gate_duals"]
    assert (duals.upper.value, duals.lower.value) == (gate_duals["lambda"], gate_duals["mu"])
    with pytest.raises(AdaretError, match=r"its labels .* are not those of --data"):
        resume_from(config, model, tiny_backbone, ["yes", "no"])
    with pytest.raises(AdaretError, match="--resume continues classification"):
        TrainConfig(out="x", resume=str(torchrun_checkpoint), task="question-answering").validate()
