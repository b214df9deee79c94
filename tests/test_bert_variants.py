"""DistilBERT and ELECTRA checkpoints, the two BERT variants users most often deploy, through the same stages as
BERT: the adapter computes what Hugging Face's own forward computes, ``adaret train --model DIR`` trains on a
user's directory, and the export passes parity in both forms (with the graph passes on one of them).

Tiny random models with MiniLM's WordPiece tokenizer (both families use BERT's vocabulary and special tokens).
DistilBERT has no token types, so its graphs take ``input_ids`` and ``attention_mask`` only; ELECTRA takes BERT's
three inputs and, when it embeds narrower than it computes, projects its embeddings up first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import BERT_VOCAB, LABELS
from test_export_architectures import (
    DYNAMIC_LENGTHS,
    MAX_LEN,
    PARITY_BATCHES,
    export_dynamic,
    export_static,
    topm_reference,
)
from transformers import AutoModel, DistilBertConfig, ElectraConfig

from adaret.core.dummy_inputs import dummy_inputs
from adaret.export.parity import check_parity
from adaret.modeling import RetentionConfig, RetentionModel, encoder_from_config
from adaret.training.checkpoint import CheckpointInfo, RetentionCheckpoint
from adaret.training.data import load_splits

CONFIGS = {
    "distilbert": lambda: DistilBertConfig(vocab_size=30522, dim=32, n_layers=4, n_heads=4, hidden_dim=64,
                                           max_position_embeddings=MAX_LEN),
    # embedding_size < hidden_size: the projection ELECTRA-small has
    "electra": lambda: ElectraConfig(vocab_size=30522, embedding_size=16, hidden_size=32, num_hidden_layers=4,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=MAX_LEN),
}
INPUTS = {"distilbert": ["input_ids", "attention_mask"],
          "electra": ["input_ids", "attention_mask", "token_type_ids"]}
FRACTIONS = [1.0, 0.6, 0.35, 0.2]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def kind(request) -> str:
    return request.param


def _model(kind: str) -> RetentionModel:
    torch.manual_seed(0)
    model = RetentionModel(encoder_from_config(CONFIGS[kind](), "eager"), RetentionConfig(label_names=LABELS))
    for gate in model.gates.values():  # spread the scores so that token choice is not a near-tie
        torch.nn.init.normal_(gate.scorer.weight, std=1.0)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint_dir(kind, tokenizer, tmp_path_factory) -> Path:
    model = _model(kind)
    config = model.encoder.config
    info = CheckpointInfo(
        base_model={"source": f"tiny-random-{kind}", "model_type": kind, "name": f"tiny-random-{kind}",
                    "in_checkpoint": True, "weights_sha256": None,
                    "config": config.to_diff_dict() | {"model_type": kind}},
        retention={}, training={"budget": 0.4, "seed": 0},
        schedule={"keep_fractions": FRACTIONS, "measured_on": "synthetic", "budget": sum(FRACTIONS) / 4})
    path = tmp_path_factory.mktemp(kind) / "ckpt"
    RetentionCheckpoint(model, tokenizer, info).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def dynamic_export(kind, checkpoint_dir):
    return export_dynamic(checkpoint_dir, optimized=kind == "distilbert")  # the graph passes on one of the two


@pytest.fixture(scope="module")
def static_export(checkpoint_dir):
    return export_static(checkpoint_dir)


@pytest.fixture(scope="module")
def reference(checkpoint_dir, dynamic_export):
    return topm_reference(checkpoint_dir, dynamic_export)


def test_the_adapter_computes_what_hugging_face_computes(kind):
    encoder = _model(kind).encoder
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1000, 30000, (3, 23), generator=generator)
    ids[:, 0] = BERT_VOCAB.cls_id
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    mask[2, 5:] = 0
    bias = (1.0 - mask.float()) * torch.finfo(torch.float32).min
    with torch.no_grad():
        want = encoder.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        plain = with_attention = encoder.embed(ids, torch.zeros_like(ids))
        for index in range(encoder.num_layers):
            plain = encoder.run_layer(index, plain, bias)
            with_attention, probabilities = encoder.run_layer_with_attention(index, with_attention, bias)
    real = mask.bool()
    # The same modules on the same inputs: only the order of float operations may differ.
    assert (plain - want)[real].abs().max() <= 1e-5
    assert (with_attention - want)[real].abs().max() <= 1e-5
    assert probabilities.shape == (3, 4, 23, 23)
    assert torch.allclose(probabilities.sum(-1), torch.ones(3, 4, 23), atol=1e-5)


def test_export_passes_parity_in_both_forms(kind, dynamic_export, static_export):
    for graph in [*dynamic_export.graphs, *static_export.graphs]:
        assert graph.parity.passed, graph.path.name
        assert graph.parity.max_abs_diff <= 1e-4 and graph.parity.positions_identical
        assert {c.batch for c in graph.parity.cases} == set(PARITY_BATCHES)
        session = ort.InferenceSession(str(graph.path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == INPUTS[kind]
    assert {c.seq_len for c in dynamic_export.graphs[0].parity.cases} == set(DYNAMIC_LENGTHS)


def test_dynamic_graph_matches_pytorch_on_fresh_inputs(reference, dynamic_export):
    session = ort.InferenceSession(str(dynamic_export.graphs[0].path), providers=["CPUExecutionProvider"])
    shapes = [(1, 2), (2, 3), (5, 17), (4, 63), (3, 99), (2, 127), (6, MAX_LEN)]
    for seed in (1, 2):
        report = check_parity(reference, dynamic_export.graphs[0].path, shapes, BERT_VOCAB, seed=seed,
                              session=session)
        assert report.positions_identical and report.max_abs_diff <= 1e-4, seed


@pytest.mark.parametrize("kind", ["distilbert"], indirect=True)  # the graph passes run on one architecture
def test_graph_passes_keep_parity(kind, dynamic_export, reference):
    optimized = dynamic_export.graphs[0].optimized
    assert optimized is not None and optimized.output.is_file()
    assert optimized.nodes_after < optimized.nodes_before
    session = ort.InferenceSession(str(optimized.output), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    generator = np.random.default_rng(5)
    for batch, n in [(1, 2), (3, 37), (8, 101), (2, MAX_LEN)]:
        feeds = dummy_inputs(batch, n, BERT_VOCAB, generator, names=INPUTS[kind])
        got = dict(zip(names, session.run(names, feeds), strict=True))
        with torch.no_grad():
            want = reference(*(torch.from_numpy(v) for v in feeds.values()))
        assert np.abs(got["logits"] - want[0].numpy()).max() <= 1e-4, (batch, n)


def test_runtime_classifies_texts(dynamic_export, static_export):
    import adaret.runtime

    for export in (dynamic_export, static_export):
        session = adaret.runtime.load(export.config.out_dir)
        predictions = session.classify(["The team won the match", "Shares fell after a profit warning"] * 2)
        assert len(predictions) == 4 and all(p.label in LABELS for p in predictions)


def _user_directory(kind: str, minilm_dir: Path, path: Path) -> Path:
    """A Hugging Face directory of this family with MiniLM's tokenizer: what a user passes as --model."""
    AutoModel.from_config(CONFIGS[kind]()).save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, path / name)
    return path


