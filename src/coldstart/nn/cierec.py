"""CIERec's building blocks (Ma et al., "Cross-Modal Content Inference and Feature Enrichment for Cold-Start
Recommendation"): the visual encoder E, the visual-aware gate T_v (Eq. 3), the inference gate T_i (Eq. 4), the
LSTM semantic fusion with privileged annotations (Eq. 5) and the DQN-style gradient-regularisation gate R
(section III-D3, Eq. 6). The model that joins them is models/cierec.py; docs/models/cierec.md maps each
equation to this code and lists what the paper leaves open.

Every gate is written so that it broadcasts: a user tensor [B, 1, D] against an item tensor [1, I, De] gives the
[B, I, .] result of the pair-wise formula, which is what full-ranking scoring needs (T_v depends on the user).
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-12  # the paper's epsilon in Eq. 3 and 4
#: EfficientNet-Lite normalisation of uint8 pixels (features/image.py: MEAN, STD).
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0


def l2_normalise(x: Tensor) -> Tensor:
    """x / max(||x||_2, eps) over the last dimension (the denominator of Eq. 3 and 4)."""
    return x / torch.clamp(torch.linalg.vector_norm(x, dim=-1, keepdim=True), min=EPS)


class VisualEncoder(nn.Module):
    """E: the uniform embedding e_i [.., De] of an item from its image.

    e = head(pooled backbone features). With `backbone=None` (the frozen encoder) the pooled EfficientNet-Lite0
    features are precomputed once and passed in as `features` [n, F]; only the linear head learns. With a
    backbone (fine-tuning), uint8 pixels [n, 3, S, S] go through it on every batch; its BatchNorm layers keep
    their ImageNet statistics (eval mode), because CIERec's batches of distinct items are small and correlated.

    Args:
        in_dim: F, width of the pooled features (1280 for EfficientNet-Lite0, or the fallback content width).
        out_dim: De, width of e_i.
        backbone: a module with `extract_features(x) -> [n, F, h, w]` (EfficientNet-Lite0), or None.
    """

    def __init__(self, in_dim: int, out_dim: int, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(in_dim, out_dim)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()  # BatchNorm statistics stay ImageNet's (see the class docstring)
        return self

    def pooled(self, pixels: Tensor) -> Tensor:
        """Backbone features [n, F] of uint8 pixels [n, 3, S, S]: (p - 127) / 128, extract_features, mean."""
        assert self.backbone is not None
        x = (pixels.float() - PIXEL_MEAN) / PIXEL_STD  # [n, 3, S, S]
        return self.backbone.extract_features(x).float().mean(dim=(2, 3))  # [n, F]

    def forward(self, features: Tensor) -> Tensor:
        """e [n, De] from pooled features [n, F]."""
        return self.head(features)


def load_backbone() -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights (the `[vision]` extra), for fine-tuning."""
    from coldstart.features.image import load_efficientnet_lite0

    with contextlib.redirect_stdout(io.StringIO()):
        return load_efficientnet_lite0()


class VisualGate(nn.Module):
    """T_v (Eq. 3): v = MLP^v( e * delta(p_u || e || g_v) / max(||e * delta(.)||_2, eps) ).

    delta is one fully connected layer (no activation: the paper names none), g_v a learnt gate vector,
    MLP^v a fully connected layer followed by LeakyReLU. delta of the concatenation is computed as the sum of
    its three column blocks applied separately (W [p; e; g] = W_p p + W_e e + W_g g), which broadcasts users
    against items without materialising the concatenation.

    Args:
        user_dim: D (p_u). emb_dim: De (e_i, g_v). out_dim: D (v_i).
    """

    def __init__(self, user_dim: int, emb_dim: int, out_dim: int) -> None:
        super().__init__()
        self.user_dim, self.emb_dim = user_dim, emb_dim
        self.delta = nn.Linear(user_dim + 2 * emb_dim, emb_dim)
        self.gate = nn.Parameter(torch.zeros(emb_dim).uniform_(-0.1, 0.1))  # g_v
        self.mlp = nn.Linear(emb_dim, out_dim)

    def forward(self, p: Tensor, e: Tensor) -> Tensor:
        """v [..., D] for users p [..., D] and embeddings e [..., De] (broadcast against each other)."""
        w = self.delta.weight  # [De, D + 2 De]
        w_p, w_e, w_g = w[:, : self.user_dim], w[:, self.user_dim : self.user_dim + self.emb_dim], w[:, -self.emb_dim :]
        bias = self.delta.bias + w_g @ self.gate  # [De]: the g_v block is constant
        delta = p @ w_p.T + e @ w_e.T + bias  # [..., De]
        return F.leaky_relu(self.mlp(l2_normalise(e * delta)))


