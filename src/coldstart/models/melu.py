"""MeLU: meta-learned user preference estimator (Lee, Im, Jang, Cho and Chung, KDD 2019), on implicit feedback.

    e_u = A_u x_u                          user embedding from the user's attributes (models/user_content.py)
    e_i = A_i c_i (+ E_i)                  item embedding from item content (+ an item id embedding, `item_ids`)
    y(u, i; theta2) = w3 . relu(W2 relu(W1 [e_i, e_u] + b1) + b2) + b3          decision + output layers
    local update (per user u, on a support set S_u):  theta2_u = theta2 - local_lr * grad_theta2 L(S_u; theta2)
                                                       (`local_steps` times; theta1 = the embeddings stay fixed)
    global update (a batch of users B):  (theta1, theta2) <- Adam on  mean_(u in B) L(Q_u; theta1, theta2_u)
    L(S; theta) = mean_((i, y) in S) (y(u, i; theta) - y)^2            MSE, as the paper's rating loss

Tasks. A user's task is built from their training interactions: each epoch orders them at random; the first
half (at least one) is the support pool, the rest the query pool (the support pool again for a one-item
user); `support_size` positives are drawn from the support pool and `query_size` from the query pool (with
replacement), each with as many sampled negatives (label 0; the paper predicts 1-5 ratings, here y in {0, 1}).
Only warm users (with training interactions) are tasks.

Inference. A warm user adapts theta2 on a support set drawn, with a fixed generator, from all of their
training interactions (`support_size` positives and as many negatives), then scores every item. **A user
with an empty support set (every cold user under `cold_user`) gets no local update: they are scored by the
global initialisation theta2 with their attribute embedding e_u alone** - the meta-learned prior that the
paper's local update starts from, which is what MeLU can say about a user before any interaction. So
cold_users = "content". Items absent from train have no id embedding of their own (it was never trained);
with `item_ids` their e_i uses content only.

Deviations from the paper, all documented: implicit 0/1 targets with sampled negatives instead of ratings;
the attribute embeddings are linear maps of the normalised attribute blocks (for one-hot attributes, the sum of
one embedding per attribute instead of their concatenation: FC1 after the concatenation is itself linear in
the one-hots, so only its rank differs); `item_ids` adds an item id embedding (the paper's director / actor
attributes are close to ids on MovieLens-1M; set item_ids=false for attributes only); the learning rates
(paper: local 5e-6, global 5e-5, set for 1-5 ratings) are ours, not tuned on test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coldstart.data.sampling import NegativeSampler
from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.base import Recommender
from coldstart.models.bpr import TrainedConfig
from coldstart.models.content import item_content_spec
from coldstart.models.user_content import UserContent, UserInput, prepare_user_content, warm_user_mask
from coldstart.nn.content import ContentEncoder, build_content

#: Users scored per chunk: [chunk, I, hidden] activations.
SCORE_CHUNK = 64


@dataclasses.dataclass(frozen=True)
class MeLUConfig(TrainedConfig):
    """TrainedConfig plus MeLU's settings.

    Attributes:
        dim_E: width of the user embedding and of the item embedding (the paper: 32 per attribute).
        hidden: width of the two decision layers (the paper: 64).
        l_r: the global (meta) Adam learning rate.
        local_lr: the local update's step size.
        local_steps: local gradient steps per task (the paper: 1 to 5).
        support_size, query_size: positives per support / query set (each with as many negatives).
        batch_size: users (tasks) per global update.
        item_ids: add an item id embedding to the item content embedding.
        first_order: drop the second-order terms of the meta-gradient (first-order MAML).
        modalities: user modalities to use (default every numeric one).
        item_modalities: item modalities to use (default every numeric one; none at all is allowed with item_ids).
    """

    dim_E: int = 32
    hidden: int = 64
    l_r: float = 1e-3
    local_lr: float = 0.01
    local_steps: int = 1
    support_size: int = 10
    query_size: int = 10
    batch_size: int = 32
    min_epochs: int = 5
    item_ids: bool = True
    first_order: bool = False
    modalities: tuple[str, ...] | None = None
    item_modalities: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("hidden", "local_steps", "support_size", "query_size"):
            if getattr(self, name) < 1:
                raise DataError(f"must be >= 1, got {getattr(self, name)}", field=name)
        if self.local_lr < 0:
            raise DataError(f"must be >= 0, got {self.local_lr}", field="local_lr")
        for name in ("modalities", "item_modalities"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))  # JSON gives a list


class MeLU(Recommender):
    """MAML over users: decision layers adapted per user on a support set; attribute embeddings learnt globally."""

    name = "melu"
    Config = MeLUConfig
    cold_items = "content"
    cold_users = "content"

    def __init__(self, **hyper) -> None:
        super().__init__(**hyper)
        self._user_input: UserInput | None = None
        self._item_input: UserInput | None = None

    # -- sizes and parameters ---------------------------------------------------------------------------
    def dims_for(self, split: Split) -> dict[str, int]:
        dims = super().dims_for(split)
        cfg = self.config
        self._user_input = prepare_user_content(self.name, split, cfg.modalities)
        try:
            spec = item_content_spec(self.name, split, cfg.item_modalities)
        except DataError:
            if not cfg.item_ids or cfg.item_modalities is not None:
                raise
            spec = None  # no item content: the id embedding alone
        if spec is not None:
            dense, sparse = build_content(spec, split.dataset.item_features, n_rows=split.n_items)
            self._item_input = UserInput(spec, dense, sparse)
            item_dims = self._item_input.dims
        else:
            item_dims = {"user_dense": 0, "user_sparse": 0, "user_nnz": 0}
        dims.update(self._user_input.dims)
        dims.update({k.replace("user_", "item_"): v for k, v in item_dims.items()})
        return dims

    def build(self, dims: dict[str, int]) -> None:
        cfg = self.config
        d, h = cfg.dim_E, cfg.hidden
        self.user_content = UserContent(dims, self._user_input)
        self.user_encoder = ContentEncoder(dims["user_dense"], dims["user_sparse"], 0, d)  # A_u
        self.item_encoder = None
        if dims["item_dense"] + dims["item_sparse"]:
            item_dims = {"n_users": dims["n_items"], "user_dense": dims["item_dense"],
                         "user_sparse": dims["item_sparse"], "user_nnz": dims["item_nnz"]}
            self.item_content = UserContent(item_dims, self._item_input)  # the same table, one row per item
            self.item_encoder = ContentEncoder(dims["item_dense"], dims["item_sparse"], 0, d)  # A_i
        self._user_input = self._item_input = None
        self.item_ids = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dims["n_items"], d))) if cfg.item_ids else None
        self.register_buffer("warm_items_", torch.zeros(dims["n_items"], dtype=torch.bool))
        # theta2: the decision and output layers, adapted per user
        self.W1 = nn.Parameter(nn.init.xavier_uniform_(torch.empty(2 * d, h)))  # [2D, H] over [e_i, e_u]
        self.b1 = nn.Parameter(torch.zeros(h))
        self.W2 = nn.Parameter(nn.init.xavier_uniform_(torch.empty(h, h)))
        self.b2 = nn.Parameter(torch.zeros(h))
        self.w3 = nn.Parameter(nn.init.xavier_uniform_(torch.empty(h, 1)))
        self.b3 = nn.Parameter(torch.zeros(1))

    def decision_parameters(self) -> list[Tensor]:
        """theta2 = [W1, b1, W2, b2, w3, b3]: what the local update adapts."""
        return [self.W1, self.b1, self.W2, self.b2, self.w3, self.b3]

    # -- embeddings and the decision network --------------------------------------------------------------
    def user_embeddings(self, users: Tensor) -> Tensor:
        """e_u [n, D] from the users' attributes."""
        return self.user_encoder(*self.user_content.inputs(users))

    def item_embeddings(self, items: Tensor | None = None) -> Tensor:
        """e_i [n, D] of item indices (default all): content embedding plus the id embedding of warm items."""
        items = torch.arange(self.dims_["n_items"]) if items is None else items
        out = torch.zeros(len(items), self.config.dim_E)
        if self.item_encoder is not None:
            out = out + self.item_encoder(*self.item_content.inputs(items))
        if self.item_ids is not None:
            # an item absent from train never had its id row trained: content alone
            ids = self.item_ids.index_select(0, items) * self.warm_items_[items, None]
            out = out + ids
        return out  # [n, D]

    @staticmethod
    def decide(params: list[Tensor], e_items: Tensor, e_users: Tensor) -> Tensor:
        """Predictions [B, n] of per-user parameters (each with a leading [B]) for items e_items [B, n, D] or [n, D].

        Args:
            params: [W1 [B, 2D, H], b1 [B, H], W2 [B, H, H], b2 [B, H], w3 [B, H, 1], b3 [B, 1]].
            e_items: item embeddings, per user [B, n, D] or shared [n, D].
            e_users: user embeddings [B, D].
        """
        W1, b1, W2, b2, w3, b3 = params
        d = e_users.shape[1]
        if e_items.dim() == 2:  # shared items: one [n, D] x [B, D, H] product
            first = torch.einsum("nd,bdh->bnh", e_items, W1[:, :d])  # [B, n, H]
        else:
            first = torch.bmm(e_items, W1[:, :d])  # [B, n, H]
        user_part = torch.bmm(e_users[:, None, :], W1[:, d:])  # [B, 1, H]
        hidden = F.relu(first + user_part + b1[:, None, :])  # [B, n, H]
        hidden = F.relu(torch.bmm(hidden, W2) + b2[:, None, :])  # [B, n, H]
        return torch.bmm(hidden, w3).squeeze(-1) + b3  # [B, n]

    def expanded(self, n: int) -> list[Tensor]:
        """theta2 repeated for n users (views; gradients flow back to the shared parameters)."""
        return [p.unsqueeze(0).expand(n, *p.shape) for p in self.decision_parameters()]

    def adapt(self, e_users: Tensor, items: Tensor, labels: Tensor, create_graph: bool) -> list[Tensor]:
        """theta2_u after `local_steps` gradient steps on each user's support set.

        Args:
            e_users: [B, D] user embeddings.
            items: [B, S] support items; labels: [B, S] float targets.
            create_graph: keep the graph of the local steps (second-order meta-gradient).

        Each user's loss depends on its own copy of theta2 only, so one gradient of the summed loss with respect
        to the [B]-expanded parameters gives every user's own gradient at once.
        """
        params = self.expanded(len(e_users))
        e_items = self.item_embeddings(items.flatten()).view(*items.shape, -1)  # [B, S, D]
        for _ in range(self.config.local_steps):
            loss = (self.decide(params, e_items, e_users) - labels).pow(2).mean(1).sum()  # sum of per-user means
            grads = torch.autograd.grad(loss, params, create_graph=create_graph)
            params = [p - self.config.local_lr * g for p, g in zip(params, grads)]
        return params

    # -- tasks ----------------------------------------------------------------------------------------------
    def _fit(self, split: Split, options=None) -> None:
        from coldstart import train

        train.fit(self, split, options)

    def prepare(self, split: Split) -> None:
        self.warm_items_ = torch.from_numpy(split.train_item_mask())
        self.sampler_ = NegativeSampler(split.train.users, split.train.items, split.n_users, split.n_items,
                                        candidates=np.flatnonzero(split.train_item_mask()))
        self.warm_users_ = torch.nonzero(warm_user_mask(self.seen_indptr_)).flatten()
        self._order = torch.arange(len(self.seen_indices_))

    def batches(self, generator: torch.Generator) -> list[Tensor]:
        """One epoch: every warm user once, in batches of batch_size; draws this epoch's support / query halves."""
        counts = self.seen_indptr_[1:] - self.seen_indptr_[:-1]  # [U]
        owner = torch.repeat_interleave(torch.arange(len(counts)), counts)  # [N] user of each training pair
        # a random order inside each user's block: sort by user + U(0, 1)
        self._order = torch.argsort(owner.double() + torch.rand(len(owner), generator=generator, dtype=torch.float64))
        order = self.warm_users_[torch.randperm(len(self.warm_users_), generator=generator)]
        return list(torch.split(order, self.config.batch_size))

    def draw(self, users: Tensor, n: int, part: str, generator: torch.Generator,
             order: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(items [B, 2n], labels [B, 2n]): n positives from the user's support / query / all pool, n negatives.

        Args:
            users: warm users [B].
            n: positives (and negatives) per user.
            part: "support" (the first half of the user's shuffled training items, at least one), "query" (the
                rest; the support pool for a one-item user) or "all".
            order: positions of the training pairs in the shuffled order (default: this epoch's).
        """
        order = self._order if order is None else order
        starts, counts = self.seen_indptr_[users], self.seen_indptr_[users + 1] - self.seen_indptr_[users]  # [B]
        half = torch.clamp(counts // 2, min=1)
        if part == "support":
            lo, size = torch.zeros_like(counts), half
        elif part == "query":
            lo = torch.where(counts > 1, half, 0)
            size = torch.where(counts > 1, counts - half, 1)
        else:
            lo, size = torch.zeros_like(counts), counts
        pick = (torch.rand(len(users), n, generator=generator) * size[:, None]).long()  # [B, n]
        positions = order[starts[:, None] + lo[:, None] + pick]  # [B, n] into the CSR arrays
        positives = self.seen_indices_[positions]
        negatives = self.sampler_.sample(users, n, generator)  # [B, n]
        labels = torch.cat([torch.ones(len(users), n), torch.zeros(len(users), n)], 1)
        return torch.cat([positives, negatives], 1), labels

    def loss(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The global objective: mean over the batch's users of the query MSE under their adapted theta2."""
        cfg = self.config
        support, s_labels = self.draw(batch, cfg.support_size, "support", generator)
        query, q_labels = self.draw(batch, cfg.query_size, "query", generator)
        e_users = self.user_embeddings(batch)  # [B, D]
        # first order: the local gradients enter as constants, so d theta2_u / d theta2 is the identity (FOMAML)
        params = self.adapt(e_users, support, s_labels, create_graph=not cfg.first_order)
        e_query = self.item_embeddings(query.flatten()).view(*query.shape, -1)  # [B, Q, D]
        loss = (self.decide(params, e_query, e_users) - q_labels).pow(2).mean()
        return loss, {"loss": loss.item()}

    # -- inference ------------------------------------------------------------------------------------------
    def user_parameters(self, users: Tensor, e_users: Tensor) -> list[Tensor]:
        """theta2 per user: adapted on a support set from all training items for warm users, global for others."""
        params = [p.detach() for p in self.expanded(len(users))]
        counts = self.seen_indptr_[users + 1] - self.seen_indptr_[users]
        warm = counts > 0
        if not warm.any() or self.config.local_lr == 0:
            return params
        if not hasattr(self, "sampler_"):  # a loaded model: rebuild the sampler from the seen-item buffers
            counts = self.seen_indptr_[1:] - self.seen_indptr_[:-1]
            owner = torch.repeat_interleave(torch.arange(self.dims_["n_users"]), counts)
            self.sampler_ = NegativeSampler(owner.numpy(), self.seen_indices_.numpy(), self.dims_["n_users"],
                                            self.dims_["n_items"], candidates=np.flatnonzero(self.warm_items_.numpy()))
        items, labels = self.inference_support(users[warm])
        with torch.enable_grad():
            adapted = self.adapt(e_users[warm].detach(), items, labels, create_graph=False)
        out = [p.clone() for p in params]
        for p, a in zip(out, adapted):
            p[warm] = a.detach()
        return out

    def inference_support(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """(items [B, 2n], labels [B, 2n]): a warm user's support set at inference, a function of the user alone.

        Positives: n positions spread evenly over the user's training items. Negatives: the first n non-positive
        items of a fixed per-user sequence of warm items (a multiplicative hash of (user, j)), so a user's
        scores do not depend on which other users share the batch.
        """
        n = self.config.support_size
        starts, counts = self.seen_indptr_[users], self.seen_indptr_[users + 1] - self.seen_indptr_[users]  # [B]
        spread = ((torch.arange(n, dtype=torch.float64) + 0.5) / n)[None, :] * counts[:, None]  # [B, n]
        positives = self.seen_indices_[starts[:, None] + spread.long().clamp(max=(counts - 1)[:, None])]  # [B, n]
        pool = self.sampler_.pool  # warm items
        j = torch.arange(4 * n)
        candidates = pool[(users[:, None] * 1_000_003 + j[None, :] * 7_919 + 17) % len(pool)]  # [B, 4n]
        bad = self.sampler_.is_positive(users[:, None].expand_as(candidates), candidates)  # [B, 4n]
        # stable sort puts the non-positive candidates first, in sequence order
        first = torch.argsort(bad.to(torch.int8), dim=1, stable=True)[:, :n]
        negatives = torch.gather(candidates, 1, first)  # [B, n]
        labels = torch.cat([torch.ones(len(users), n), torch.zeros(len(users), n)], 1)
        return torch.cat([positives, negatives], 1), labels

    def score(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        users = torch.as_tensor(users, dtype=torch.int64)
        with torch.no_grad():
            e_items = self.item_embeddings(None if items is None else torch.as_tensor(items, dtype=torch.int64))
        chunks = []
        for start in range(0, len(users), SCORE_CHUNK):
            part = users[start:start + SCORE_CHUNK]
            with torch.no_grad():
                e_users = self.user_embeddings(part)
            params = self.user_parameters(part, e_users)
            with torch.no_grad():
                chunks.append(self.decide(params, e_items, e_users))  # [b, I']
        return torch.cat(chunks) if chunks else torch.zeros(0, len(e_items))
