"""The summarization model: the hand-written decoder step against Hugging Face's, the compact memory, chunking, the
budget over chunks, the checkpoint, and training end to end on a tiny random BERT (plumbing, not quality)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_bert_config
from transformers import BertLMHeadModel

from adaret.core.chunks import chunk_ids
from adaret.core.summaries import SummaryPair
from adaret.modeling import KeepSchedule, RetentionConfig, RetentionModel, encoder_from_config, expected_budget
from adaret.modeling.seq2seq import MemoryDecoder, RetentionSeq2Seq, decoder_from_config, memory_bias
from adaret.training.config import TrainConfig
from adaret.training.seq2seq_checkpoint import ChunkSettings, Seq2SeqCheckpoint, is_seq2seq_checkpoint
from adaret.training.summarization import IGNORE_INDEX, SpecialTokens, SummaryData
from adaret.training.trainer import train

SCHEDULE = KeepSchedule.from_fractions([1.0, 0.6, 0.35, 0.2])


def make_seq2seq(seed: int = 0, memory: str = "compact") -> RetentionSeq2Seq:
    torch.manual_seed(seed)
    retention = RetentionModel(encoder_from_config(tiny_bert_config(), "eager"),
                               RetentionConfig(label_names=[], task="summarization", memory=memory))
    for gate in retention.gates.values():  # spread the scores so that token choice is not a near-tie
        torch.nn.init.normal_(gate.scorer.weight, std=1.0)
    return RetentionSeq2Seq(retention, decoder_from_config(tiny_bert_config())).eval()


def random_documents(batch: int, chunks: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, chunks, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[-1, -1, length // 2:] = 0  # a short last chunk
    if chunks > 1:
        mask[0, -1] = 0  # a document with one chunk fewer: an all-padding row
    ids[..., 0] = 101
    return ids * mask, mask


@pytest.fixture(scope="module")
def hf_decoder() -> BertLMHeadModel:
    torch.manual_seed(1)
    config = tiny_bert_config(is_decoder=True, add_cross_attention=True)
    config._attn_implementation = "eager"
    return BertLMHeadModel(config).eval()


def test_decoder_step_matches_hugging_face_forward(hf_decoder):
    decoder = MemoryDecoder(hf_decoder)
    memory, mask = torch.randn(3, 11, 32), torch.ones(3, 11)
    mask[1, 7:] = 0
    tokens = torch.randint(0, 30522, (3, 6))
    expected = hf_decoder(input_ids=tokens, encoder_hidden_states=memory, encoder_attention_mask=mask.long()).logits
    logits, _ = decoder(tokens, memory_bias(mask), decoder.cross_cache(memory))
    assert torch.allclose(logits, expected, atol=1e-5)  # the same float32 operations, in another order


def test_cached_steps_match_one_pass(hf_decoder):
    decoder = MemoryDecoder(hf_decoder)
    memory, mask = torch.randn(2, 9, 32), torch.ones(2, 9)
    tokens = torch.randint(0, 30522, (2, 7))
    bias, cross = memory_bias(mask), decoder.cross_cache(memory)
    whole, _ = decoder(tokens, bias, cross)
    first, past = decoder(tokens[:, :4], bias, cross)
    steps = [first]
    for t in range(4, 7):
        logits, past = decoder(tokens[:, t:t + 1], bias, cross, past)
        steps.append(logits)
    assert past[0][0].shape == (2, 4, 7, 8)  # [batch, heads, steps so far, head size]
    assert torch.allclose(torch.cat(steps, dim=1), whole, atol=1e-5)


def test_greedy_generation_matches_hugging_face_generate(hf_decoder):
    torch.manual_seed(2)
    retention = RetentionModel(encoder_from_config(tiny_bert_config(), "eager"),
                               RetentionConfig(label_names=[], task="summarization"))
    model = RetentionSeq2Seq(retention, MemoryDecoder(hf_decoder)).eval()
    ids, mask = random_documents(3, 1, 17)
    ours = model.generate(ids, mask, start_id=101, end_id=102, max_new_tokens=8, mode="full")
    memory = model.encode(ids, mask, mode="full")
    # transformers 5.24's cached generate fails for BertLMHeadModel with cross-attention; uncached is the reference
    theirs = hf_decoder.generate(input_ids=torch.full((3, 1), 101), encoder_hidden_states=memory.states,
                                 encoder_attention_mask=memory.mask.long(), max_new_tokens=8, do_sample=False,
                                 use_cache=False, eos_token_id=102, pad_token_id=102)
    assert torch.equal(ours, theirs[:, 1:ours.shape[1] + 1])


def test_hard_memory_is_the_last_layers_kept_tokens():
    model = make_seq2seq()
    ids, mask = random_documents(2, 1, 40)
    memory = model.encode(ids, mask, mode="hard", schedule=SCHEDULE)
    kept = SCHEDULE.keep_counts(40)[-1]
    assert memory.states.shape == (2, kept, 32)
    last = max(memory.kept_positions)
    assert torch.equal(memory.mask, mask[:, 0].float().gather(1, memory.kept_positions[last]))
    restored = make_seq2seq(memory="restored").encode(ids, mask, mode="hard", schedule=SCHEDULE)
    assert restored.states.shape == (2, 40, 32) and torch.equal(restored.mask, mask[:, 0].float())


def test_relaxed_memory_is_masked_by_the_last_cumulative_mask():
    model = make_seq2seq()
    ids, mask = random_documents(2, 1, 30)
    memory = model.encode(ids, mask, mode="relaxed")
    assert memory.states.shape == (2, 30, 32)
    assert torch.all(memory.mask <= mask[:, 0].float()) and memory.mask.max() <= 1.0
    assert len(memory.expected_masks) == 4


def test_chunks_are_encoded_independently_and_concatenated():
    model = make_seq2seq()
    ids, mask = random_documents(2, 3, 24, seed=3)
    whole = model.encode(ids, mask, mode="hard", schedule=SCHEDULE)
    per_chunk = [model.encode(ids[:, c], mask[:, c], mode="hard", schedule=SCHEDULE) for c in range(3)]
    assert torch.allclose(whole.states, torch.cat([m.states for m in per_chunk], dim=1), atol=1e-5)
    assert torch.equal(whole.mask, torch.cat([m.mask for m in per_chunk], dim=1))
    assert whole.mask[0, -SCHEDULE.keep_counts(24)[-1]:].sum() == 0  # the padding-only chunk adds nothing


def test_the_budget_counts_a_documents_tokens_over_all_its_chunks():
    model = make_seq2seq()
    ids, mask = random_documents(2, 3, 24)
    memory = model.encode(ids, mask, mode="relaxed")
    real = mask.flatten(1).float()
    assert memory.expected_masks[0].shape == real.shape
    cost = expected_budget(memory.expected_masks, real)
    assert 0.0 < float(cost.detach()) < 1.0
    assert float(expected_budget([real] * 4, real)) == pytest.approx(1.0)


def test_chunking_cuts_long_documents_and_keeps_an_empty_one():
    assert chunk_ids(list(range(7)), chunk_length=5, max_source_tokens=100, cls_id=1, sep_id=2) == [
        [1, 0, 1, 2, 2], [1, 3, 4, 5, 2], [1, 6, 2]]
    assert chunk_ids(list(range(7)), chunk_length=5, max_source_tokens=4, cls_id=1, sep_id=2) == [
        [1, 0, 1, 2, 2], [1, 3, 2]]
    assert chunk_ids([], chunk_length=5, max_source_tokens=4, cls_id=1, sep_id=2) == [[1, 2]]


def test_batches_shift_the_target_and_ignore_padding(tokenizer):
    pairs = [SummaryPair("a", "one two three " * 30, "short title"),
             SummaryPair("b", "four five", "a longer title here")]
    data = SummaryData(pairs, tokenizer, ChunkSettings(chunk_length=16, max_source_tokens=40, max_target_tokens=8),
                       SpecialTokens.of(tokenizer))
    batch = data.batch([0, 1])
    assert batch.input_ids.shape == (2, 3, 16)  # 40 tokens in pieces of 14: three chunks
    assert batch.chunk_mask[1, 1:].sum() == 0 and batch.attention_mask.shape == (2, 48)
    target = data.targets[0]
    assert batch.decoder_input_ids[0, :len(target) - 1].tolist() == target[:-1]
    assert batch.labels[0, :len(target) - 1].tolist() == target[1:]
    assert (batch.labels[0, len(target) - 1:] == IGNORE_INDEX).all()
    assert data.targets[1][-1] == tokenizer.sep_token_id and len(data.targets[1]) <= 8


def write_pairs(path: Path, count: int = 24) -> Path:
    topics = ["markets", "football", "elections", "films", "weather", "science"]
    with path.open("w") as f:
        for i in range(count):
            topic = topics[i % len(topics)]
            text = f"Report {i}. " + f"The {topic} story continued today with more news about {topic}. " * 6
            f.write(json.dumps({"text": text, "summary": f"{topic} news {i}"}) + "\n")
    return path


@pytest.fixture(scope="module")
def summarization_checkpoint(tmp_path_factory, tiny_backbone) -> Path:
    directory = tmp_path_factory.mktemp("s2s-train")
    config = TrainConfig(out=str(directory / "ck"), model=str(tiny_backbone), task="summarization",
                         data=str(write_pairs(directory / "pairs.jsonl")), budget=0.5, max_length=32,
                         max_source_tokens=80, max_target_tokens=8, min_steps=6, eval_every=3, batch_size=4,
                         decoder_epochs=1, refit_epochs=1, max_validation=4)
    train(config)
    return directory / "ck"


def test_training_writes_a_checkpoint_that_reloads(summarization_checkpoint):
    assert is_seq2seq_checkpoint(summarization_checkpoint)
    checkpoint = Seq2SeqCheckpoint.from_pretrained(summarization_checkpoint, "eager")
    metrics = checkpoint.info.metrics
    assert set(metrics["rouge_full"]) >= {"rouge1", "rouge2", "rougeL"}
    assert metrics["sgda_steps"] == 6 and len(metrics["validation_history"]) == 2
    assert checkpoint.info.chunk_settings == ChunkSettings(32, 80, 8)
    assert checkpoint.reference_decoder is not None
    # the re-fit moved the deployed decoder away from the reference one
    deployed = dict(checkpoint.model.decoder.named_parameters())
    assert any(not torch.equal(p, deployed[n]) for n, p in checkpoint.reference_decoder.named_parameters())
    assert len(checkpoint.info.schedule["keep_fractions"]) == 4
    assert checkpoint.model.config.gate_positions  # summarization's default (--no-gate-positions turns it off)


def test_checkpoint_round_trip_keeps_every_tensor_and_the_tied_head(summarization_checkpoint, tmp_path):
    checkpoint = Seq2SeqCheckpoint.from_pretrained(summarization_checkpoint, "eager")
    lm = checkpoint.model.decoder.lm
    assert lm.cls.predictions.decoder.weight.data_ptr() == lm.bert.embeddings.word_embeddings.weight.data_ptr()
    checkpoint.save_pretrained(tmp_path / "copy")
    again = Seq2SeqCheckpoint.from_pretrained(tmp_path / "copy", "eager")
    for (name, tensor), (other, value) in zip(checkpoint.model.state_dict().items(),
                                              again.model.state_dict().items(), strict=True):
        assert name == other and torch.equal(tensor, value), name


def test_a_damaged_checkpoint_is_refused(summarization_checkpoint, tmp_path):
    import shutil

    from adaret.core.errors import AdaretError

    copy = Path(shutil.copytree(summarization_checkpoint, tmp_path / "damaged"))
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0" * 10)
    with pytest.raises(AdaretError, match="does not match the sha256"):
        Seq2SeqCheckpoint.from_pretrained(copy)


def test_deployed_batches_keep_each_documents_own_width(tokenizer):
    texts = ["word " * n for n in (5, 40, 5, 90, 40)]
    data = SummaryData([SummaryPair(str(i), t, "title") for i, t in enumerate(texts)], tokenizer,
                       ChunkSettings(chunk_length=32, max_source_tokens=200, max_target_tokens=8),
                       SpecialTokens.of(tokenizer))
    seen = []
    for batch in data.deployed_batches(8):
        for index in batch.indices.tolist():
            widest = max(len(chunk) for chunk in data.documents[index])
            assert batch.input_ids.shape[2] == widest  # no row is padded beyond its own document's widest chunk
            seen.append(index)
    assert sorted(seen) == list(range(5))