def test_summarization_refuses_a_decoder_it_cannot_warm_start(minilm_dir, tmp_path):
    from adaret.core.errors import AdaretError
    from adaret.training.trainer import TrainConfig, run_training

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"text": f"long text {i} " * 5, "summary": f"short {i}"}) + "\n"
                            for i in range(20)))
    config = TrainConfig(out=str(tmp_path / "ckpt"), task="summarization", data=str(data),
                         model=str(_user_directory("distilbert", minilm_dir, tmp_path / "my-distilbert")))
    with pytest.raises(AdaretError, match=r"warm-starts its decoder from a BERT checkpoint; .* is a distilbert"):
        run_training(config)


def test_train_takes_a_user_directory_of_this_family(kind, minilm_dir, tmp_path):
    """``adaret train --model DIR`` on a Hugging Face directory of this family, as a user's own checkpoint."""
    backbone = _user_directory(kind, minilm_dir, tmp_path / f"my-{kind}")
    data = tmp_path / "texts.jsonl"
    rows = [{"text": f"{word} report number {i} about the {word} market", "label": label}
            for i in range(24) for word, label in (("football", "sport"), ("shares", "business"))]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "ckpt"
    result = subprocess.run(
        [sys.executable, "-m", "adaret.cli", "train", "--model", str(backbone), "--data", str(data), "--out", str(out),
         "--min-steps", "0", "--max-steps", "4", "--eval-every", "2", "--head-epochs", "2", "--max-length", "32"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    # the summary says how many held-out examples its accuracies rest on
    held_out = len(load_splits(str(data)).eval)
    assert f"accuracy on {held_out} held-out examples (one is {100 / held_out:.2g} points)" in result.stdout
    checkpoint = RetentionCheckpoint.from_pretrained(out)
    assert checkpoint.info.base_model["model_type"] == kind
    assert type(checkpoint.model.encoder).__name__ == {"distilbert": "DistilBertAdapter",
                                                       "electra": "ElectraAdapter"}[kind]
