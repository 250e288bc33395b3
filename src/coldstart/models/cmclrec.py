"""CMCLRec: cross-modal contrastive learning for user cold-start sequential recommendation (Xu et al., SIGIR'24).

Equations to code (docs/models/cmclrec.md has the full table and the choices where the paper is silent):

    3.3 augmentation   F1, F2 = disjoint masks of the user's feature entries; S1, S2 = disjoint masks of the
                       sequence's items (mask token)                                            (Eq. 1)
                       h_f = Psi_f(F) (MLP -> L tokens of width d), h_s = Psi_s(S) (causal Transformer block
                       over the backbone's embedding layer)                                     (Eq. 2)
                       L_c^f, L_c^s = cosine InfoNCE with temperature, in-batch negatives      (Eqs. 3-4)
                       (h_f views flattened; h_s views: the newest position's output)
    3.4 cross-modal    T_f = Attn_f(h_f), T_s = Attn_s(h_s) (one head, M1, M2, M3; causal for T_s)  (Eqs. 5-7)
                       p = E(T), T^ = D(p); L_s, L_f = ||T^ - T||^2                             (Eq. 8)
                       L_cross = MMD_gauss(P_s, P_f) + ||D_s(p_s) - T_f||^2                     (Eqs. 9-10)
                       L_c2l = L_s + L_f + lambda L_cross                                       (Eq. 11)
    3.5 sequential     X = T_s for a warm user, D_s(E_f(T_f)) for a cold one; G = R(X)          (Eqs. 12-13)
                       L_rec: softmax over all items (Eq. 14): a warm user's next item at every position;
                       a (simulated) cold user's training items from the newest output g_n
    3.6 training       stage 1: L_pre = alpha L_c^f + beta L_c^s + L_c2l on warm users           (Eq. 15)
                       stage 2: L_fine = eta L_pre + L_rec                                      (Eq. 16)

Algorithm 1 line 1 ("remove the interactions of some users to simulate cold-start users"): in stage 2 each
batch user is served through the simulated sequence with probability `cold_rate` (drawn per epoch), the rest
through their real sequence, so R learns to read both kinds of input.

Ablations (Table 2), `ablation=`: "noda" drops L_c^f and L_c^s (alpha = beta = 0); "nocl" drops the
cross-modal module (no attention, auto-encoders, MMD: L_c2l = 0) and maps h_f to the simulated sequence with
a linear map per token; "none" does both.

Stages have their own checkpoint folders (`<run>/checkpoints/pretrain` for stage 1, the run's own for stage 2,
as models/deepmusic.py), so an interrupted run resumes inside either stage and replays it exactly.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

import torch
from torch import Tensor, nn

from coldstart.data.sequences import disjoint_masks, masked_views, train_sequences
from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.base import Recommender
from coldstart.models.bpr import check_fraction, check_positive
from coldstart.models.pretrained import stage_options
from coldstart.models.sasrec import SASRec, SASRecConfig, next_item_loss
from coldstart.models.user_content import UserContent, UserInput, prepare_user_content
from coldstart.nn.content import gather_csr_rows
from coldstart.nn.losses import cosine_info_nce, median_bandwidth, mmd, reconstruction
from coldstart.nn.sequence import BACKBONES, AutoEncoder, FeatureEncoder, SASRecBlock, SelfAttention

log = logging.getLogger("coldstart")

ABLATIONS = ("full", "noda", "nocl", "none")


@dataclasses.dataclass(frozen=True)
class CMCLRecConfig(SASRecConfig):
    """SASRecConfig (the backbone's settings and stage 2's training settings) plus CMCLRec's own.

    Attributes:
        backbone: the sequential model R (a key of nn/sequence.BACKBONES).
        l_r: Adam learning rate of both stages (the paper: 1e-4).
        alpha, beta: weights of L_c^f and L_c^s (Eq. 15; the paper: 0.5, 0.5).
        lambda_cross: lambda of Eq. 11 (the paper: 0.3).
        eta: weight of L_pre in stage 2 (Eq. 16; the paper: 0.7).
        temperature: tau of Eqs. 3-4 (the paper gives no value).
        mask_rate: probability that a feature entry / sequence item is masked in each view (disjoint views).
        mmd_sigma: Gaussian kernel width sigma (Eq. 10); 0 = the median heuristic per batch.
        code_dim: width of p = E(T) (the paper gives none; d by default).
        feature_hidden: hidden width of the feature MLP Psi_f.
        encoder_blocks: Transformer blocks of the sequence encoder Psi_s.
        cold_rate: share of stage-2 batch users served through their simulated sequence (Algorithm 1 line 1).
        pre_epochs: stage-1 epochs (no validation signal: self-supervised; the last epoch is kept).
        ablation: "full", or Table 2's "noda", "nocl", "none".
        user_modalities: user modalities to use (default: every numeric one).
        num_epoch: most stage-2 epochs (early stopping on validation recall@valid_k, patience epochs).
        valid_scenario: stage 2's early-stopping scenario (default all users, as the paper's overall column).
    """

    backbone: str = "sasrec"
    l_r: float = 0.001
    num_epoch: int = 100
    alpha: float = 0.5
    beta: float = 0.5
    lambda_cross: float = 0.3
    eta: float = 0.7
    temperature: float = 0.2
    mask_rate: float = 0.2
    mmd_sigma: float = 0.0
    code_dim: int = 64
    feature_hidden: int = 256
    encoder_blocks: int = 1
    cold_rate: float = 0.5
    pre_epochs: int = 20
    ablation: str = "full"
    user_modalities: tuple[str, ...] | None = None
    valid_scenario: str = "all"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "temperature", "code_dim", "feature_hidden")
        check_fraction(self, "alpha", "beta", "eta", "cold_rate")
        if self.lambda_cross < 0:
            raise DataError(f"must be >= 0, got {self.lambda_cross}", field="lambda_cross")
        if not 0.0 <= self.mask_rate <= 0.5:
            raise DataError(f"must be in [0, 0.5] (two disjoint views), got {self.mask_rate}", field="mask_rate")
        if self.mmd_sigma < 0:
            raise DataError(f"must be >= 0 (0: median heuristic), got {self.mmd_sigma}", field="mmd_sigma")
        if self.pre_epochs < 0 or self.encoder_blocks < 0:
            field = "pre_epochs" if self.pre_epochs < 0 else "encoder_blocks"
            raise DataError(f"must be >= 0, got {getattr(self, field)}", field=field)
        if self.backbone not in BACKBONES:
            raise DataError(f"unknown backbone {self.backbone!r} (have: {', '.join(BACKBONES)})", field="backbone")
        if self.ablation not in ABLATIONS:
            raise DataError(f"must be one of {', '.join(ABLATIONS)}, got {self.ablation!r}", field="ablation")
        if self.user_modalities is not None:
            object.__setattr__(self, "user_modalities", tuple(self.user_modalities))  # JSON gives a list


@dataclasses.dataclass(frozen=True)
class _StageConfig:
    """train.py's settings for the self-supervised stage 1 (no validation: the last epoch is kept)."""

    num_epoch: int
    l_r: float
    patience: int
    min_epochs: int
    valid_k: int


