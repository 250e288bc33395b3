"""CLCRec: Contrastive Learning for Cold-Start Recommendation (Wei et al., ACM MM 2021).

    L = lambda * L_RE + (1 - lambda) * L_UI + eta * ||Theta||                                     (Eq. 5)
    L_UI = -E_(u,i) ln g(z_u, z_i) / (g(z_u, z_i) + sum_k g(z_u, z_jk)),  g = exp(z_u . z_i / tau)    (Eq. 10)
    L_RE = -E_i ln h(z_i, f_i) / (h(z_i, f_i) + sum_k h(z_i, f_jk)),      h = exp(cos(z_i, f_j) / tau) (Eq. 12)
    f_i = W2 leaky_relu(W1 x_i + b1) + b2                                                          (Eq. 11)

z comes from the CF encoder (encoder="mf": CEN_MF, "lightgcn": CEN_GCN). Hybrid contrastive training: in
L_UI item slots use f instead of z, each with probability rho (hybrid="per_slot"), or int(N rho) slots drawn with
replacement as the official code does (hybrid="official", effective rate 1 - e^-rho). ||Theta|| is the official
regulariser: the mean L2 norm (not squared) of the batch's user rows plus that of its item slots, halved. At
inference users use z_u, warm items z_i and cold items f_i. docs/models/clcrec.md maps every equation to this code.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from coldstart.errors import DataError
from coldstart.models.bpr import check_fraction, check_positive
from coldstart.models.content import ContentConfig, ContentRecommender
from coldstart.models.embedding import ENCODERS, batch_mean, compact, rows
from coldstart.nn.device import DeviceSetting
from coldstart.nn.losses import info_nce


HYBRID = ("per_slot", "official")


@dataclasses.dataclass(frozen=True)
class CLCRecConfig(DeviceSetting, ContentConfig):
    """Hyperparameters under the official names and meanings; defaults from the official README's Movielens
    command except num_sample 0.2 (0.5 there), chosen on ml-100k's validation split (docs/models/clcrec.md).

    The shared training settings (dim_E, l_r, batch_size, num_epoch, patience, min_epochs, valid_k) are
    documented in TrainedConfig, the content ones (hidden, has_v / has_a / has_t, modalities) in ContentConfig;
    here reg_weight is eta (weight of the official mean-norm regulariser, see `CLCRec.regularizer`), num_neg is
    K of L_UI, batch_size is 256.

    Attributes:
        encoder: CF encoder, "mf" (CEN_MF) or "lightgcn" (CEN_GCN).
        n_layers: propagation layers of the lightgcn encoder.
        num_neg_re: K of L_RE; None reuses the U-I negatives (as the official code does); an integer draws
            that many other training items per anchor.
        lr_lambda: lambda, weight of L_RE (1 - lambda weighs L_UI).
        temp_value: tau, temperature of both density ratios.
        num_sample: rho, the share of item slots of L_UI that use their feature representation.
        hybrid: how slots are chosen: "per_slot", each independently with probability rho; "official",
            int(N rho) of the batch's N slots drawn with replacement (distinct share 1 - e^-rho).
        device: where it trains and scores: "auto" (CUDA when torch sees a GPU, else the CPU), "cpu", "cuda" or
            "cuda:N" (nn/device.py); negatives and hybrid swaps are drawn on the CPU either way, scores come back
            on the CPU.
    """

    reg_weight: float = 0.1
    num_neg: int = 128
    batch_size: int = 256
    encoder: str = "mf"
    n_layers: int = 3
    num_neg_re: int | None = None
    lr_lambda: float = 0.5
    temp_value: float = 2.0
    num_sample: float = 0.2
    hybrid: str = "per_slot"

    def __post_init__(self) -> None:
        super().__post_init__()  # ContentConfig's checks, then the device (DeviceSetting)
        if self.encoder not in ENCODERS:
            raise DataError(f"unknown encoder {self.encoder!r} (use {', '.join(ENCODERS)})", field="encoder")
        check_positive(self, "temp_value")
        check_fraction(self, "lr_lambda", "num_sample")
        if self.hybrid not in HYBRID:
            raise DataError(f"unknown hybrid {self.hybrid!r} (use {', '.join(HYBRID)})", field="hybrid")
        if self.num_neg_re is not None and self.num_neg_re < 1:
            raise DataError(f"must be >= 1 or null, got {self.num_neg_re}", field="num_neg_re")
        if self.n_layers < 0:
            raise DataError(f"must be >= 0, got {self.n_layers}", field="n_layers")


class CLCRec(ContentRecommender):
    """CLCRec with a CEN_MF or CEN_GCN encoder; cold items are scored through their content."""

    name = "clcrec"
    Config = CLCRecConfig
    cold_items = "content"
    trains_on_device = True

    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        """Cold items are represented by their feature representations f_i."""
        return self.content_features(torch.nonzero(~self.warm_items_).flatten())

    def other_items(self, anchors: Tensor, n: int, generator: torch.Generator) -> Tensor:
        """int64 [B, n]: training items drawn uniformly, none equal to its row's anchor (R-E negatives); CPU anchors
        and draws."""
        pool = self.sampler_.pool
        if len(pool) < 2:
            raise DataError("R-E negatives need at least two training items", field="num_neg_re")
        out = pool[torch.randint(len(pool), (len(anchors), n), generator=generator)]
        same = out == anchors[:, None]
        while same.any():
            out[same] = pool[torch.randint(len(pool), (int(same.sum()),), generator=generator)]
            same = out == anchors[:, None]
        return out

    def training_warning(self, history: list[dict]) -> str | None:
        """A warning when L_UI has not left its starting value ln(1 + K) for the first 5 epochs, else None.

        The official regulariser is a mean norm: its pull toward zero has the same size however small the id
        embeddings are, so a large `reg_weight` with few steps per epoch (a large batch) or a small 1 - lambda can
        hold them at zero, where every U-I logit is equal (docs/results.md, Figure 7 and CiteULike-a).
        """
        start = math.log(1 + self.config.num_neg)
        first = [record.get("ui") for record in history[:5]]
        if len(first) < 5 or any(v is None or abs(v - start) > 0.005 for v in first):
            return None
        return (f"clcrec: the U-I loss is still ln(1 + num_neg) = {start:.4f} after 5 epochs: the id embeddings are "
                f"not learning (reg_weight={self.config.reg_weight} may hold them at zero; try a smaller reg_weight "
                f"or batch_size)")

    def hybrid_swap(self, shape: torch.Size, generator: torch.Generator) -> Tensor:
        """bool [B, 1 + K]: the L_UI slots that use f instead of z.

        "per_slot": each slot independently with probability rho. "official": int(N rho) flat slot indices
        (row-major over the N = B (1 + K) slots) drawn uniformly with replacement, as the official code
        does, so repeats make the swapped share about 1 - e^-rho, not rho.
        """
        rho = self.config.num_sample
        if self.config.hybrid == "per_slot":
            return torch.rand(shape, generator=generator) < rho
        n = shape[0] * shape[1]
        drawn = torch.randint(n, (int(n * rho),), generator=generator)  # [int(N rho)], repeats allowed
        swap = torch.zeros(n, dtype=torch.bool)
        swap[drawn] = True
        return swap.view(shape)

    def regularizer(self, users: Tensor, items: Tensor) -> Tensor:
        """The official ||Theta||: (mean ||e_u|| over the batch's users + mean ||e_j|| over its item slots) / 2.

        Plain L2 norms of the id embeddings (not squared), so `reg_weight` has its official meaning. The
        official code repeats each user once per slot, which leaves the user mean unchanged.

        Args:
            users: int64 [B]; items: int64 [B, 1 + K].
        """
        norm = lambda r: torch.linalg.vector_norm(r, dim=-1)  # noqa: E731
        return (batch_mean(self.user_embedding, users, norm) + batch_mean(self.item_embedding, items, norm)) / 2

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Eq. 5 on one batch of positive pairs, with hybrid contrastive training in L_UI.

        Every distinct item of the batch is encoded and scored once: logits come from [B, n] products of
        the batch's users / anchors with the n distinct items, gathered at the sampled slots. This equals
        scoring every (row, slot) pair separately, without materialising [B, 1 + K, D] tensors.
        """
        cfg = self.config
        device = self.device_
        users, items = self.batch_pairs(batch, cfg.num_neg, generator)  # [B], [B, 1 + K], drawn on the CPU
        shared = cfg.num_neg_re is None  # L_RE reuses the U-I slots: anchor i, then the U-I negatives
        if shared:
            both = items  # [B, 1 + K]
        else:
            re_items = torch.cat([items[:, :1], self.other_items(items[:, 0], cfg.num_neg_re, generator)], 1)
            both = torch.cat([items, re_items], 1)  # [B, 1 + K + 1 + K']
        users, items, both = users.to(device), items.to(device), both.to(device)  # the same tensors on the CPU
        unique, inverse, _ = compact(both, self.dims_["n_items"])
        slot_ui = inverse[:, : items.shape[1]]  # [B, 1 + K] positions in `unique`
        slot_re = slot_ui if shared else inverse[:, items.shape[1]:]  # [B, 1 + K']
        f = self.content_features(unique)  # [n, D]: the feature encoder sees only the batch's items

        z_users, z_items = self.encode()
        z_u = rows(z_users, users)  # [B, D]
        z = rows(z_items, unique)  # [n, D]
        # L_UI with hybrid training: slot (b, k) uses f instead of z where `swap` is set.
        swap = self.hybrid_swap(items.shape, generator).to(device)  # [B, 1 + K], drawn on the CPU
        by_z = torch.gather(z_u @ z.T, 1, slot_ui)  # [B, 1 + K] z_u . z_j
        by_f = torch.gather(z_u @ f.T, 1, slot_ui)  # [B, 1 + K] z_u . f_j
        loss_ui = info_nce(torch.where(swap, by_f, by_z) / cfg.temp_value)
        # L_RE: cosine of the anchor's z_i with f of itself (slot 0) and of the negatives.
        anchor = F.normalize(rows(z_items, items[:, 0]), dim=-1)  # [B, D]
        cosine = torch.gather(anchor @ F.normalize(f, dim=-1).T, 1, slot_re)  # [B, 1 + K']
        loss_re = info_nce(cosine / cfg.temp_value)
        reg = self.regularizer(users, items)
        loss = cfg.lr_lambda * loss_re + (1 - cfg.lr_lambda) * loss_ui + cfg.reg_weight * reg
        return loss, {"loss": loss.item(), "ui": loss_ui.item(), "re": loss_re.item(), "reg": reg.item()}
