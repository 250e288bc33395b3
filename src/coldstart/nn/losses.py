"""Losses on similarity logits. Every one is computed in log space, so large logits cannot overflow."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(logits: Tensor) -> Tensor:
    """InfoNCE with the positive in column 0: mean over rows of -ln(exp(l_0) / sum_k exp(l_k)).

    Args:
        logits: float [B, 1 + K], already divided by the temperature.

    Returns:
        Scalar loss. log-sum-exp keeps it finite where exp(l) would overflow (official CLCRec: exp, then log).
    """
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def bpr(pos: Tensor, neg: Tensor) -> Tensor:
    """Bayesian personalised ranking: mean of -ln sigmoid(pos - neg); pos [B, 1] or [B], neg [B, K] or [B]."""
    return F.softplus(neg - pos).mean()


# -- CMCLRec (Xu et al., SIGIR'24) ------------------------------------------------------------------------------
def cosine_info_nce(first: Tensor, second: Tensor, temperature: float) -> Tensor:
    """CMCLRec Eqs. 3-4: -1/N sum_k ln(exp(s(h1_k, h2_k)/tau) / sum_t exp(s(h1_k, h2_t)/tau)), s = cosine.

    Args:
        first, second: [N, D] the two views' embeddings (row k of each from the same user); the other rows of
            `second` are the in-batch negatives.
        temperature: tau > 0.
    """
    logits = F.normalize(first, dim=-1) @ F.normalize(second, dim=-1).T / temperature  # [N, N]
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


def gaussian_kernel(x: Tensor, y: Tensor, sigma: float) -> Tensor:
    """kappa(x_i, y_j) = exp(-||x_i - y_j||^2 / (2 sigma^2)) (CMCLRec Eq. 10), [N, M] for x [N, D], y [M, D]."""
    squared = (x[:, None, :] - y[None, :, :]).pow(2).sum(-1)  # [N, M], exact (no |x|^2 - 2xy + |y|^2 cancellation)
    return torch.exp(-squared / (2.0 * sigma**2))


def mmd(p: Tensor, q: Tensor, sigma: float) -> Tensor:
    """Squared maximum mean discrepancy with a Gaussian kernel (CMCLRec Eq. 9, biased V-statistic):
    1/N^2 sum_ij k(p_i, p_j) - 2/N^2 sum_ij k(p_i, q_j) + 1/N^2 sum_ij k(q_i, q_j), for p, q [N, D]."""
    return (gaussian_kernel(p, p, sigma).mean() - 2.0 * gaussian_kernel(p, q, sigma).mean()
            + gaussian_kernel(q, q, sigma).mean())


def median_bandwidth(p: Tensor, q: Tensor) -> float:
    """sigma of the median heuristic: sqrt(median pairwise squared distance / 2) over p and q together (no grad)."""
    with torch.no_grad():
        both = torch.cat([p, q]).float()  # [2N, D]
        squared = torch.cdist(both, both).pow(2)
        off = squared[~torch.eye(len(both), dtype=torch.bool)]
        median = float(off.median()) if off.numel() else 1.0
    return max(median / 2.0, 1e-6) ** 0.5


def reconstruction(pred: Tensor, target: Tensor) -> Tensor:
    """CMCLRec Eq. 8 (and the cross term of Eq. 9) per user: ||pred_k - target_k||_2^2 summed over every entry
    of the user's [L, d] block, then averaged over the N users of the batch (the paper sums; a mean keeps the
    weights lambda and eta independent of the batch size)."""
    return (pred - target).pow(2).flatten(1).sum(1).mean()


def contrastive_rating_loss(users: Tensor, items: Tensor, false_negatives: Tensor | None = None,
                            temperature: float = 1.0) -> Tensor:
    """GIR Eq. 1: bidirectional in-batch contrastive loss over the B (user, item) pairs of a batch.

    For pair b: -ln softmax_{b'}(u_b . v_b') at b'=b (items as negatives) - ln softmax_{b'}(u_b' . v_b) at b'=b
    (users as negatives), averaged over b.

    Args:
        users: float [B, D], row b is the user of pair b.
        items: float [B, D], row b is the item of pair b.
        false_negatives: optional bool [B, B]; True at (b, b') when user b also likes item b' (b' != b). Those
            logits leave both denominators (the paper's optional false-negative filter). The diagonal is ignored.
        temperature: logits are u . v / temperature (the paper: 1).

    Returns:
        Scalar loss.
    """
    logits = users @ items.T / temperature  # [B, B]: row = user b, column = item b'
    if false_negatives is not None:
        drop = false_negatives & ~torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(drop, float("-inf"))
    positive = logits.diagonal()  # [B]
    return ((torch.logsumexp(logits, 1) - positive) + (torch.logsumexp(logits, 0) - positive)).mean()


def contrastive_rating_loss_shard(users: Tensor, items: Tensor, all_users: Tensor, all_items: Tensor, offset: int,
                                  false_negatives_by_user: Tensor | None = None,
                                  false_negatives_by_item: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """GIR Eq. 1 for one rank's b pairs of a global batch of B pairs gathered from every rank (DDP).

    Row j of this rank is pair offset + j of the global batch; its softmaxes run over all B in-batch items (and
    users), as in one process. The mean over this rank's rows, weighted by b / B and summed over the ranks, is
    `contrastive_rating_loss` of the global batch (tests/test_gir_distributed.py).

    Args:
        users, items: float [b, D], this rank's pairs.
        all_users, all_items: float [B, D], every rank's pairs in rank order (distributed.all_gather_with_grad).
        offset: where this rank's rows start in the global batch.
        false_negatives_by_user: optional bool [b, B], True where user j also likes global item b'.
        false_negatives_by_item: optional bool [b, B], True where global user b' also likes item j.
        temperature: logits are u . v / temperature.

    Returns:
        Scalar loss (mean over this rank's rows).
    """
    b = len(users)
    own = offset + torch.arange(b, device=users.device)  # [b]: the positives' columns
    by_user = users @ all_items.T / temperature  # [b, B]
    by_item = items @ all_users.T / temperature  # [b, B]
    diagonal = torch.zeros_like(by_user, dtype=torch.bool)
    diagonal[torch.arange(b), own] = True
    if false_negatives_by_user is not None:
        by_user = by_user.masked_fill(false_negatives_by_user & ~diagonal, float("-inf"))
    if false_negatives_by_item is not None:
        by_item = by_item.masked_fill(false_negatives_by_item & ~diagonal, float("-inf"))
    positive = by_user[torch.arange(b), own]  # [b]: u_j . v_j
    return ((torch.logsumexp(by_user, 1) - positive) + (torch.logsumexp(by_item, 1) - positive)).mean()


def multimodal_alignment_loss(z: Tensor) -> Tensor:
    """GIR Eq. 2: -ln( sum_{c < c'} e^{z_j^c . z_j^c'} / Z_j ), Z_j = sum_{j' in B} sum_{c, c'} e^{z_j^c . z_j'^c'},
    averaged over the items j of the batch. Z includes j' = j and c = c', as written in the paper.

    Args:
        z: float [B, C, d], the per-modality aggregates of B items (C >= 2); scale them first if a temperature
            or normalisation is wanted (models/gir.py passes unit vectors divided by sqrt(tau)).

    Returns:
        Scalar loss.
    """
    b, c = z.shape[:2]
    if c < 2:
        raise ValueError("the multimodal alignment loss needs at least two modalities")
    sim = torch.einsum("jcd,ked->jcke", z, z)  # [B, C, B, C]
    own = sim[torch.arange(b), :, torch.arange(b)]  # [B, C, C]: pairs within item j
    upper = torch.triu(torch.ones(c, c, dtype=torch.bool, device=z.device), diagonal=1)
    numerator = torch.logsumexp(own[:, upper], 1)  # [B]
    log_z = torch.logsumexp(sim.reshape(b, -1), 1)  # [B]
    return (log_z - numerator).mean()