class _Pretrain(nn.Module):
    """Stage 1 as a train.py model: the CMCLRec's own parameters, batches of warm users, loss L_pre (Eq. 15)."""

    def __init__(self, model: "CMCLRec") -> None:
        super().__init__()
        self.model = model
        cfg = model.config
        self.config = _StageConfig(cfg.pre_epochs, cfg.l_r, cfg.patience, 0, cfg.valid_k)

    def prepare(self, split: Split) -> None:
        self.model.prepare(split)

    def batches(self, generator: torch.Generator) -> list[Tensor]:
        return self.model.batches(generator)

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        window = self.model.windows_[batch][:, 1:]  # [B, L]: the newest L items, as at inference
        loss, parts = self.model.pretrain_loss(batch, window, generator)
        return loss, {"loss": loss.item(), **parts}


class CMCLRec(Recommender):
    """A sequential backbone whose cold users read a sequence simulated from their features."""

    name = "cmclrec"
    Config = CMCLRecConfig
    cold_items = "none"
    # "content": learnt from user attributes (13a's value); here via the sequence simulated from them (Eq. 13)
    cold_users = "content"
    search_space = {"l_r": [1e-4, 1e-3], "cold_rate": [0.15, 0.5], "eta": [0.3, 0.7]}
    _cache: Tensor | None = None

    def __init__(self, **hyper) -> None:
        super().__init__(**hyper)
        self._user_input: UserInput | None = None

    # -- user content (models/user_content.py) --------------------------------------------------------------
    def dims_for(self, split: Split) -> dict[str, int]:
        dims = super().dims_for(split)
        self._user_input = prepare_user_content(self.name, split, self.config.user_modalities)
        dims.update(self._user_input.dims)
        return dims

    def build(self, dims: dict[str, int]) -> None:
        cfg = self.config
        n_users, n_items, d, length = dims["n_users"], dims["n_items"], cfg.dim_E, cfg.max_len
        self.user_content_ = UserContent(dims, self._user_input)  # every user's normalised attributes
        self._user_input = None
        self.register_buffer("recent_", torch.zeros(n_users, length, dtype=torch.int64))
        # R: the sequential backbone; its embedding layer is also the input layer of Psi_s.
        self.backbone = BACKBONES[cfg.backbone](n_items, d, length, cfg.n_blocks, cfg.dropout)
        self.seq_blocks = nn.ModuleList(SASRecBlock(d, cfg.dropout) for _ in range(cfg.encoder_blocks))  # Psi_s
        self.seq_norm = nn.LayerNorm(d)
        self.feature_encoder = FeatureEncoder(dims["user_dense"], dims["user_sparse"], cfg.feature_hidden,
                                              length, d)  # Psi_f
        if self.uses_cross_modal:
            self.attention_s = SelfAttention(d, causal=True)  # T_s: position t summarises items <= t
            self.attention_f = SelfAttention(d, causal=False)  # T_f: feature tokens see each other
            self.autoencoder_s = AutoEncoder(length, d, cfg.code_dim)  # (E_s, D_s)
            self.autoencoder_f = AutoEncoder(length, d, cfg.code_dim)  # (E_f, D_f)
        else:
            self.linear_map = nn.Linear(d, d)  # NoCL / None: h_f -> simulated sequence, per token
        self._cache = None

    @property
    def uses_cross_modal(self) -> bool:
        return self.config.ablation in ("full", "noda")

    @property
    def uses_augmentation(self) -> bool:
        return self.config.ablation in ("full", "nocl")

    # -- encoders -------------------------------------------------------------------------------------------
    def user_content(self, users: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(dense [B, Dd], columns [nnz], offsets [B], weights [nnz]) of the users' normalised content."""
        return self.user_content_.inputs(users)

    def encode_sequence(self, items: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """h_s = Psi_s(S) [B, L, d]: the backbone's embedding layer, causal blocks, LayerNorm."""
        valid = items != 0
        x = self.backbone.embed(items, generator)
        for block in self.seq_blocks:
            x = block(x, valid, generator)
        return self.seq_norm(x) * valid[..., None].to(x.dtype)

    def sequence_input(self, h_s: Tensor, valid: Tensor) -> Tensor:
        """T_s [B, L, d] (Eqs. 5-7 over h_s; h_s itself under NoCL / None), padding rows zero."""
        if not self.uses_cross_modal:
            return h_s
        return self.attention_s(h_s, valid) * valid[..., None].to(h_s.dtype)

    def simulated_sequence(self, content: tuple[Tensor, ...], generator: torch.Generator | None = None) -> Tensor:
        """T^_s' = D_s(E_f(T_f)) [B, L, d] from user content (a linear map of h_f under NoCL / None)."""
        h_f = self.feature_encoder(*content)  # [B, L, d]
        if not self.uses_cross_modal:
            return self.linear_map(h_f)
        return self.autoencoder_s.decode(self.autoencoder_f.encode(self.attention_f(h_f)))

    # -- losses ---------------------------------------------------------------------------------------------
    def pretrain_loss(self, users: Tensor, items: Tensor, generator: torch.Generator) -> tuple[Tensor, dict]:
        """L_pre = alpha L_c^f + beta L_c^s + L_c2l (Eq. 15) for users [B] with sequences items [B, L]."""
        cfg = self.config
        content = self.user_content(users)
        valid = items != 0
        parts: dict[str, float] = {}
        total = items.new_zeros((), dtype=torch.float32)
        if self.uses_augmentation:
            dense, cols, offsets, weights = content
            dense_1, dense_2 = disjoint_masks(dense != 0, cfg.mask_rate, generator)  # Eq. 1, feature entries
            sparse_1, sparse_2 = disjoint_masks(weights != 0, cfg.mask_rate, generator)
            h_f1 = self.feature_encoder(dense.masked_fill(dense_1, 0.0), cols, offsets,
                                        weights.masked_fill(sparse_1, 0.0))  # [B, L, d]
            h_f2 = self.feature_encoder(dense.masked_fill(dense_2, 0.0), cols, offsets,
                                        weights.masked_fill(sparse_2, 0.0))
            loss_f = cosine_info_nce(h_f1.flatten(1), h_f2.flatten(1), cfg.temperature)  # Eq. 3
            view_1, view_2 = masked_views(items, cfg.mask_rate, self.dims_["n_items"] + 1, generator)
            h_s1 = self.encode_sequence(view_1, generator)[:, -1]  # [B, d]: the newest position sees the sequence
            h_s2 = self.encode_sequence(view_2, generator)[:, -1]
            loss_s = cosine_info_nce(h_s1, h_s2, cfg.temperature)  # Eq. 4
            total = total + cfg.alpha * loss_f + cfg.beta * loss_s
            parts.update(cl_f=loss_f.item(), cl_s=loss_s.item())
        if self.uses_cross_modal:
            t_s = self.sequence_input(self.encode_sequence(items, generator), valid)  # [B, L, d]
            t_f = self.attention_f(self.feature_encoder(*content))  # [B, L, d]
            p_s, p_f = self.autoencoder_s.encode(t_s), self.autoencoder_f.encode(t_f)  # [B, d_p]
            rec_s = self.autoencoder_s.decode(p_s)  # T^_s
            loss_rs, loss_rf = reconstruction(rec_s, t_s), reconstruction(self.autoencoder_f.decode(p_f), t_f)
            sigma = cfg.mmd_sigma or median_bandwidth(p_s, p_f)
            loss_mmd = mmd(p_s, p_f, sigma)
            loss_cross = loss_mmd + reconstruction(rec_s, t_f)  # Eq. 9
            total = total + loss_rs + loss_rf + cfg.lambda_cross * loss_cross  # Eq. 11
            parts.update(rec_s=loss_rs.item(), rec_f=loss_rf.item(), mmd=loss_mmd.item(), cross=loss_cross.item())
        return total, parts

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Stage 2: L_fine = eta L_pre + L_rec (Eq. 16), a `cold_rate` share of users through simulated input."""
        cfg = self.config
        window = self.windows_[batch]  # [B, L + 1]
        inputs, targets = window[:, :-1], window[:, 1:]  # [B, L]
        cold = torch.rand(len(batch), generator=generator) < cfg.cold_rate  # [B] flag of Eq. 12 (simulated)
        pre, parts = self.pretrain_loss(batch, inputs, generator)
        valid = inputs != 0
        real = self.sequence_input(self.encode_sequence(inputs, generator), valid)  # T_s [B, L, d]
        simulated = self.simulated_sequence(self.user_content(batch), generator)  # T^_s' [B, L, d]
        x = torch.where(cold[:, None, None], simulated, real)  # Eq. 13
        x_valid = valid | cold[:, None]
        out = self.backbone.run(x, x_valid, generator)  # G = R(X) [B, L, d]
        items = self.backbone.item_vectors(self.dims_["n_items"])  # [I, d]
        warm_valid = valid & ~cold[:, None]
        loss_warm = next_item_loss(out, warm_valid, targets, items)
        loss_cold = self.set_loss(out[cold, -1], batch[cold], items)
        n_warm, n_cold = int(warm_valid.any(1).sum()), int(cold.sum())
        rec = (n_warm * loss_warm + n_cold * loss_cold) / max(n_warm + n_cold, 1)
        total = cfg.eta * pre + rec
        return total, {"loss": total.item(), "rec": rec.item(), "rec_warm": loss_warm.item(),
                       "rec_cold": loss_cold.item(), "pre": pre.item(), **parts}

    def set_loss(self, g: Tensor, users: Tensor, items: Tensor) -> Tensor:
        """Mean over users of -1/|S_u| sum_(i in S_u) ln softmax(g_u . E^T)_i: Eq. 14 with every training item of
        a simulated cold user as the target of g_n (the items a cold test user is evaluated on are a set)."""
        if not len(users):
            return g.sum() * 0.0
        log_probs = torch.log_softmax(g @ items.T, dim=-1)  # [C, I]
        cols, _, _, counts = gather_csr_rows(self.seen_indptr_, self.seen_indices_, None, users)
        rows = torch.repeat_interleave(torch.arange(len(users)), counts)
        picked = log_probs[rows, cols]  # [nnz]
        per_user = torch.zeros(len(users)).index_add(0, rows, picked) / counts.clamp(min=1)
        return -per_user.mean()

    # -- training -------------------------------------------------------------------------------------------
    def _fit(self, split: Split, options=None) -> None:
        from coldstart import train

        if self.config.ablation == "none":  # no augmentation and no cross-modal module: stage 1 has no loss
            log.info("cmclrec ablation 'none': L_pre is empty, stage 1 is skipped")
        elif self.config.pre_epochs > 0:
            stage1 = dataclasses.replace(stage_options(options, "pretrain"), valid_scenario=None)
            pretrain = _Pretrain(self)
            train.fit(pretrain, split, stage1)
            self.pretrain_history_ = pretrain.history_
        train.fit(self, split, stage_options(options, None))

    def prepare(self, split: Split) -> None:
        """Training windows (max_len + 1 newest items), the inference history, and the users with a history."""
        seqs = train_sequences(split, self.config.max_len + 1)
        self.windows_ = seqs.items  # [U, L + 1]
        self.recent_ = seqs.items[:, 1:].clone()  # [U, L]
        self.train_users_ = torch.nonzero(seqs.lengths >= 1).flatten()
        if not len(self.train_users_):
            raise DataError("no user has training interactions", field="train")
        self._cache = None

    def batches(self, generator: torch.Generator) -> list[Tensor]:
        """One epoch: every user with training interactions (the warm users) in a random order."""
        order = self.train_users_[torch.randperm(len(self.train_users_), generator=generator)]
        return list(torch.split(order, self.config.batch_size))

    # -- inference ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sequence_embeddings(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """(T_s from the newest training window, T^_s' simulated from features), each [B, L, d] (Figure 2)."""
        history = self.recent_[users]
        real = self.sequence_input(self.encode_sequence(history), history != 0)
        return real, self.simulated_sequence(self.user_content(users))

    @torch.no_grad()
    def user_vectors(self) -> Tensor:
        """g_n [U, d]: R over T_s for users with training items, over the simulated sequence otherwise."""
        if self._cache is not None and not self.training:
            return self._cache
        outs = []
        for users in torch.split(torch.arange(self.dims_["n_users"]), 1024):
            history = self.recent_[users]
            has = (history != 0).any(1)  # [B] warm: a real sequence exists
            real, simulated = self.sequence_embeddings(users)
            x = torch.where(has[:, None, None], real, simulated)
            outs.append(self.backbone.run(x, (history != 0) | ~has[:, None])[:, -1])
        out = torch.cat(outs)  # [U, d]
        if not self.training:
            self._cache = out
        return out

    # The same scoring as SASRec: user_vectors() (here with simulated sequences for cold users) . item embeddings.
    score = SASRec.score


# -- Figure 2 ---------------------------------------------------------------------------------------------------
def sequence_tsne(models: dict[str, CMCLRec], users: Tensor, path, seed: int = 0, neighbours: int = 10) -> dict:
    """Figure 2 of the paper: t-SNE of real vs simulated sequence embeddings of the same (warm) users, one column
    per model (e.g. {"before training": untrained, "after training": trained}); PNG written atomically.

    Row 1 compares what R reads: T_s (real) with T^_s' = D_s(E_f(T_f)) (simulated). Row 2 is the paper's own
    comparison (its Figure 2 caption): the reconstruction T^_s = D_s(E_s(T_s)) with T^_s', both decoder outputs.
    Each user's [L, d] block is flattened, reduced to 50 dimensions by PCA (fitted on both sets together), then
    embedded by scikit-learn's TSNE. Each panel also gets a mixing score: the share of each point's
    `neighbours` nearest neighbours (in the PCA space) that come from the other set (0.5: as mixed as two equal
    sets can be; 0: the sets lie apart).

    Returns:
        {"row title | column title": mixing score}.
    """
    from pathlib import Path

    from sklearn import decomposition, manifold, neighbors  # a core dependency

    from coldstart.studies.plots import _pyplot, save_figure

    plt = _pyplot()
    rows = ("T_s vs simulated", "D_s(E_s(T_s)) vs simulated (paper)")
    fig, axes = plt.subplots(2, len(models), figsize=(5.2 * len(models), 9.6), squeeze=False)
    mixing = {}
    for col, (title, model) in enumerate(models.items()):
        model.eval()
        real, simulated = model.sequence_embeddings(users)  # [n, L, d] each
        with torch.no_grad():
            pairs = [real, model.autoencoder_s.decode(model.autoencoder_s.encode(real))]
        for row, first in enumerate(pairs):
            ax = axes[row][col]
            both = torch.cat([first.flatten(1), simulated.flatten(1)]).double().numpy()  # [2n, L d]
            reduced = decomposition.PCA(n_components=min(50, *both.shape), random_state=seed).fit_transform(both)
            labels = np.repeat([0, 1], len(users))
            index = neighbors.NearestNeighbors(n_neighbors=neighbours + 1).fit(reduced)
            near = index.kneighbors(reduced, return_distance=False)[:, 1:]  # [2n, k], self excluded
            key = f"{rows[row]} | {title}"
            mixing[key] = float((labels[near] != labels[:, None]).mean())
            xy = manifold.TSNE(n_components=2, random_state=seed, init="pca",
                               perplexity=min(30.0, len(both) / 4)).fit_transform(reduced)
            name = "real $T_s$" if row == 0 else "reconstructed $\\hat{T}_s$"
            ax.scatter(xy[labels == 0, 0], xy[labels == 0, 1], s=5, c="tab:red", label=name)
            ax.scatter(xy[labels == 1, 0], xy[labels == 1, 1], s=5, c="tab:blue", label="simulated $\\hat{T}_{s'}$")
            ax.set_title(f"{title}: {rows[row]}\ncross-set neighbours {mixing[key]:.2f}", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
            ax.legend(loc="best", fontsize=8, markerscale=3)
    save_figure(fig, Path(path))  # atomic; closes the figure
    return mixing
