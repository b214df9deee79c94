"""Adapters that expose a Hugging Face encoder as embeddings plus a list of layers.

The retention wrapper needs three things from a backbone: token embeddings (with absolute positions
already added), the layer stack, and a way to run one layer under an additive key bias of shape
[batch, 1, 1, keys]. RoBERTa and XLM-R differ from BERT only in embeddings (no token types) and in where
position ids start; another family needs only these methods.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig

from adaret.core.errors import AdaretError
from adaret.modeling.hf_loading import load_backbone, load_config


class EncoderAdapter(nn.Module):
    """A BERT-family encoder seen as ``embed`` -> ``layers`` (each run with an additive key bias)."""

    uses_token_type_ids = True

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    @property
    def config(self) -> PretrainedConfig:
        return self.backbone.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def layers(self) -> nn.ModuleList:
        return self.backbone.encoder.layer

    @property
    def max_positions(self) -> int:
        """The longest input (in tokens) the position table can index."""
        return int(self.config.max_position_embeddings)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def run_layer(self, index: int, hidden: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        out = self.layers[index](hidden, attention_mask=key_bias[:, None, None, :])
        return out[0] if isinstance(out, tuple) else out

    def run_layer_with_attention(self, index: int, hidden: torch.Tensor,
                                 key_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``run_layer`` that also returns the softmax attention [batch, heads, queries, keys].

        The HF layer discards its attention probabilities, so this runs its two halves (attention, then
        feed-forward) itself. Only eager attention materialises the probabilities.
        """
        layer = self.layers[index]
        attended, probabilities = layer.attention(hidden, key_bias[:, None, None, :])
        if probabilities is None:
            raise ValueError("attention probabilities need the eager attention implementation "
                             "(load with attn_implementation='eager')")
        return layer.feed_forward_chunk(attended), probabilities


class RobertaAdapter(EncoderAdapter):
    """RoBERTa derives position ids from padding inside its embeddings; its type vocabulary has one entry."""

    uses_token_type_ids = False

    @property
    def max_positions(self) -> int:
        """Position ids run from ``padding_idx + 1`` to ``padding_idx + n`` (padding keeps ``padding_idx``), so the
        table's first ``padding_idx + 1`` rows hold no token position: 514 rows fit 512 tokens."""
        return int(self.config.max_position_embeddings) - int(self.backbone.embeddings.padding_idx) - 1

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.backbone.embeddings(input_ids=input_ids)


ADAPTERS: dict[str, type[EncoderAdapter]] = {
    "bert": EncoderAdapter,
    "roberta": RobertaAdapter,
    "xlm-roberta": RobertaAdapter,
}


def load_encoder(path: str | Path, attn_implementation: str = "sdpa") -> EncoderAdapter:
    """Load a local Hugging Face encoder directory (no hub access) and wrap it in its adapter."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise AdaretError(f"{path} is not a Hugging Face model directory (no config.json)")
    config = load_config(path)  # refuses a directory that ships its own code
    adapter_cls = ADAPTERS.get(config.model_type)
    if adapter_cls is None:
        supported = ", ".join(sorted(ADAPTERS))
        raise AdaretError(f"unsupported encoder type {config.model_type!r} in {path} (supported: {supported})")
    backbone = load_backbone(path, attn_implementation=attn_implementation, add_pooling_layer=False)
    return adapter_cls(backbone)


def encoder_from_config(config: PretrainedConfig, attn_implementation: str = "sdpa") -> EncoderAdapter:
    """A randomly initialised encoder of a given config (tests, and checkpoints that carry the backbone)."""
    adapter_cls = ADAPTERS.get(config.model_type)
    if adapter_cls is None:
        raise AdaretError(f"unsupported encoder type {config.model_type!r}")
    config._attn_implementation = attn_implementation
    return adapter_cls(AutoModel.from_config(config, add_pooling_layer=False,
                                             attn_implementation=attn_implementation))
