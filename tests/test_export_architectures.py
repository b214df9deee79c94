"""Export parity beyond BERT: tiny random RoBERTa, XLM-R and MPNet checkpoints with offline RoBERTa-style tokenizers.

The three families take no token types, start CLS/SEP/PAD at 0/2/1 and derive position ids from padding
(``padding_idx + 1`` onwards), so a 128-token text needs ``max_position_embeddings`` of 130. MPNet also adds one
relative-position bias to every layer's attention logits, which retention must rebuild for the kept tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import LABELS
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import MPNetConfig, PreTrainedTokenizerFast, RobertaConfig, XLMRobertaConfig

from adaret.core.dummy_inputs import Vocabulary, dummy_inputs
from adaret.core.metadata import ExportMetadata
from adaret.export import ExportConfig, TopMInference, run_export
from adaret.export.parity import check_parity
from adaret.modeling import RetentionConfig, RetentionModel, encoder_from_config
from adaret.training.checkpoint import CheckpointInfo, RetentionCheckpoint

MAX_LEN = 128  # tokens per text; RoBERTa's positions start at padding_idx + 1 = 2
CONFIGS = {"roberta": RobertaConfig, "xlm-roberta": XLMRobertaConfig, "mpnet": MPNetConfig}
OPTIMIZED = ("roberta", "mpnet")  # the kinds whose dynamic export also runs the graph passes
# What the fusions must leave in each optimised graph. MPNet's position bias reaches the logits in the one Add the
# attention fusion matches (MPNetAdapter._bias), so its attention fuses too.
FUSED = {"roberta": {"MultiHeadAttention", "Attention", "SkipLayerNormalization"},
         "mpnet": {"MultiHeadAttention", "Attention"}}
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in RoBERTa and XLM-R
WORDS = ["the", "a", "of", "to", "and", "in", "is", "for", "on", "that", "with", "match", "goals", "team", "minister",
         "election", "vote", "film", "music", "shares", "market", "profit", "phone", "software", "chip", "league"]
VOCAB_SIZE = 1200
PARITY_BATCHES = (1, 3, 8)
DYNAMIC_LENGTHS = (2, 9, 37, 101, MAX_LEN)
STATIC_LENGTHS = (MAX_LEN,)  # the longest bucket: where the position-id offset would overflow
TEXTS = ["The team won the match with two late goals", "Shares in the bank fell after a profit warning",
         "the minister called an election", "music " * 300]  # the last one is cut to MAX_LEN tokens


def roberta_style_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with RoBERTa's special tokens, built offline (no hub access)."""
    filler = [f"w{i}" for i in range(VOCAB_SIZE - len(SPECIALS) - len(WORDS) - 1)]
    vocab = {token: i for i, token in enumerate([*SPECIALS, *WORDS, *filler, "<mask>"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "roberta":
        tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    else:  # XLM-R's and MPNet's tokenizer.json use a template
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                   model_max_length=MAX_LEN)


def save_checkpoint(path: Path, kind: str) -> Path:
    tokenizer = roberta_style_tokenizer(kind)
    config = CONFIGS[kind](vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=MAX_LEN + 2, type_vocab_size=1,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    model = RetentionModel(encoder_from_config(config, "eager"), RetentionConfig(label_names=LABELS))
    for gate in model.gates.values():  # spread the scores so that token choice is not a near-tie
        torch.nn.init.normal_(gate.scorer.weight, std=1.0)
    fractions = [1.0, 0.6, 0.35, 0.2]
    info = CheckpointInfo(
        base_model={"source": f"tiny-random-{kind}", "model_type": kind, "name": f"tiny-random-{kind}",
                    "in_checkpoint": True, "weights_sha256": None,
                    "config": config.to_diff_dict() | {"model_type": kind}},
        retention={}, training={"budget": 0.4, "seed": 0},
        schedule={"keep_fractions": fractions, "measured_on": "synthetic", "budget": sum(fractions) / 4},
    )
    RetentionCheckpoint(model.eval(), tokenizer, info).save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def checkpoint_dir(kind, tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp(kind) / "ckpt", kind)


def export_dynamic(checkpoint_dir: Path, optimized: bool):
    """The dynamic export at 0.5 with kept positions, parity-checked at ``DYNAMIC_LENGTHS``; with the graph passes
    when ``optimized`` (also used by ``test_bert_variants``)."""
    optimizer = None
    if optimized:
        from adaret.graph_passes.pipeline import optimize as optimizer
    config = ExportConfig(budget=0.5, checkpoint=str(checkpoint_dir), out=str(checkpoint_dir.parent / "dynamic"),
                          with_positions=True, seq_lens=(64, MAX_LEN), parity_batches=PARITY_BATCHES,
                          parity_lengths=DYNAMIC_LENGTHS)
    return run_export(config, optimizer)


def export_static(checkpoint_dir: Path):
    config = ExportConfig(budget=0.5, checkpoint=str(checkpoint_dir), out=str(checkpoint_dir.parent / "static"),
                          static=True, with_positions=True, seq_lens=STATIC_LENGTHS, parity_batches=PARITY_BATCHES)
    return run_export(config)


@pytest.fixture(scope="module")
def dynamic_export(kind, checkpoint_dir):
    return export_dynamic(checkpoint_dir, optimized=kind in OPTIMIZED)


@pytest.fixture(scope="module")
def static_export(checkpoint_dir):
    return export_static(checkpoint_dir)


def topm_reference(checkpoint_dir: Path, export) -> TopMInference:
    """The PyTorch reference of an export: the checkpoint at the export's schedule, with kept positions."""
    checkpoint = RetentionCheckpoint.from_pretrained(checkpoint_dir, attn_implementation="eager")
    return TopMInference(checkpoint.model, export.schedule, with_positions=True).eval()


@pytest.fixture(scope="module")
def reference(checkpoint_dir, dynamic_export) -> TopMInference:
    return topm_reference(checkpoint_dir, dynamic_export)


@pytest.fixture(scope="module")
def vocab(checkpoint_dir) -> Vocabulary:
    return Vocabulary.from_tokenizer_file(checkpoint_dir / "tokenizer.json")


def _graphs(*exports):
    return [graph for export in exports for graph in export.graphs]


def test_export_passes_parity_in_both_forms(dynamic_export, static_export):
    for graph in _graphs(dynamic_export, static_export):
        assert graph.parity.passed, graph.path.name
        assert graph.parity.max_abs_diff <= 1e-4 and graph.parity.positions_identical
        assert {c.batch for c in graph.parity.cases} == set(PARITY_BATCHES)
    assert {c.seq_len for c in dynamic_export.graphs[0].parity.cases} == set(DYNAMIC_LENGTHS)
    assert [g.seq_len for g in static_export.graphs] == list(STATIC_LENGTHS)


@pytest.mark.parametrize("kind", ["mpnet"], indirect=True)
def test_mpnet_layers_compute_what_hugging_face_computes(kind, checkpoint_dir):
    encoder = RetentionCheckpoint.from_pretrained(checkpoint_dir).model.encoder.eval()
    assert encoder.config._attn_implementation == "eager"  # MPNet has no SDPA path, whatever was asked
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(4, VOCAB_SIZE - 1, (3, 71), generator=generator)
    ids[:, 0] = 0
    mask = torch.ones_like(ids)
    mask[1, 50:] = 0
    mask[2, 6:] = 0
    ids[mask == 0] = 1
    bias = (1.0 - mask.float()) * torch.finfo(torch.float32).min
    positions = torch.arange(71).expand(3, 71)
    with torch.no_grad():
        want = encoder.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        context = encoder.layer_context(positions)
        plain = with_attention = encoder.embed(ids, None)
        for index in range(encoder.num_layers):
            plain = encoder.run_layer(index, plain, bias, context)
            with_attention, _ = encoder.run_layer_with_attention(index, with_attention, bias, context)
        # distances of 0 to 70 cross every bucket boundary up to MPNet's max_distance of 128
        kept = torch.sort(torch.randperm(71, generator=generator)[:29]).values.expand(3, 29)
        rebuilt = encoder.layer_context(kept)
    real = mask.bool()
    assert (plain - want)[real].abs().max() <= 1e-5  # the same modules: only float order may differ
    assert (with_attention - want)[real].abs().max() <= 1e-5
    # the bias rebuilt from kept positions is the full one's rows and columns of those positions, exactly
    sliced = context[:, :, kept[0]][:, :, :, kept[0]]
    assert torch.equal(rebuilt, sliced)


@pytest.mark.parametrize("kind", ["mpnet"], indirect=True)
def test_mpnet_training_path_rebuilds_the_bias_for_the_tokens_it_gathers(kind, checkpoint_dir):
    """Training runs each layer on the live tokens only (gathered, then scattered back); the bias must follow them.
    With the gates off that is the full model, which the top-M path at budget 1.0 computes without any gather.
    Row 0 has a hole in its mask, so its live tokens are not contiguous: a bias built from the gathered slots
    instead of the original positions would put tokens 4 and 12 one apart."""
    from adaret.modeling import KeepSchedule

    model = RetentionCheckpoint.from_pretrained(checkpoint_dir).model.eval()
    ids = torch.randint(4, VOCAB_SIZE - 1, (3, 40), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[0, 5:12] = 0
    mask[1, 29:] = 0
    mask[2, 3:] = 0
    ids[:, 0] = 0
    with torch.no_grad():
        relaxed = model(ids, mask, mode="full").logits
        hard = model(ids, mask, mode="hard", schedule=KeepSchedule.from_fractions([1.0] * 4)).logits
    assert (relaxed - hard).abs().max() <= 1e-5  # the same sums over differently gathered rows


def test_dynamic_graph_matches_pytorch_on_fresh_inputs(reference, dynamic_export, vocab):
    session = ort.InferenceSession(str(dynamic_export.graphs[0].path), providers=["CPUExecutionProvider"])
    shapes = [(1, 2), (2, 3), (5, 17), (4, 63), (3, 99), (2, 127), (6, MAX_LEN)]
    for seed in (1, 2):
        report = check_parity(reference, dynamic_export.graphs[0].path, shapes, vocab, seed=seed, session=session)
        assert report.positions_identical and report.max_abs_diff <= 1e-4, seed


def test_graphs_take_ids_and_mask_only(dynamic_export, static_export):
    for graph in _graphs(dynamic_export, static_export):
        model = onnx.load(str(graph.path))
        assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
        assert ExportMetadata.from_model(model).input_names == ["input_ids", "attention_mask"]


def test_metadata_records_the_tokenizers_vocabulary(dynamic_export, static_export, vocab):
    expected = {"size": VOCAB_SIZE, "cls_id": 0, "sep_id": 2, "pad_id": 1}
    assert vocab.as_dict() == expected
    for graph in _graphs(dynamic_export, static_export):
        meta = ExportMetadata.from_model(onnx.load(str(graph.path)))
        assert meta.vocabulary == expected
        assert meta.max_positions == MAX_LEN  # the usable length, not max_position_embeddings (130)


@pytest.mark.parametrize("form", ["dynamic", "static"])
def test_runtime_classifies_texts(form, dynamic_export, static_export, kind):
    import adaret.runtime

    export = dynamic_export if form == "dynamic" else static_export
    session = adaret.runtime.load(export.config.out_dir)
    assert session.vocabulary.as_dict() == {"size": VOCAB_SIZE, "cls_id": 0, "sep_id": 2, "pad_id": 1}
    with pytest.warns(adaret.runtime.TruncationWarning, match=f"truncated to the first {MAX_LEN}"):
        predictions = session.classify(TEXTS, batch_size=3)  # the last text is cut to the usable length
    assert len(predictions) == len(TEXTS) and all(p.label in LABELS for p in predictions)
    assert predictions[-1].truncated and not any(p.truncated for p in predictions[:-1])
    assert all(np.isfinite(list(p.scores.values())).all() for p in predictions)


@pytest.mark.parametrize("kind", OPTIMIZED, indirect=True)
def test_graph_passes_keep_parity(kind, dynamic_export, reference, vocab):
    graph = dynamic_export.graphs[0]
    optimized = graph.optimized
    assert optimized is not None and optimized.output.is_file()
    assert optimized.nodes_after < optimized.nodes_before
    ops = {node.op_type for node in onnx.load(str(optimized.output)).graph.node}
    assert ops & FUSED[kind], sorted(ops)
    session = ort.InferenceSession(str(optimized.output), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    generator = np.random.default_rng(5)
    for batch, n in [(1, 2), (3, 37), (8, 101), (2, MAX_LEN)]:
        feeds = dummy_inputs(batch, n, vocab, generator, names=["input_ids", "attention_mask"])
        got = dict(zip(names, session.run(names, feeds), strict=True))
        with torch.no_grad():
            want = reference(*(torch.from_numpy(v) for v in feeds.values()))
        assert np.abs(got["logits"] - want[0].numpy()).max() <= 1e-4, (batch, n)
        for name, positions in zip(reference.output_names[1:], want[1:], strict=True):
            # order-restore-elimination may leave the kept set in score order: compare sets
            assert np.array_equal(np.sort(got[name], axis=1), np.sort(positions.numpy(), axis=1)), (name, n)
