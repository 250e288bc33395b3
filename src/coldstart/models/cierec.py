"""CIERec: cross-modal content inference and feature enrichment (Ma et al., 2023), on an MF or a VBPR backbone.

    CRL   p_u = emb_u(u), q_i = emb_i(i)                                              (Eq. 1)
    SMRL  e_i = E(poster_i);  v_ui = T_v(e_i; p_u, g_v)                               (Eq. 2, 3)
    CMRL  c_i = T_i(e_i; g_s);  s_i = LSTM(c_i || s^_i), s^_i from the annotations    (Eq. 4, 5)
          R: DQN gates scaling the gradients of the v and s branches into E          (III-D3, Eq. 6)
    MRF   f_ui = LeakyReLU(W [q_i || v_ui || s_i] + b)                                (Eq. 7)
          MF:   y = alpha + beta_u + beta_i + p_u . f_ui                              (Eq. 8)
          VBPR: y = alpha + beta_u + beta_i + beta_c + p_u . f_ui + a_u . c_i,  beta_c = w_c . c_i

Trained with BPR (one sampled negative per positive), Adagrad, the rate multiplied by `lr_decay` every
`decay_every` epochs (train.py's make_optimizer / lr_scale hooks); R has its own Adam.

Ablation levels (Table III), cumulative, `ablation=`:
    base  the backbone on the visual feature alone. MF: f_i = LeakyReLU(W e_i + b), i.e. MF(Image) (with
          base_input="semantics": the annotation embedding instead, i.e. MF(Semantics), annotations used at
          test too); VBPR: plain VBPR, y = alpha + beta_u + beta_i + w_c . e_i + p_u . q_i + a_u . e_i
    ci    + cross-modal inference without constraints: c_i = W_c e_i (no gate), v_i = MLP^v(e_i) (no gate),
          s_i = LSTM(c_i), fused by Eq. 7 with q_i
    ta    + the task-aware gates T_v (Eq. 3) and T_i (Eq. 4)
    gr    + the gradient-regularisation gates R
    pi    + the privileged annotations in Eq. 5 during training (the full model, default)

Inputs: the poster modality (`visual`, default "poster") through EfficientNet-Lite0: frozen (pooled features
computed once through the feature cache) or fine-tuned (uint8 pixels decoded once into a memory-mapped cache by
features/raw.py). A Dense modality of that name is used as precomputed features. Without it the dense item
content stands in, with a warning. Annotations: the MultiLabel modalities named in `annotations`.

Privileged information: annotations enter Eq. 5 in training only. At inference every item is scored with
`test_annotations` = "absent" (default; s_i = LSTM over c_i alone, see nn/cierec.py SemanticFusion) or
"present" (the annotations of every item that has them; reported as the other case). Training drops the
annotations of a random `pi_dropout` share of the batch's items so that the annotation-free path is trained.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coldstart.data.modalities import Dense, Image, MultiLabel
from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.bpr import TrainedConfig
from coldstart.models.embedding import EmbeddingRecommender, compact, rows
from coldstart.nn import device as devices
from coldstart.nn.cierec import (GradientGate, InferenceGate, SemanticFusion, VisualEncoder, VisualGate,
                                 load_backbone)
from coldstart.nn.content import build_content, gather_csr_rows, select_modalities

log = logging.getLogger("coldstart")

BACKBONES = ("mf", "vbpr")
ABLATIONS = ("base", "ci", "ta", "gr", "pi")
ENCODERS = ("frozen", "finetune")


@dataclasses.dataclass(frozen=True)
class CIERecConfig(TrainedConfig):
    """CIERec's settings (TrainedConfig's dim_E is D, the width of p_u, q_i, v_i, s_i and f_i).

    Attributes:
        backbone: "mf" or "vbpr" (Eq. 8).
        ablation: cumulative component level, "base", "ci", "ta", "gr" or "pi" (the full model).
        base_input: at ablation "base" with the MF backbone, "image" (MF(Image)) or "semantics" (MF(Semantics)).
        encoder: "frozen" (EfficientNet-Lite0 features computed once, a linear head learns) or "finetune".
        visual: the item modality holding the posters (an Image, or a Dense of precomputed features).
        image_size: side of the cached pixels for fine-tuning.
        emb_dim: De, the width of e_i, c_i and s^_i (the paper's ResNet18 gives 512; we project to De).
        annotations: the MultiLabel item modalities that form the privileged annotations.
        min_label_count: annotation elements carried by fewer items are dropped.
        pi_dropout: share of the batch's items trained without their annotations.
        test_annotations: "absent" (privileged: never at inference) or "present".
        dqn_lr, epsilon: R's Adam rate and exploration probability.
        lr_decay, decay_every: the rate is multiplied by lr_decay every decay_every epochs (both optimisers).
        device: where a fine-tuned backbone and the pair-wise scoring blocks run: "auto" (cuda when available),
            "cpu" or "cuda".
        score_chunk: users per block when scoring every item (T_v makes scores pair-wise: [B, I, D] blocks).
    """

    l_r: float = 0.05
    batch_size: int = 1024
    num_epoch: int = 40
    patience: int = 5
    min_epochs: int = 8
    backbone: str = "mf"
    ablation: str = "pi"
    base_input: str = "image"
    encoder: str = "frozen"
    visual: str = "poster"
    image_size: int = 224
    emb_dim: int = 64
    annotations: tuple[str, ...] = ("genres", "director", "actors", "mpaa")
    min_label_count: int = 2
    pi_dropout: float = 0.5
    test_annotations: str = "absent"
    dqn_lr: float = 1e-3
    epsilon: float = 0.1
    lr_decay: float = 0.5
    decay_every: int = 4
    device: str = "auto"
    score_chunk: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "annotations", tuple(self.annotations))  # JSON gives a list
        for name, allowed in (("backbone", BACKBONES), ("ablation", ABLATIONS), ("encoder", ENCODERS),
                              ("base_input", ("image", "semantics")), ("test_annotations", ("absent", "present")),
                              ("device", ("auto", "cpu", "cuda"))):
            if getattr(self, name) not in allowed:
                raise DataError(f"must be one of {', '.join(allowed)}, got {getattr(self, name)!r}", field=name)
        for name in ("emb_dim", "image_size", "decay_every", "score_chunk"):
            if getattr(self, name) < 1:
                raise DataError(f"must be >= 1, got {getattr(self, name)}", field=name)
        for name in ("pi_dropout", "epsilon"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DataError(f"must be between 0 and 1, got {getattr(self, name)}", field=name)
        if not 0.0 < self.lr_decay <= 1.0:
            raise DataError(f"must be in (0, 1], got {self.lr_decay}", field="lr_decay")
        if self.dqn_lr <= 0:
            raise DataError(f"must be > 0, got {self.dqn_lr}", field="dqn_lr")


def _level(cfg: CIERecConfig) -> int:
    return ABLATIONS.index(cfg.ablation)


class CIERec(EmbeddingRecommender):
    """CIERec on an MF or VBPR backbone; see the module docstring for the equations and ablation levels."""

    name = "cierec"
    Config = CIERecConfig
    cold_items = "content"
    search_space = {"l_r": [0.01, 0.05, 0.1], "reg_weight": [1e-5, 1e-4, 1e-3]}

    def __init__(self, **hyper: Any) -> None:
        super().__init__(**hyper)
        self._pending: dict[str, np.ndarray] | None = None
        self._items_cache: dict[str, Tensor] | None = None
        self._pixels: np.ndarray | None = None
        self._device = torch.device("cpu")
        self.finetune_ = False

    # -- inputs ----------------------------------------------------------------------------------------------
    @property
    def uses_annotations(self) -> bool:
        """Whether annotations enter the model at all: PI level, or MF(Semantics)."""
        cfg = self.config
        return cfg.ablation == "pi" or (cfg.ablation == "base" and cfg.base_input == "semantics")

    def dims_for(self, split: Split) -> dict[str, int]:
        dims = super().dims_for(split)
        dataset = split.dataset
        features = {} if dataset is None else dataset.item_features
        visual, finetune = self._visual_input(split, features)
        annot = self._annotation_matrix(features, split.n_items)
        self._pending = {"visual": visual, "annot_indptr": annot.indptr.astype(np.int64),
                         "annot_indices": annot.indices.astype(np.int64)}
        self.finetune_ = finetune
        dims.update(visual_in=int(visual.shape[1]), n_elements=int(annot.shape[1]), annot_nnz=int(annot.nnz),
                    finetune=int(finetune))
        return dims

    def _visual_input(self, split: Split, features: dict) -> tuple[np.ndarray, bool]:
        """(float32 [I, F] encoder input for the frozen path, whether the backbone is fine-tuned)."""
        cfg = self.config
        mod = features.get(cfg.visual)
        if isinstance(mod, Image):
            if cfg.encoder == "finetune":
                from coldstart.features.raw import poster_pixels

                self._pixels, mask = poster_pixels(mod, cfg.image_size)
                log.info("cierec: %d of %d items have a poster (fine-tuning at %dpx)", int(mask.sum()), len(mask),
                         cfg.image_size)
                return np.zeros((split.n_items, 1280), np.float32), True  # filled from the backbone in eval
            from coldstart.features.extract import extract
            from coldstart.features.presets import PRESETS

            # The dataset's own image preset over this modality when it has one (e.g. ml-1m's "visual"), so the
            # features `coldstart features` cached are reused; else the generic image:<modality> spec.
            preset: Any = f"image:{cfg.visual}"
            for named in PRESETS.get(split.dataset.name, {}).values():
                if named.side == "item" and named.extractor == "image" and named.gather(split.dataset, None) is mod:
                    preset = named
                    break
            dense, report = extract(split.dataset, preset)
            log.info("cierec: frozen EfficientNet-Lite0 features %s", {k: report[k] for k in ("rows", "dim")
                                                                       if k in report})
            return _standardise(dense.values, dense.mask), False
        if isinstance(mod, Dense):
            if cfg.encoder == "finetune":
                raise DataError(f"encoder=finetune needs the raw images, but {cfg.visual!r} is a Dense modality "
                                "(precomputed features): run without --features, or with encoder=frozen",
                                field="encoder")
            return _standardise(mod.values, mod.mask), False
        # Loud fallback: no posters (e.g. the synthetic fixture): the dense item content plays the visual input.
        exclude = set(cfg.annotations)
        names = [n for n, m in features.items() if n not in exclude and isinstance(m, Dense)]
        if not names:
            raise DataError(f"cierec needs item images ({cfg.visual!r}) or dense item content; the dataset has "
                            f"{', '.join(features) or 'no item modality'}", field="visual")
        log.warning("cierec: no %r image modality; falling back to the dense item content (%s) as the visual "
                    "input", cfg.visual, ", ".join(names))
        spec = select_modalities(features, names)
        dense, sparse = build_content(spec, features, n_rows=split.n_items)
        values = np.concatenate([dense, sparse.toarray()], 1) if sparse.shape[1] else dense
        return _standardise(values.astype(np.float32), None), False

    def _annotation_matrix(self, features: dict, n_items: int) -> sp.csr_matrix:
        """Binary CSR [I, V] of the annotation elements (every named MultiLabel, elements on >= min_label_count
        items); an empty matrix when annotations are not used or absent (logged)."""
        cfg = self.config
        if not self.uses_annotations:
            return sp.csr_matrix((n_items, 0), dtype=np.float32)
        blocks = [features[n].values for n in cfg.annotations if isinstance(features.get(n), MultiLabel)]
        missing = [n for n in cfg.annotations if not isinstance(features.get(n), MultiLabel)]
        if missing:
            log.warning("cierec: annotation modalities %s are absent; using %s", ", ".join(missing),
                        ", ".join(n for n in cfg.annotations if n not in missing) or "none")
        if not blocks:
            log.warning("cierec: no annotations: the privileged-information path (Eq. 5's s^_i) is off")
            return sp.csr_matrix((n_items, 0), dtype=np.float32)
        mat = sp.hstack(blocks).tocsr().astype(np.float32)
        mat.data[:] = 1.0
        keep = np.flatnonzero(np.asarray((mat > 0).sum(0)).ravel() >= cfg.min_label_count)
        mat = mat[:, keep].tocsr()
        mat.sort_indices()
        return mat

    # -- parameters ------------------------------------------------------------------------------------------
    def build(self, dims: dict[str, int]) -> None:
        super().build(dims)
        cfg = self.config
        d, de, n_users, n_items = cfg.dim_E, cfg.emb_dim, dims["n_users"], dims["n_items"]
        level = _level(cfg)
        self.finetune_ = bool(dims.get("finetune", 0))
        self.register_buffer("visual_input_", torch.zeros(n_items, dims["visual_in"]))
        self.register_buffer("annot_indptr_", torch.zeros(n_items + 1, dtype=torch.int64))
        self.register_buffer("annot_indices_", torch.zeros(dims["annot_nnz"], dtype=torch.int64))
        self.encoder = VisualEncoder(dims["visual_in"], de, load_backbone() if self.finetune_ else None)
        self.alpha = nn.Parameter(torch.zeros(()))
        self.user_bias = nn.Parameter(torch.zeros(n_users))
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.fusion_semantic = SemanticFusion(de, d, dims["n_elements"])  # also s^ for MF(Semantics)
        if level == 0:
            self.fuse = nn.Linear(de, d)  # MF(Image) / MF(Semantics): f = LeakyReLU(W x + b)
        else:
            self.fuse = nn.Linear(3 * d, d)  # Eq. 7 over q || v || s
            if level >= 2:
                self.visual_gate = VisualGate(d, de, d)
                self.inference_gate = InferenceGate(de)
            else:
                self.visual_mlp = nn.Linear(de, d)  # MLP^v without the gate
                self.inference_map = nn.Linear(de, de)  # naive inference
        if cfg.backbone == "vbpr":
            self.user_content = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, de)))  # a_u
            self.content_bias = nn.Linear(de, 1, bias=False)  # beta_c = w_c . c_i
        if level >= 3:
            self.gate_v = GradientGate(lr=cfg.dqn_lr, epsilon=cfg.epsilon)
            self.gate_s = GradientGate(lr=cfg.dqn_lr, epsilon=cfg.epsilon)
        if self._pending is not None:
            self.visual_input_ = torch.from_numpy(self._pending["visual"])
            self.annot_indptr_ = torch.from_numpy(self._pending["annot_indptr"])
            self.annot_indices_ = torch.from_numpy(self._pending["annot_indices"])
            self._pending = None
        self._items_cache = None

    def gate_parameters(self) -> list[nn.Parameter]:
        return [p for name in ("gate_v", "gate_s") if hasattr(self, name) for p in getattr(self, name).parameters()]

    # -- training hooks --------------------------------------------------------------------------------------
    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adagrad at l_r over everything but R's policies (they have their own Adam)."""
        gate = {id(p) for p in self.gate_parameters()}
        params = [p for p in self.parameters() if p.requires_grad and id(p) not in gate]
        return torch.optim.Adagrad(params, lr=self.config.l_r)

    def lr_scale(self, progress: float) -> float:
        """lr_decay ** (completed epochs // decay_every); R's Adam follows the same schedule."""
        cfg = self.config
        scale = cfg.lr_decay ** math.floor(progress / cfg.decay_every)
        for name in ("gate_v", "gate_s"):
            if hasattr(self, name):
                getattr(self, name).set_lr_scale(scale)
        return scale

    def prepare(self, split: Split) -> None:
        super().prepare(split)
        if self.finetune_:
            self._device = devices.resolve_device(self.config.device)
            self.encoder.backbone.to(self._device)
            if self._pixels is None:
                raise DataError("encoder=finetune: the poster pixels are not loaded", field="encoder")
        self._items_cache = None

    def invalidate_cache(self) -> None:
        super().invalidate_cache()
        self._items_cache = None

    # -- item side -------------------------------------------------------------------------------------------
    def _pooled(self, items: Tensor) -> Tensor:
        """Encoder input [n, F]: the stored features, or (fine-tuning, in training) the backbone on the pixels."""
        if self.finetune_ and self.training:
            pixels = torch.from_numpy(np.ascontiguousarray(self._pixels[items.numpy()])).to(self._device)
            with devices.autocast(self._device):
                return self.encoder.pooled(pixels).float().cpu()
        return self.visual_input_[items]

    @torch.no_grad()
    def refresh_visual_input(self, chunk: int = 64) -> None:
        """Fine-tuning: recompute the stored pooled features of every item with the current backbone, so that
        scoring (and a saved model) needs no pixels."""
        if not self.finetune_ or self._pixels is None:
            return
        out = torch.empty_like(self.visual_input_)
        for start in range(0, len(out), chunk):
            idx = np.arange(start, min(start + chunk, len(out)))
            pixels = torch.from_numpy(np.ascontiguousarray(self._pixels[idx])).to(self._device)
            with devices.autocast(self._device):
                out[idx] = self.encoder.pooled(pixels).float().cpu()
        self.visual_input_ = out

    def annotations(self, items: Tensor, present: Tensor) -> Tensor:
        """s^ [n, De] of `items`; rows not `present` get no elements (zeros, and the LSTM ignores them)."""
        cols, offsets, _, counts = gather_csr_rows(self.annot_indptr_, self.annot_indices_, None, items)
        keep = torch.repeat_interleave(present, counts)  # [nnz]
        counts = torch.where(present, counts, torch.zeros_like(counts))
        offsets = torch.cumsum(counts, 0) - counts
        return self.fusion_semantic.annotation(cols[keep], offsets)

    def has_annotations(self, items: Tensor) -> Tensor:
        """bool [n]: the item has at least one annotation element."""
        return (self.annot_indptr_[items + 1] - self.annot_indptr_[items]) > 0

    def item_parts(self, items: Tensor, present: Tensor | None) -> dict[str, Tensor]:
        """Item-side quantities of Eq. 1-5 for item indices [n].

        Under R (level gr and above, in training) the visual and the semantic branch read their own copies of e,
        "e" and "e_s", so that `loss` can scale each branch's gradient into E with a hook on its copy.

        Args:
            items: int64 [n].
            present: bool [n] whose annotations enter Eq. 5 (None: none).

        Returns:
            {"e": [n, De] (the visual branch's copy), "e_s": [n, De] (the semantic branch's), "q": [n, D],
             "beta": [n], "c": [n, De] (levels >= ci), "s": [n, D] (levels >= ci), "x": [n, De] (base MF input)}
        """
        cfg = self.config
        level = _level(cfg)
        e = self.encoder(self._pooled(items))  # [n, De]
        out = {"q": rows(self.item_embedding, items), "beta": rows(self.item_bias[:, None], items)[:, 0]}
        if not self.training:  # never-trained rows of items absent from train count as 0 (like VBPR's cold rule)
            warm = self.warm_items_[items]
            out["q"] = out["q"] * warm[:, None]
            out["beta"] = out["beta"] * warm
        if level == 0:
            if cfg.base_input == "semantics" and cfg.backbone == "mf":
                every = torch.ones(len(items), dtype=torch.bool)
                out["x"] = self.annotations(items, every)  # MF(Semantics): annotations at test too
            else:
                out["x"] = e
            out["e"], out["c"] = e, e
            return out
        e_v, e_s = (e.clone(), e.clone()) if level >= 3 and self.training else (e, e)  # R's branch copies
        c = self.inference_gate(e_s) if level >= 2 else self.inference_map(e_s)  # [n, De] Eq. 4
        s_hat = None
        if present is not None and level >= 4 and self.annot_indices_.numel():
            present = present & self.has_annotations(items)
            s_hat = self.annotations(items, present)
        out.update(e=e_v, e_s=e_s, c=c, s=self.fusion_semantic(c, s_hat, present))  # Eq. 5
        return out

    def visual(self, p: Tensor, e: Tensor) -> Tensor:
        """v (Eq. 3 with the gate; MLP^v alone below level ta), p [..., D] broadcast against e [..., De]."""
        if _level(self.config) >= 2:
            return self.visual_gate(p, e)
        return F.leaky_relu(self.visual_mlp(e)).expand(*torch.broadcast_shapes(p.shape[:-1], e.shape[:-1]), -1)

    def fused(self, parts: dict[str, Tensor], v: Tensor | None, item_slice=slice(None)) -> Tensor:
        """f (Eq. 7): LeakyReLU(W [q || v || s] + b) as W_q q + W_v v + W_s s + b, broadcasting v's user axis."""
        d = self.config.dim_E
        if _level(self.config) == 0:
            return F.leaky_relu(self.fuse(parts["x"][item_slice]))
        w = self.fuse.weight  # [D, 3D]
        item_part = parts["q"][item_slice] @ w[:, :d].T + parts["s"][item_slice] @ w[:, 2 * d:].T + self.fuse.bias
        return F.leaky_relu(v @ w[:, d:2 * d].T + item_part)

    # -- scores ----------------------------------------------------------------------------------------------
    def pair_scores(self, users: Tensor, parts: dict[str, Tensor], slots: Tensor) -> tuple[Tensor, Tensor | None,
                                                                                             Tensor | None]:
        """Eq. 8 for users [B] and item slots [B, S] (rows of `parts`): (scores [B, S], v [B, S, D], s [B, S, D])."""
        cfg = self.config
        p = rows(self.user_embedding, users)  # [B, D]
        # rows() (index_select) rather than t[slots]: slots repeat, and plain indexing's CPU backward adds the
        # repeats in a thread-dependent order (the contract test's determinism check failed on 2 threads).
        base = self.alpha + rows(self.user_bias[:, None], users) + rows(parts["beta"][:, None], slots)[..., 0]  # [B, S]
        take = {k: rows(t, slots) for k, t in parts.items() if t.dim() == 2}  # [B, S, .]
        v = s = None
        if _level(cfg) == 0 and cfg.backbone == "vbpr":  # plain VBPR: f = q, content e
            interaction = (p[:, None] * take["q"]).sum(-1)
        else:
            if _level(cfg) >= 1:
                v = self.visual(p[:, None], take["e"])  # [B, S, D]
                s = take["s"]
            f = self.fused(take, v)  # [B, S, D]
            interaction = (p[:, None] * f).sum(-1)
        score = base + interaction
        if cfg.backbone == "vbpr":
            a = rows(self.user_content, users)  # [B, De]
            score = score + self.content_bias(take["c"])[..., 0] + (a[:, None] * take["c"]).sum(-1)
        return score, v, s

    def inference_parts(self) -> dict[str, Tensor]:
        """Item parts of every item for scoring, cached while in eval mode."""
        if self._items_cache is not None and not self.training:
            return self._items_cache
        with torch.no_grad():
            if self.finetune_ and self._pixels is not None:
                self.refresh_visual_input()
            items = torch.arange(self.dims_["n_items"])
            present = (torch.ones(len(items), dtype=torch.bool) if self.config.test_annotations == "present"
                       else None)
            parts = {k: v.detach() for k, v in self.item_parts(items, present).items()}
        if not self.training:
            self._items_cache = parts
        return parts

    @torch.no_grad()
    def score(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        """Eq. 8 for users [B] against items [I'] (default all), the same numbers as `pair_scores`.

        The item-only terms (beta_i, W_q q_i + W_s s_i + b, beta_c) are computed once; with T_v (level ta and
        above) v depends on the user, so users go in blocks of score_chunk and f is formed per [b, I', D] block.
        """
        cfg = self.config
        level = _level(cfg)
        parts = self.inference_parts()
        if items is not None:
            parts = {k: v[torch.as_tensor(items, dtype=torch.int64)] for k, v in parts.items()}
        d = cfg.dim_E
        base_items = parts["beta"][None, :] + self.alpha  # [1, I']
        if cfg.backbone == "vbpr":
            base_items = base_items + self.content_bias(parts["c"])[:, 0][None, :]
        item_part = None
        if level == 0 and cfg.backbone == "vbpr":
            f_items = parts["q"]  # plain VBPR: f = q
        elif level <= 1:
            f_items = self.fused(parts, self.visual(torch.zeros(1, d), parts["e"]) if level == 1 else None)  # [I', D]
        else:
            w = self.fuse.weight
            item_part = parts["q"] @ w[:, :d].T + parts["s"] @ w[:, 2 * d:].T + self.fuse.bias  # [I', D]
        out = torch.empty(len(users), len(parts["beta"]))
        # The pair-wise T_v blocks are the cost of scoring ([b, I', D] per block): on CUDA they run there, in
        # larger blocks, from copies of the few tensors they need (float32: the same numbers up to rounding).
        dev = self.scoring_device() if item_part is not None else torch.device("cpu")
        chunk = cfg.score_chunk if dev.type == "cpu" else max(cfg.score_chunk, 512)
        if item_part is not None:
            gate = self.visual_gate if dev.type == "cpu" else copy.deepcopy(self.visual_gate).to(dev)
            e_dev, item_dev = parts["e"].to(dev), item_part.to(dev)
            w_v = self.fuse.weight[:, d:2 * d].T.to(dev)
        for start in range(0, len(users), chunk):
            u = users[start : start + chunk]
            p = rows(self.user_embedding, u)  # [b, D]
            block = base_items + rows(self.user_bias[:, None], u)  # [b, I']
            if item_part is None:
                block = block + p @ f_items.T
            else:
                p_dev = p.to(dev)
                v = gate(p_dev[:, None, :], e_dev[None, :, :])  # [b, I', D]
                f = F.leaky_relu(v @ w_v + item_dev[None])  # [b, I', D]
                block = block + torch.einsum("bd,bid->bi", p_dev, f).cpu()
            if cfg.backbone == "vbpr":
                block = block + rows(self.user_content, u) @ parts["c"].T  # a_u . c_i
            out[start : start + len(u)] = block
        return out

    def scoring_device(self) -> torch.device:
        """Where the pair-wise scoring blocks run: the config's device ("auto": CUDA when torch sees one)."""
        return devices.resolve_device(self.config.device)

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """BPR on (positive, sampled negative); R's gates learn from the branch losses (Eq. 6)."""
        cfg = self.config
        level = _level(cfg)
        users, items = self.batch_pairs(batch, cfg.num_neg, generator)  # [B], [B, 1 + K]
        unique, slots, _ = compact(items, self.dims_["n_items"])
        present = None
        if level >= 4:
            present = torch.rand(len(unique), generator=generator) >= cfg.pi_dropout  # [n] PI kept
        parts = self.item_parts(unique, present)
        scores, v, s = self.pair_scores(users, parts, slots)  # [B, 1 + K]
        rank = -F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()
        p = rows(self.user_embedding, users)
        reg = p.pow(2).sum(-1).mean() + rows(parts["q"].pow(2).sum(-1)[:, None], slots).mean()
        if cfg.backbone == "vbpr":
            reg = reg + rows(self.user_content, users).pow(2).sum(-1).mean()
        loss = rank + cfg.reg_weight * reg
        logged = {"loss": loss.item(), "bpr": rank.item(), "reg": reg.item()}
        if level >= 3 and self.training:
            with torch.no_grad():  # the branch losses that reward R (J = exp(-L)), from this batch's forward
                branch = {"v": -F.logsigmoid(((p[:, None] * v).sum(-1)[:, :1] - (p[:, None] * v).sum(-1)[:, 1:]))
                          .mean().item(),
                          "s": -F.logsigmoid(((p[:, None] * s).sum(-1)[:, :1] - (p[:, None] * s).sum(-1)[:, 1:]))
                          .mean().item()}
            for key, gate, tensor in (("v", self.gate_v, parts["e"]), ("s", self.gate_s, parts["e_s"])):
                dqn = gate.update(branch[key])  # the previous action's reward is this batch's loss
                factor = gate.act(generator)
                if tensor.requires_grad and factor != 1.0:
                    tensor.register_hook(lambda grad, f=factor: grad * f)
                if dqn is not None:
                    logged[f"dqn_{key}"] = dqn
                logged[f"scale_{key}"] = factor
        return loss, logged


def _standardise(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Columns z-scored over the items that have content (item-side statistics only: no interaction leaks);
    rows without content stay 0."""
    values = np.asarray(values, dtype=np.float32)
    have = np.ones(len(values), bool) if mask is None else np.asarray(mask, bool)
    if not have.any():
        return np.zeros_like(values)
    mean = values[have].mean(0)
    std = values[have].std(0)
    out = (values - mean) / np.where(std > 0, std, 1.0)
    out[~have] = 0.0
    return out.astype(np.float32)
