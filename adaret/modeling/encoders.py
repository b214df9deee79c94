"""Adapters that expose a Hugging Face encoder as embeddings plus a list of layers.

The retention wrapper needs three things from a backbone: token embeddings (with absolute positions
already added), the layer stack, and a way to run one layer under an additive key bias of shape
[batch, 1, 1, keys]. RoBERTa and XLM-R differ from BERT only in embeddings (no token types) and in where
position ids start; another family needs only these methods. A family whose layers also read where the tokens
stand (MPNet's relative-position bias) builds that from the kept tokens' original positions in ``layer_context``,
which the wrapper calls again whenever tokens are dropped and hands to every layer after.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig

from adaret.core.errors import AdaretError
from adaret.core.text_files import read_json_object
from adaret.modeling.hf_loading import load_backbone, load_config


class EncoderAdapter(nn.Module):
    """A BERT-family encoder seen as ``embed`` -> ``layers`` (each run with an additive key bias)."""

    uses_token_type_ids = True
    # What ``AutoModel`` needs to build the bare encoder: BERT and RoBERTa would add a pooler no head reads.
    backbone_kwargs: ClassVar[dict[str, Any]] = {"add_pooling_layer": False}
    # A family whose HF layers have only the eager attention path sets this, whatever attention was asked for.
    attention_implementation: ClassVar[str | None] = None

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

    def layer_context(self, positions: torch.Tensor) -> Any:
        """What the layers need to know about the tokens' original ``positions`` [batch, tokens]: nothing for
        BERT-like layers, whose positions are already in the embeddings."""
        return None

    def run_layer(self, index: int, hidden: torch.Tensor, key_bias: torch.Tensor, context: Any = None) -> torch.Tensor:
        out = self.layers[index](hidden, attention_mask=key_bias[:, None, None, :])
        return out[0] if isinstance(out, tuple) else out

    def run_layer_with_attention(self, index: int, hidden: torch.Tensor, key_bias: torch.Tensor,
                                 context: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
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


class ElectraAdapter(EncoderAdapter):
    """ELECTRA's discriminator is BERT's encoder; a small one embeds in a narrower space and projects up."""

    backbone_kwargs: ClassVar[dict[str, Any]] = {}

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        embedded = self.backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        project = getattr(self.backbone, "embeddings_project", None)
        return embedded if project is None else project(embedded)


class DistilBertAdapter(EncoderAdapter):
    """DistilBERT: no token types, positions from 0, blocks in ``transformer.layer`` whose attention returns its
    projection before the residual and the norm (BERT's includes both)."""

    uses_token_type_ids = False
    backbone_kwargs: ClassVar[dict[str, Any]] = {}

    @property
    def layers(self) -> nn.ModuleList:
        return self.backbone.transformer.layer

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.backbone.embeddings(input_ids)

    def run_layer_with_attention(self, index: int, hidden: torch.Tensor, key_bias: torch.Tensor,
                                 context: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        block = self.layers[index]
        projected, probabilities = block.attention(hidden, attention_mask=key_bias[:, None, None, :])
        if probabilities is None:
            raise ValueError("attention probabilities need the eager attention implementation "
                             "(load with attn_implementation='eager')")
        attended = block.sa_layer_norm(projected + hidden)
        return block.output_layer_norm(block.ffn(attended) + attended), probabilities


class MPNetAdapter(RobertaAdapter):
    """MPNet: RoBERTa's embeddings (positions from ``padding_idx + 1``, no token types), BERT's layer layout, and
    one relative-position bias that every layer adds to its attention logits.

    The bias depends on how far apart two tokens stood in the input, bucketed T5-style:

        bias[b, h, i, j] = E[bucket(p[b, j] - p[b, i]), h]

    with p the original positions. After tokens are dropped it is recomputed from the kept tokens' p, not sliced
    from the full-length bias: the same values, built at K x K instead of n x n.
    """

    attention_implementation: ClassVar[str | None] = "eager"  # MPNet's HF attention has no SDPA path

    def layer_context(self, positions: torch.Tensor) -> torch.Tensor:
        encoder = self.backbone.encoder
        relative = positions[:, None, :] - positions[:, :, None]  # p_j - p_i, as MPNetEncoder.compute_position_bias
        # HF's forward calls the bucketing with its default bucket count, so this does too.
        buckets = encoder.relative_position_bucket(relative)
        return encoder.relative_attention_bias(buckets).permute(0, 3, 1, 2)  # [batch, heads, queries, keys]

    def run_layer(self, index: int, hidden: torch.Tensor, key_bias: torch.Tensor, context: Any = None) -> torch.Tensor:
        return self.layers[index](hidden, attention_mask=self._bias(key_bias, context))[0]

    def run_layer_with_attention(self, index: int, hidden: torch.Tensor, key_bias: torch.Tensor,
                                 context: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.layers[index]
        attended, probabilities = layer.attention(hidden, self._bias(key_bias, context), output_attentions=True)
        return layer.output(layer.intermediate(attended), attended), probabilities

    @staticmethod
    def _bias(key_bias: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        """One additive bias, position plus key mask: HF adds the two to the logits one after the other, but a
        single Add is the form ONNX Runtime's attention fusion matches (it then takes it as ``attention_bias``)."""
        return position_bias + key_bias[:, None, None, :]


ADAPTERS: dict[str, type[EncoderAdapter]] = {
    "bert": EncoderAdapter,
    "distilbert": DistilBertAdapter,
    "electra": ElectraAdapter,
    "mpnet": MPNetAdapter,
    "roberta": RobertaAdapter,
    "xlm-roberta": RobertaAdapter,
}


# The sizes a backbone config sets; each must be a whole number >= 1, and together they must describe weights that
# can exist: a config edited to max_position_embeddings=1e12 would otherwise ask torch for petabytes.
SIZE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size")
# DistilBERT's names for the same sizes (its config maps only the first three onto the common names).
SIZE_ALIASES = {"hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
                "intermediate_size": "hidden_dim"}
MAX_PARAMETERS = 20_000_000_000  # 80 GB of fp32 weights: far above any encoder these adapters wrap


def check_backbone_config(config: PretrainedConfig | Mapping[str, Any], where: str = "backbone config") -> None:
    """Refuse a backbone config whose sizes are not whole numbers >= 1, or describe an absurdly large model, before
    any weights are allocated for it. The error names the field.

    ``config`` may also be the raw dict a config is built from: then only the sizes it sets are checked (the others
    take the model type's defaults), so that a wrongly typed field is named before transformers sees it.
    """
    raw = isinstance(config, Mapping)
    sizes = {}
    for name in SIZE_FIELDS:
        value = config.get(name) if raw else getattr(config, name, None)
        if value is None and name in SIZE_ALIASES:
            alias = SIZE_ALIASES[name]
            value = config.get(alias) if raw else getattr(config, alias, None)
        if value is None and (raw or name == "type_vocab_size"):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise AdaretError(f"{where}: {name} must be a whole number, got {value!r}")
        if value < 1:
            raise AdaretError(f"{where}: {name} must be at least 1, got {value}")
        sizes[name] = value
    if raw and not set(SIZE_FIELDS) - {"type_vocab_size"} <= sizes.keys():
        return
    hidden, heads = sizes["hidden_size"], sizes["num_attention_heads"]
    if hidden % heads:
        raise AdaretError(f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    # Embedding tables, then per layer the Q, K, V and output projections and the two feed-forward matrices.
    terms = {name: sizes.get(name, 0) * hidden
             for name in ("vocab_size", "max_position_embeddings", "type_vocab_size")}
    per_layer = 4 * hidden * hidden + 2 * hidden * sizes["intermediate_size"]
    terms["num_hidden_layers"] = sizes["num_hidden_layers"] * per_layer
    total = sum(terms.values())
    if total > MAX_PARAMETERS:
        largest = max(terms, key=terms.__getitem__)
        raise AdaretError(f"{where}: {largest}={sizes[largest]} (hidden_size {hidden}) gives about "
                          f"{total:.2e} parameters ({4 * total / 2**30:,.0f} GiB in fp32), more than the "
                          f"{MAX_PARAMETERS:.0e} adaret accepts; the config is damaged or not an encoder's")


def load_encoder(path: str | Path, attn_implementation: str = "sdpa") -> EncoderAdapter:
    """Load a local Hugging Face encoder directory (no hub access) and wrap it in its adapter."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise AdaretError(f"{path} is not a Hugging Face model directory (no config.json)")
    where = f"model config {path / 'config.json'}"
    check_backbone_config(read_json_object(path / "config.json", where), where)  # before transformers parses the sizes
    config = load_config(path)  # refuses a directory that ships its own code
    adapter_cls = ADAPTERS.get(config.model_type)
    if adapter_cls is None:
        supported = ", ".join(sorted(ADAPTERS))
        raise AdaretError(f"unsupported encoder type {config.model_type!r} in {path} (supported: {supported})")
    check_backbone_config(config, where)
    attn_implementation = adapter_cls.attention_implementation or attn_implementation
    backbone = load_backbone(path, attn_implementation=attn_implementation, **adapter_cls.backbone_kwargs)
    return adapter_cls(backbone)


def encoder_from_config(config: PretrainedConfig, attn_implementation: str = "sdpa") -> EncoderAdapter:
    """A randomly initialised encoder of a given config (tests, and checkpoints that carry the backbone)."""
    adapter_cls = ADAPTERS.get(config.model_type)
    if adapter_cls is None:
        raise AdaretError(f"unsupported encoder type {config.model_type!r}")
    check_backbone_config(config)
    attn_implementation = adapter_cls.attention_implementation or attn_implementation
    config._attn_implementation = attn_implementation
    return adapter_cls(AutoModel.from_config(config, attn_implementation=attn_implementation,
                                             **adapter_cls.backbone_kwargs))
