"""Shared fixtures: a tiny random BERT (fast), its exports, and the packaged MiniLM-L6 (real)."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, BertConfig

from adaret.core.dummy_inputs import Vocabulary
from adaret.modeling import RetentionConfig, RetentionModel, encoder_from_config
from adaret.modeling.seq2seq import RetentionSeq2Seq, decoder_from_config
from adaret.training.checkpoint import CheckpointInfo, RetentionCheckpoint, resolve_model_source
from adaret.training.config import PACKAGED_MODEL
from adaret.training.seq2seq_checkpoint import ChunkSettings, Seq2SeqCheckpoint, Seq2SeqInfo

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under `make test` two pytest-xdist workers share the cores: one thread each, else they oversubscribe.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))

LABELS = ["business", "entertainment", "politics", "sports", "tech"]
# The tiny models share MiniLM's tokenizer, so random inputs use its vocabulary and special ids.
BERT_VOCAB = Vocabulary.from_tokenizer_file(resolve_model_source(PACKAGED_MODEL) / "tokenizer.json")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return resolve_model_source(PACKAGED_MODEL)


@pytest.fixture(scope="session")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(str(minilm_dir), local_files_only=True)


def tiny_bert_config(**overrides) -> BertConfig:
    settings = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=128)
    settings.update(overrides)
    return BertConfig(**settings)


def make_tiny_model(seed: int = 0, attn: str = "eager", **config_overrides) -> RetentionModel:
    torch.manual_seed(seed)
    encoder = encoder_from_config(tiny_bert_config(), attn)
    model = RetentionModel(encoder, RetentionConfig(label_names=LABELS, **config_overrides))
    for gate in model.gates.values():  # spread the scores so that token choice is not a near-tie
        torch.nn.init.normal_(gate.scorer.weight, std=1.0)
    return model.eval()


@pytest.fixture
def tiny_model() -> RetentionModel:
    return make_tiny_model()


def save_tiny_checkpoint(path: Path, tokenizer, fractions=(1.0, 0.6, 0.35, 0.2), budget: float = 0.4,
                         max_length: int | None = None, model: RetentionModel | None = None,
                         **config_overrides) -> Path:
    """A complete checkpoint whose (tiny, random) backbone is stored inside it; ``max_length``: the length it
    records as trained on (none by default, as in checkpoints made before it was recorded); ``model``: a tiny
    model to store instead of ``make_tiny_model(**config_overrides)``."""
    model = model if model is not None else make_tiny_model(**config_overrides)
    config = model.encoder.config
    info = CheckpointInfo(
        base_model={"source": "tiny-random-bert", "model_type": "bert", "name": "tiny-random-bert",
                    "in_checkpoint": True, "weights_sha256": None,
                    "config": config.to_diff_dict() | {"model_type": "bert"}},
        retention={}, training={"budget": budget, "seed": 0} | ({"max_length": max_length} if max_length else {}),
        schedule={"keep_fractions": list(fractions), "measured_on": "synthetic", "budget": sum(fractions) / 4},
    )
    RetentionCheckpoint(model, tokenizer, info).save_pretrained(path)
    return path


# Exports dominate the suite's time, so each shared artifact is built once per test run and read by every module
# that needs it, in whichever pytest-xdist worker: the first worker to ask builds it under a file lock in the run's
# temporary root (the one both workers' roots sit in) and pickles what the builder returned; the others load that.
# Tests that change a shared export work on a copy: each is fingerprinted when it is made and checked again when
# the session ends.


def built_once(tmp_path_factory, name: str, build: Callable[[Path], Any]) -> Any:
    """``build(directory)``'s result, built by the first test process of this run that asks for ``name``."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    directory, record = root / "shared" / name, root / "shared" / f"{name}.pickle"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory.parent / f"{name}.lock")):
        if record.is_file():
            return pickle.loads(record.read_bytes())
        directory.mkdir(exist_ok=True)  # a build that failed in another worker may have left it
        result = build(directory)
        record.write_bytes(pickle.dumps(result))  # under the lock, so no reader sees it half-written
    return result


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer) -> Path:
    return built_once(tmp_path_factory, "tiny-checkpoint", lambda d: save_tiny_checkpoint(d / "tiny", tokenizer))


