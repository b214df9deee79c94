import json
import shutil

import pytest
import torch

from adaret.core.errors import AdaretError
from adaret.training.checkpoint import RetentionCheckpoint, checkpoint_sha256
from tests.conftest import random_batch


def test_checkpoint_round_trips(tiny_checkpoint):
    loaded = RetentionCheckpoint.from_pretrained(tiny_checkpoint, attn_implementation="eager")
    again = RetentionCheckpoint.from_pretrained(tiny_checkpoint, attn_implementation="eager")
    ids, mask = random_batch(2, 24, seed=1)
    schedule = loaded.info.keep_schedule
    with torch.no_grad():
        a = loaded.model(ids, mask, mode="hard", schedule=schedule).logits
        b = again.model(ids, mask, mode="hard", schedule=schedule).logits
    assert torch.equal(a, b)
    assert loaded.info.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert loaded.sha256 == checkpoint_sha256(tiny_checkpoint)
    assert loaded.tokenizer("hello world")["input_ids"][0] == 101


def test_saved_state_matches_original(tiny_model, tmp_path, tokenizer):
    from tests.conftest import save_tiny_checkpoint

    path = save_tiny_checkpoint(tmp_path / "c", tokenizer)
    loaded = RetentionCheckpoint.from_pretrained(path, attn_implementation="eager")
    for name, value in tiny_model.state_dict().items():  # the fixture and the saved model share seed 0
        assert torch.equal(value, loaded.model.state_dict()[name]), name


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "config.json").write_text("{not json"), "config.json is not valid JSON"),
    (lambda p: (p / "model.safetensors").unlink(), "incomplete"),
    (lambda p: (p / "model.safetensors").write_bytes(b"\0" * 64), "does not match the sha256"),
])
def test_corrupt_checkpoints_give_one_line_errors(tiny_checkpoint, tmp_path, damage, message):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    damage(broken)
    with pytest.raises(AdaretError, match=message):
        RetentionCheckpoint.from_pretrained(broken)


def test_missing_tensors_are_reported(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    from adaret.core.fileio import sha256_file

    broken = tmp_path / "missing"
    shutil.copytree(tiny_checkpoint, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["head.weight"]
    save_file(tensors, str(broken / "model.safetensors"))
    config = json.loads((broken / "config.json").read_text())
    config["weights_sha256"] = sha256_file(broken / "model.safetensors")
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(AdaretError, match="missing"):
        RetentionCheckpoint.from_pretrained(broken)


def test_a_plain_hugging_face_model_is_told_to_train_its_gates_first(minilm_dir):
    # The bundled MiniLM is what a user's own fine-tuned encoder looks like: config.json and model.safetensors.
    with pytest.raises(AdaretError) as caught:
        RetentionCheckpoint.from_pretrained(minilm_dir)
    message = str(caught.value)
    assert "\n" not in message
    assert "is a Hugging Face bert model, not a retention checkpoint" in message
    assert f"adaret train --model {minilm_dir}" in message
