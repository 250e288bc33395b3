"""CVAR: item cold start via a model-agnostic conditional variational autoencoder (Zhao, Ren, Du, Zhang and
Wang, SIGIR 2022, "Improving Item Cold-start Recommendation via Model-agnostic Conditional Variational
Autoencoder").

    stage 1: a backbone with item id embeddings e_i (here MF-BPR, models/pretrained.py), then frozen
    stage 2: a CVAE warms up id embeddings from content x_i:
        posterior  q(z | e_i)  = N(mu_i, diag sigma_i^2),        (mu_i, log sigma_i^2) = Enc(e_i)
        prior      p(z | x_i)  = N(mu'_i, diag sigma'_i^2),      (mu'_i, log sigma'_i^2) = Enc'(x_i)
        decoder    e^_i = Dec(z [, c_i]),   z = mu_i + sigma_i * eps  (reparameterisation, eps ~ N(0, I))
        L = L_main(e^) + alpha ||e^_i - e_i||^2 + beta KL(q(z | e_i) || N(0, I)) + gamma W2(q(z | e_i), p(z | x_i))
    score(u, i) = p_u . e_i for warm items,  p_u . Dec(mu'_i [, 0]) for cold items

L_main is the backbone's own loss (BPR) computed with the generated embeddings in place of the id embeddings,
so e^ is trained to work in the backbone, not only to be close to e. The first two terms with the KL are the
(negative) ELBO of a VAE on the id embeddings; the last aligns the content prior with the posterior, so that at
cold start, where no e_i exists, z comes from the content alone. docs/models/cvar.md maps every term to the code
and lists the choices the paper leaves open.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.content import ContentConfig, ContentRecommender
from coldstart.models.embedding import compact, rows
from coldstart.models.pretrained import pretrain_mf, stage_options
from coldstart.nn.losses import bpr


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor | None = None, logvar_p: Tensor | None = None) -> Tensor:
    """KL(N(mu_q, diag exp(logvar_q)) || N(mu_p, diag exp(logvar_p))) per row, summed over the latent dimensions.

    0.5 * sum_d [logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)^2) / exp(logvar_p) - 1]; without
    (mu_p, logvar_p) the second Gaussian is N(0, I).

    Args:
        mu_q, logvar_q: [n, Z] the first Gaussian's means and log variances.
        mu_p, logvar_p: [n, Z] the second Gaussian's (None: zeros, the standard normal).

    Returns:
        float [n].
    """
    if mu_p is None:
        mu_p = torch.zeros_like(mu_q)
    if logvar_p is None:
        logvar_p = torch.zeros_like(logvar_q)
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p) - 1.0).sum(-1)


def gaussian_w2(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """Squared 2-Wasserstein distance of two diagonal Gaussians per row: ||mu_q - mu_p||^2 + ||sigma_q - sigma_p||^2.

    Args:
        mu_q, logvar_q, mu_p, logvar_p: [n, Z].

    Returns:
        float [n].
    """
    return (mu_q - mu_p).pow(2).sum(-1) + (torch.exp(0.5 * logvar_q) - torch.exp(0.5 * logvar_p)).pow(2).sum(-1)


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None) -> Tensor:
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I) drawn from `generator` (so resume stays exact); [n, Z]."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)  # [n, Z]
    return mu + torch.exp(0.5 * logvar) * eps


def _mlp(inp: int, hidden: int, out: int) -> nn.Module:
    return nn.Linear(inp, out) if hidden == 0 else nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, out))


@dataclasses.dataclass(frozen=True)
class CVARConfig(ContentConfig):
    """ContentConfig plus the CVAE's sizes and loss weights; both stages share l_r, batch_size and early stopping.

    Attributes:
        latent_dim: width Z of z (the official code: half the embedding width).
        vae_hidden: hidden width of Enc (on e_i) and Dec; 0 makes them linear maps. The content prior Enc' is
            the feature encoder of ContentRecommender, hidden width `hidden`.
        recon_weight: alpha, the weight of ||e^ - e||^2.
        kl_weight: beta, the weight of KL(q(z | e) || N(0, I)) (the ELBO's prior term).
        align_weight: gamma, the weight of the alignment of the content prior with the posterior.
        align: "w2" (squared 2-Wasserstein distance, as the official code) or "kl" (KL(q || p)).
        main_weight: the weight of the backbone's loss (BPR) on the generated embeddings; 0 drops it.
        frequency: feed the decoder the condition c_i = log(1 + training count of i) (the official code's
            "count"); a cold item gets c = 0, a value training never shows, so it is off by default.
    """

    num_neg: int = 1
    latent_dim: int = 32
    vae_hidden: int = 64
    recon_weight: float = 1.0
    kl_weight: float = 1e-3
    align_weight: float = 1.0
    align: str = "w2"
    main_weight: float = 1.0
    frequency: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.latent_dim < 1:
            raise DataError(f"must be >= 1, got {self.latent_dim}", field="latent_dim")
        if self.vae_hidden < 0:
            raise DataError(f"must be >= 0 (0: linear maps), got {self.vae_hidden}", field="vae_hidden")
        for name in ("recon_weight", "kl_weight", "align_weight", "main_weight"):
            if getattr(self, name) < 0:
                raise DataError(f"must be >= 0, got {getattr(self, name)}", field=name)
        if self.align not in ("w2", "kl"):
            raise DataError(f"must be w2 or kl, got {self.align!r}", field="align")


class CVAR(ContentRecommender):
    """A CVAE on top of frozen MF-BPR factors: warm items keep e_i, cold items get Dec(prior mean of x_i)."""

    name = "cvar"
    Config = CVARConfig
    cold_items = "content"
    search_space = {"l_r": [1e-4, 1e-3, 1e-2], "align_weight": [0.1, 1.0, 10.0], "kl_weight": [0.0, 1e-3, 1e-1]}

    def build(self, dims: dict[str, int]) -> None:
        super().build(dims)  # id tables (stage 1's factors), content buffers, Enc' = the feature encoder
        cfg = self.config
        self.posterior = _mlp(cfg.dim_E, cfg.vae_hidden, 2 * cfg.latent_dim)  # Enc: e_i -> (mu, log sigma^2)
        self.decoder = _mlp(cfg.latent_dim + int(cfg.frequency), cfg.vae_hidden, cfg.dim_E)  # Dec: (z, c) -> e^
        self.register_buffer("log_count_", torch.zeros(dims["n_items"]))  # c_i = log(1 + training count)

    def content_dim(self) -> int:
        return 2 * self.config.latent_dim  # Enc'(x_i) = (mu'_i, log sigma'^2_i)

    def _fit(self, split: Split, options=None) -> None:
        from coldstart import train

        users, items = pretrain_mf(self.config, split, options)
        with torch.no_grad():
            self.user_embedding.copy_(users)
            self.item_embedding.copy_(items)
        self.user_embedding.requires_grad_(False)  # the backbone stays frozen: CVAR only adds the generator
        self.item_embedding.requires_grad_(False)
        stage2 = stage_options(options, None)
        if split.cold_kind == "item":  # warm scores never change in stage 2: watch the cold items (as deepmusic)
            stage2 = dataclasses.replace(stage2, valid_scenario="cold")
        train.fit(self, split, stage2)

    def prepare(self, split: Split) -> None:
        super().prepare(split)
        counts = torch.bincount(self.train_items_, minlength=split.n_items).double()  # [I]
        self.log_count_ = torch.log1p(counts).float()

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the trainable parameters only (the frozen stage-1 tables are left out)."""
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.config.l_r)

    # -- the CVAE ---------------------------------------------------------------------------------------------
    def _split_stats(self, out: Tensor) -> tuple[Tensor, Tensor]:
        z = self.config.latent_dim
        return out[:, :z], out[:, z:].clamp(-10.0, 10.0)  # log variances clamped: exp() stays finite

    def prior(self, items: Tensor) -> tuple[Tensor, Tensor]:
        """(mu' [n, Z], log sigma'^2 [n, Z]) of p(z | x_i) for item indices [n]."""
        return self._split_stats(self.content_features(items))

    def posterior_stats(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """(mu [n, Z], log sigma^2 [n, Z]) of q(z | e_i) for id embeddings [n, D]."""
        return self._split_stats(self.posterior(ids))

    def decode(self, z: Tensor, items: Tensor, cold: bool = False) -> Tensor:
        """e^ = Dec(z [, c]) [n, D]; a cold item's condition is c = 0 (no interactions)."""
        if self.config.frequency:
            c = torch.zeros(len(z), 1) if cold else self.log_count_[items][:, None]  # [n, 1]
            z = torch.cat([z, c], 1)
        return self.decoder(z)

    def losses(self, users: Tensor, items: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """Every term of L for a batch: users [B], items [B, 1 + K] (column 0 the positive).

        Each distinct item of the batch is encoded once; the id-embedding terms are means over the distinct
        items, the main loss a mean over the batch's pairs.
        """
        cfg = self.config
        unique, slots, _ = compact(items, self.dims_["n_items"])  # [n], [B, 1 + K]
        e = rows(self.item_embedding, unique)  # [n, D], frozen
        mu, logvar = self.posterior_stats(e)  # [n, Z] each
        mu_p, logvar_p = self.prior(unique)  # [n, Z] each
        z = reparameterize(mu, logvar, generator)  # [n, Z]
        e_hat = self.decode(z, unique)  # [n, D]
        recon = (e_hat - e).pow(2).sum(-1).mean()
        kl = gaussian_kl(mu, logvar).mean()
        if cfg.align == "w2":
            align = gaussian_w2(mu, logvar, mu_p, logvar_p).mean()
        else:
            align = gaussian_kl(mu, logvar, mu_p, logvar_p).mean()
        p_u = rows(self.user_embedding, users)  # [B, D], frozen
        # rows() (index_select), not e_hat[slots]: slots repeat, and plain indexing's CPU backward adds the repeats
        # in a thread-dependent order (two seeded runs on 2 threads differed in the contract test).
        logits = torch.einsum("bd,bkd->bk", p_u, rows(e_hat, slots))  # [B, 1 + K]
        main = bpr(logits[:, :1], logits[:, 1:])
        total = cfg.main_weight * main + cfg.recon_weight * recon + cfg.kl_weight * kl + cfg.align_weight * align
        return {"loss": total, "main": main, "recon": recon, "kl": kl, "align": align}

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """L on a batch of training pairs with cfg.num_neg sampled negatives each."""
        users, items = self.batch_pairs(batch, self.config.num_neg, generator)
        terms = self.losses(users, items, generator)
        return terms["loss"], {k: v.item() for k, v in terms.items()}

    def cold_item_vectors(self, z_items: Tensor) -> Tensor:
        """Cold items: Dec(mu'_i) from the content prior's mean (deterministic; the official code samples z)."""
        cold = torch.nonzero(~self.warm_items_).flatten()
        mu_p, _ = self.prior(cold)
        return self.decode(mu_p, cold, cold=True)

    @torch.no_grad()
    def item_embeddings(self, features: dict) -> Tensor:
        """Generated id embeddings Dec(mu'(x)) [n, dim_E] of brand-new items from their content alone."""
        stats = super().item_embeddings(features)  # [n, 2Z]: the prior's (mu', log sigma'^2)
        mu_p, _ = self._split_stats(stats)
        return self.decode(mu_p, torch.zeros(len(mu_p), dtype=torch.int64), cold=True)