def _fingerprint(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _shared_export(tmp_path_factory, checkpoint: Path, name: str, optimized: bool, **config) -> Iterator:
    from adaret.export import ExportConfig, run_export
    from adaret.graph_passes.pipeline import optimize  # after adaret.export: the two import each other

    def build(directory: Path):
        previous = os.umask(0o022)  # test_runtime_inputs checks the files' modes against what a plain open() gives
        try:
            return run_export(ExportConfig(checkpoint=str(checkpoint), out=str(directory / "export"), **config),
                              optimize if optimized else None)
        finally:
            os.umask(previous)

    result = built_once(tmp_path_factory, name, build)
    out = Path(result.config.out)
    made = _fingerprint(out)
    yield result
    now = _fingerprint(out)
    changed = sorted(k for k in made.keys() | now.keys() if made.get(k) != now.get(k))
    assert not changed, f"a test changed the shared export {name} ({', '.join(changed)}); copy it first"


def graph_at(result, seq_len: int):
    """The graph an export wrote for the static length ``seq_len``."""
    return next(graph for graph in result.graphs if graph.seq_len == seq_len)


@pytest.fixture(scope="session")
def tiny_dynamic_export(tmp_path_factory, tiny_checkpoint):
    """The default form at budget 0.5: dynamic, logits only, with the ort-cpu graph-pass output model.opt.onnx."""
    yield from _shared_export(tmp_path_factory, tiny_checkpoint, "tiny-dynamic", optimized=True, budget=0.5,
                              parity_batches=(2,), parity_lengths=(16, 64))


@pytest.fixture(scope="session")
def tiny_static_export(tmp_path_factory, tiny_checkpoint):
    """Static buckets 32 and 64 at budget 0.5, logits only, each with its tensorrt graph-pass output."""
    yield from _shared_export(tmp_path_factory, tiny_checkpoint, "tiny-static", optimized=True, budget=0.5,
                              static=True, seq_lens=(32, 64), parity_batches=(2,))


@pytest.fixture(scope="session")
def tiny_positions_export(tmp_path_factory, tiny_checkpoint):
    """Dynamic at budget 0.5 with kept_positions outputs; its parity gate ran batches 1 and 8 at lengths 8, 37,
    101 and 128, which test_export checks its record against."""
    yield from _shared_export(tmp_path_factory, tiny_checkpoint, "tiny-positions", optimized=False, budget=0.5,
                              with_positions=True, seq_lens=(64, 128), parity_lengths=(8, 37, 101, 128))


@pytest.fixture(scope="session")
def tiny_static_positions_export(tmp_path_factory, tiny_checkpoint):
    """Static buckets 33 and 64 at budget 0.5 with kept_positions outputs and a dynamic batch (parity at batches 1
    and 8), each with its tensorrt graph-pass output."""
    yield from _shared_export(tmp_path_factory, tiny_checkpoint, "tiny-static-positions", optimized=True,
                              budget=0.5, static=True, with_positions=True, seq_lens=(33, 64))


def random_batch(batch: int, seq: int, seed: int = 0, vocab: int = 30522, pad_rows: bool = True):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=generator)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    if pad_rows:
        for row in range(1, batch):
            length = int(torch.randint(2, seq + 1, (1,), generator=generator))
            mask[row, length:] = 0
    return ids * mask, mask


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory, minilm_dir) -> Path:
    """A tiny random BERT saved as a Hugging Face model directory with MiniLM's tokenizer: a --model for training."""
    import shutil

    from transformers import BertModel

    directory = tmp_path_factory.mktemp("backbone")
    BertModel(tiny_bert_config()).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, directory / name)
    return directory


