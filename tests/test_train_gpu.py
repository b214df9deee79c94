"""Training on a CUDA GPU (``--device cuda``): question answering and summarization, on the tiny random BERT.

The GPU tests check the plumbing that only a GPU exercises (batches made on the model's device, the CPU-side
teacher and outputs, a checkpoint written from GPU weights that exports on the CPU with parity). They are marked
``gpu`` and skip without CUDA. The CPU tests check what happens where there is no GPU, and that the window batches
are made on whatever device the data is given.
"""

from __future__ import annotations

import pytest
import torch
from test_seq2seq import write_pairs
from test_train_qa import squad_file

from adaret.core.errors import AdaretError
from adaret.export import ExportConfig, run_export
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.training.config import TrainConfig
from adaret.training.question_answering import SpanData, WindowSettings, load_qa_splits, span_loss
from adaret.training.seq2seq_checkpoint import Seq2SeqCheckpoint
from adaret.training.trainer import train

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def qa_config(tmp_path, backbone, device: str) -> TrainConfig:
    return TrainConfig(out=str(tmp_path / "ck"), model=str(backbone), data=str(squad_file(tmp_path / "squad.json")),
                       task="question-answering", max_length=48, doc_stride=16, max_query_length=12, min_steps=6,
                       max_steps=6, eval_every=3, batch_size=4, budget=0.5, device=device)


def test_span_batches_are_made_on_the_datas_device_and_index_the_cpu_teacher(tmp_path, tiny_backbone):
    from adaret.modeling.hf_loading import load_tokenizer

    examples, _, _ = load_qa_splits(str(squad_file(tmp_path / "s.json")), seed=0)
    data = SpanData(examples[:6], load_tokenizer(tiny_backbone), WindowSettings(48, 16, 12, 30), device="meta")
    batch = next(data.batches(4))
    assert {t.device.type for t in (batch.input_ids, batch.attention_mask, batch.token_type_ids,
                                    batch.start_positions, batch.end_positions)} == {"meta"}
    assert batch.indices.device.type == "cpu"  # rows of the CPU-side teacher and outputs


def test_span_loss_moves_the_teachers_rows_to_the_logits_device(tmp_path, tiny_backbone):
    from adaret.modeling.hf_loading import load_tokenizer

    examples, _, _ = load_qa_splits(str(squad_file(tmp_path / "s.json")), seed=0)
    data = SpanData(examples[:6], load_tokenizer(tiny_backbone), WindowSettings(48, 16, 12, 30), device="meta")
    batch = next(data.batches(4))
    logits = torch.zeros(*batch.input_ids.shape, 2, device="meta")
    teacher = torch.zeros(len(data), 48, 2)  # on the CPU, as training keeps it
    assert span_loss(logits, batch, teacher[batch.indices], distill_weight=1.0).device.type == "meta"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_one_clear_error(tmp_path, tiny_backbone):
    with pytest.raises(AdaretError, match=r"--device cuda: no CUDA device"):
        train(qa_config(tmp_path, tiny_backbone, "cuda"))


def test_classification_refuses_a_device():
    with pytest.raises(AdaretError, match="classification trains on the CPU"):
        TrainConfig(out="x", device="cuda").validate()


@pytest.mark.gpu
@needs_cuda
def test_question_answering_trains_on_cuda_and_exports_on_the_cpu(tmp_path, tiny_backbone):
    train(qa_config(tmp_path, tiny_backbone, "cuda"))
    checkpoint = RetentionCheckpoint.from_pretrained(tmp_path / "ck")
    assert all(p.device.type == "cpu" for p in checkpoint.model.parameters())
    metrics = checkpoint.info.metrics
    assert metrics["sgda_steps"] == 6 and metrics["hard_finetune_steps"] > 0 and 0.0 <= metrics["f1_hard"] <= 100.0
    result = run_export(ExportConfig(budget=0.5, checkpoint=str(tmp_path / "ck"), out=str(tmp_path / "ex"),
                                     parity_lengths=(9, 48)))
    assert all(g.parity.passed for g in result.graphs)


@pytest.mark.gpu
@needs_cuda
def test_summarization_trains_on_cuda_and_reloads_on_the_cpu(tmp_path, tiny_backbone):
    config = TrainConfig(out=str(tmp_path / "ck"), model=str(tiny_backbone), task="summarization",
                         data=str(write_pairs(tmp_path / "pairs.jsonl")), budget=0.5, max_length=32,
                         max_source_tokens=80, max_target_tokens=8, min_steps=6, eval_every=3, batch_size=4,
                         decoder_epochs=1, refit_epochs=1, max_validation=4, device="cuda")
    train(config)
    checkpoint = Seq2SeqCheckpoint.from_pretrained(tmp_path / "ck", "eager")
    assert all(p.device.type == "cpu" for p in checkpoint.model.parameters())
    assert checkpoint.info.metrics["sgda_steps"] == 6 and set(checkpoint.info.metrics["rouge_hard"]) >= {"rougeL"}


def test_summarization_on_cuda_switches_the_memory_efficient_kernel_off_and_back():
    from adaret.training.trainer import cuda_training_settings

    before = torch.backends.cuda.mem_efficient_sdp_enabled()
    precision = torch.get_float32_matmul_precision()
    with cuda_training_settings(TrainConfig(out="x", task="summarization", device="cuda")):
        assert not torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.backends.cuda.mem_efficient_sdp_enabled() == before
    assert torch.get_float32_matmul_precision() == precision
    with cuda_training_settings(TrainConfig(out="x", task="question-answering", device="cuda")):
        assert torch.backends.cuda.mem_efficient_sdp_enabled() == before  # question answering keeps the kernel
    with cuda_training_settings(TrainConfig(out="x", task="summarization", device="cpu")):
        assert torch.backends.cuda.mem_efficient_sdp_enabled() == before
        assert torch.get_float32_matmul_precision() == precision