class InferenceGate(nn.Module):
    """T_i (Eq. 4): c = e * delta(e || g_s) / max(||e * delta(e || g_s)||_2, eps), with g_s a learnt vector."""

    def __init__(self, emb_dim: int) -> None:
        super().__init__()
        self.emb_dim = emb_dim
        self.delta = nn.Linear(2 * emb_dim, emb_dim)
        self.gate = nn.Parameter(torch.zeros(emb_dim).uniform_(-0.1, 0.1))  # g_s

    def forward(self, e: Tensor) -> Tensor:
        """c [..., De] from e [..., De]."""
        w = self.delta.weight  # [De, 2 De]
        delta = e @ w[:, : self.emb_dim].T + (self.delta.bias + w[:, self.emb_dim :] @ self.gate)  # [..., De]
        return l2_normalise(e * delta)


class SemanticFusion(nn.Module):
    """Eq. 5: s_i = LSTM(c_i || s^_i), the LSTM run over the two-step sequence (c_i, s^_i) and s_i its last
    hidden state; s^_i is the mean embedding of the item's annotation elements (genres, director, actors, MPAA).

    When an item's annotations are absent (always for a cold item at test time, unless reported otherwise, and
    for items without any annotation), the sequence is (c_i) alone: the LSTM is causal, so its output after
    step 1 of (c_i, s^_i) is exactly s_i of the one-step sequence; training drops the annotations of a share of
    the items (`pi_dropout` in the model) so that this path is trained too.

    Args:
        emb_dim: De (c_i and s^_i). out_dim: D (s_i). n_elements: annotation vocabulary size (0: no annotations).
    """

    def __init__(self, emb_dim: int, out_dim: int, n_elements: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(emb_dim, out_dim, batch_first=True)
        self.elements = nn.EmbeddingBag(max(n_elements, 1), emb_dim, mode="mean")

    def annotation(self, columns: Tensor, offsets: Tensor) -> Tensor:
        """s^ [n, De]: mean element embedding per row of a CSR slice (columns, row offsets); empty rows 0."""
        return self.elements(columns, offsets)

    def forward(self, c: Tensor, s_hat: Tensor | None, present: Tensor | None) -> Tensor:
        """s [n, D] from c [n, De], s^ [n, De] (None: absent for every row) and present bool [n]."""
        if s_hat is None or present is None or not bool(present.any()):
            out, _ = self.lstm(c[:, None, :])  # [n, 1, D]
            return out[:, 0]
        out, _ = self.lstm(torch.stack([c, s_hat], dim=1))  # [n, 2, D]
        return torch.where(present[:, None], out[:, 1], out[:, 0])


class GradientGate(nn.Module):
    """R (section III-D3): a DQN-style policy that picks, per batch, the factor by which the gradient of one
    branch (visual v_i or semantic s_i) is scaled on its way into the shared encoder E.

    - State: the 5-d probability vector s^(t-1) the policy output at the previous batch (uniform at first).
    - Policy: MLP^v_DQN, one fully connected layer 5 -> 5 followed by softmax, gives s^(t); the action is its
      argmax (with probability `epsilon` a uniformly random action instead, drawn from the epoch generator so
      that training stays reproducible and resumable); the gradient is scaled by SCALES[action].
    - Reward: J^(t) = exp(-L^(t+1)), the branch's ranking loss at the next batch (the feedback of the action).
    - Loss (Eq. 6): L_dqn = -log sigmoid(s^(t)_action * J^(t)), minimised by the gate's own Adam.

    The gate's Adam state, its current state vector and the pending (state, action) pair are the module's
    extra state, so a checkpoint resumes the policy exactly.

    Args:
        scales: the gradient factors the 5 actions stand for.
        lr: Adam learning rate of the policy.
        epsilon: exploration probability.
    """

    SCALES = (0.0, 0.5, 1.0, 1.5, 2.0)

    def __init__(self, scales: tuple[float, ...] = SCALES, lr: float = 1e-3, epsilon: float = 0.1) -> None:
        super().__init__()
        n = len(scales)
        self.n = n
        self.scales = tuple(float(s) for s in scales)
        self.policy = nn.Linear(n, n)
        self.lr, self.epsilon = lr, epsilon
        self.state = torch.full((n,), 1.0 / n)  # s^(t-1)
        self.pending: tuple[Tensor, int] | None = None  # (state the last action was chosen in, the action)
        self._optimizer: torch.optim.Adam | None = None
        self._opt_state: dict | None = None

    def optimizer(self) -> torch.optim.Adam:
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr)
            if self._opt_state is not None:
                self._optimizer.load_state_dict(self._opt_state)
                self._opt_state = None
        return self._optimizer

    def set_lr_scale(self, scale: float) -> None:
        """The paper decays both optimisers together: the model passes its lr_scale on."""
        for group in self.optimizer().param_groups:
            group["lr"] = self.lr * scale

    def probabilities(self, state: Tensor) -> Tensor:
        """s^(t) = softmax(MLP_DQN(state)) [5]."""
        return torch.softmax(self.policy(state), dim=-1)

    @staticmethod
    def dqn_loss(prob_of_action: Tensor, reward: Tensor) -> Tensor:
        """Eq. 6: -log sigmoid(s_max * J)."""
        return -F.logsigmoid(prob_of_action * reward)

    def update(self, branch_loss: float) -> float | None:
        """Reward the pending action with J = exp(-branch_loss) (the loss after it) and take one Adam step.

        Returns:
            L_dqn, or None when no action is pending (the first batch).
        """
        if self.pending is None:
            return None
        state, action = self.pending
        reward = torch.tensor(float(np.exp(-branch_loss)))
        with torch.enable_grad():
            loss = self.dqn_loss(self.probabilities(state)[action], reward)
            opt = self.optimizer()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        self.pending = None
        return float(loss.detach())

    def act(self, generator: torch.Generator | None) -> float:
        """Choose this batch's action from the current state; remember it for the next update; return its scale."""
        with torch.no_grad():
            probs = self.probabilities(self.state)  # [5]
        action = int(torch.argmax(probs))
        if generator is not None and self.epsilon > 0:
            explore, pick = torch.rand(1, generator=generator), torch.randint(0, self.n, (1,), generator=generator)
            if float(explore) < self.epsilon:
                action = int(pick)
        self.pending = (self.state.clone(), action)
        self.state = probs.detach().clone()
        return self.scales[action]

    def get_extra_state(self) -> dict[str, Any]:
        # A deep copy: Adam's state_dict holds its live moment tensors, which the next step changes in place.
        opt = copy.deepcopy(self._optimizer.state_dict() if self._optimizer is not None else self._opt_state)
        return {"state": self.state.clone(), "pending_state": None if self.pending is None else self.pending[0].clone(),
                "pending_action": -1 if self.pending is None else int(self.pending[1]), "optimizer": opt}

    def set_extra_state(self, extra: dict[str, Any]) -> None:
        self.state = extra["state"].clone()
        action = int(extra["pending_action"])
        self.pending = None if action < 0 else (extra["pending_state"].clone(), action)
        self._optimizer, self._opt_state = None, copy.deepcopy(extra["optimizer"])