def write_squad(path: Path, paragraphs: list[tuple[str, list[tuple[str, str, str]]]]) -> Path:
    """A SQuAD v1.1 file, one article per paragraph ``(context, [(id, question, answer text), ...])``; each answer's
    ``answer_start`` is its first occurrence in the context."""
    import json

    articles = [{"title": f"a{i}", "paragraphs": [{"context": context, "qas": [
        {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": context.index(answer)}]}
        for qid, question, answer in qas]}]} for i, (context, qas) in enumerate(paragraphs)]
    path.write_text(json.dumps({"version": "1.1", "data": articles}))
    return path


EDGE_BLOCKED = ("torch", "transformers", "onnx", "onnxscript", "onnx_ir")  # what the edge runtime must not need


def run_with_imports_blocked(body: str, *args: str, blocked: tuple[str, ...] = EDGE_BLOCKED
                             ) -> subprocess.CompletedProcess:
    """``body`` in a fresh interpreter where importing any of ``blocked`` fails, then checked to have loaded none of
    them; ``args`` are its ``sys.argv[1:]``. The caller asserts on the return code and the output."""
    script = textwrap.dedent(f"""
        import sys

        class Block:
            BLOCKED = {blocked!r}

            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.BLOCKED:
                    raise ImportError(f"{{name}} is blocked: the edge runtime must not need it")
                return None

        sys.meta_path.insert(0, Block())
    """) + textwrap.dedent(body) + textwrap.dedent("""
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in Block.BLOCKED)
        assert not heavy, heavy
    """)
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent)


# --- a tiny summarizer (random weights) and its export, for the summarization tests --------------------------

FRACTIONS = [1.0, 0.6, 0.35, 0.2]
CHUNKS = ChunkSettings(chunk_length=64, max_source_tokens=200, max_target_tokens=14)
SPECIAL = {"start": 101, "end": 102, "pad": 0}


def tiny_summarizer(seed: int = 0, end_bias: float = 1.2, **retention_overrides) -> RetentionSeq2Seq:
    """Weights at std 0.1 (at BERT's 0.02 every document gets the same tokens), gates spread like
    ``conftest.make_tiny_model``'s, and an end-token bias at which some documents end within a few steps;
    ``retention_overrides``: RetentionConfig fields."""
    torch.manual_seed(seed)
    encoder = encoder_from_config(tiny_bert_config(initializer_range=0.1), "eager")
    retention = RetentionModel(encoder, RetentionConfig(label_names=[], task="summarization", **retention_overrides))
    model = RetentionSeq2Seq(retention, decoder_from_config(tiny_bert_config(initializer_range=0.1)))
    for gate in model.gates.values():
        torch.nn.init.normal_(gate.scorer.weight, std=1.0)
    with torch.no_grad():
        model.decoder.lm.cls.predictions.bias[SPECIAL["end"]] = end_bias
    return model.eval()


def save_tiny_summarizer(path: Path, tokenizer, training: dict | None = None, with_reference: bool = False,
                         model: RetentionSeq2Seq | None = None) -> Path:
    """``training``: the training record (default: only the budget, 0.4); ``with_reference``: store the decoder as
    the reference decoder too, as ``adaret train`` stores its full model's; ``model``: a tiny summarizer to store
    instead of ``tiny_summarizer()``."""
    model = model if model is not None else tiny_summarizer()
    info = Seq2SeqInfo(encoder_config=model.encoder.config.to_diff_dict() | {"model_type": "bert"},
                       decoder_config=model.decoder.lm.config.to_diff_dict() | {"model_type": "bert"},
                       retention={}, chunks=asdict(CHUNKS), special_tokens=dict(SPECIAL),
                       schedule={"keep_fractions": FRACTIONS}, training=training or {"budget": 0.4})
    reference = model.decoder if with_reference else None
    Seq2SeqCheckpoint(model, tokenizer, info, reference_decoder=reference).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def summarizer_checkpoint(tmp_path_factory, tokenizer) -> Path:
    """``save_tiny_summarizer``'s checkpoint, shared by the summarization test files (read, never changed)."""
    return built_once(tmp_path_factory, "s2s-checkpoint", lambda d: save_tiny_summarizer(d / "ckpt", tokenizer))


@pytest.fixture(scope="session")
def summarizer_export(summarizer_checkpoint, tmp_path_factory):
    """That checkpoint exported at 0.4 (the ``run_summarization_export`` result), exported once per session."""
    from adaret.export import ExportConfig
    from adaret.export.seq2seq import run_summarization_export

    return built_once(tmp_path_factory, "s2s-export", lambda d: run_summarization_export(
        ExportConfig(budget=0.4, checkpoint=str(summarizer_checkpoint), out=str(d / "b0.4"))))
