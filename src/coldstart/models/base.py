"""The Recommender contract shared by every model.

- Hyperparameters live in a frozen dataclass `Config`; unknown keys are an error; `__init__` does no work.
- `fit(split) -> self`: `build(dims)` creates the parameters for the split's sizes, then `_fit(split)` trains.
- `score(users) -> Tensor[B, I]`: the one required hook; finite for warm and cold items.
- `rank_scores(users)`: `score` plus the cold-user rule (training popularity when `cold_users == "none"`);
  `recommend` and the evaluator rank with it.
- `recommend(...)` is written once, here. `save(dir)` / `load(dir)` round-trip exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from coldstart.data.paths import temp_sibling
from coldstart.data.splits import Split
from coldstart.errors import DataError


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """A model without hyperparameters."""


class Recommender(nn.Module):
    """Base class of all models. Subclasses set `name`, `Config`, and implement `build`, `_fit` and `score`."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type] = NoConfig
    #: "none" when the model has no learnt representation for cold items (it then scores them by a documented rule).
    cold_items: ClassVar[str] = "content"
    #: "none" when the model has no representation of a user without training interactions: `rank_scores` then
    #: ranks such users by training popularity. Other values name why the scores are meaningful for them anyway.
    cold_users: ClassVar[str] = "none"
    #: Hyperparameter -> values that `coldstart tune` searches by default (empty: nothing to tune).
    search_space: ClassVar[dict[str, list]] = {}

    def __init__(self, **hyper: Any) -> None:
        super().__init__()
        fields = {f.name for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(hyper) - fields)
        if unknown:
            raise DataError(f"unknown hyperparameter {unknown[0]!r} for {self.name} (allowed: "
                            f"{', '.join(sorted(fields)) or 'none'})", field=unknown[0])
        from coldstart.settings import check_values

        # Types first: the Config's own range checks would crash on "abc" or a list.
        check_values(hyper, self.Config, self.name)
        self.config = self.Config(**hyper)
        self.dims_: dict[str, int] = {}
        self.register_buffer("seen_indptr_", torch.zeros(1, dtype=torch.int64))
        self.register_buffer("seen_indices_", torch.zeros(0, dtype=torch.int64))

    # -- to implement --------------------------------------------------------------------------------
    def build(self, dims: dict[str, int]) -> None:
        """Create parameters and buffers for these sizes (n_users, n_items, feature widths)."""

    def _fit(self, split: Split, options=None) -> None:
        """Learn from `split.train` (valid may be used for early stopping, never test).

        `options` is a train.TrainOptions (checkpoints, resume, progress) for models trained by train.py.
        """

    def score(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        """Scores float [B, I] of `users` (int64 [B]) for `items` (int64 [I'], default every item)."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------
    def rank_scores(self, users: Tensor) -> Tensor:
        """Scores float [B, I] used for ranking: `score(users)`, with the documented rule for cold users.

        When `cold_users == "none"`, rows of users without training interactions would be their untrained
        initialisation (noise), so they are replaced by the training popularity of every item (interaction
        counts from the seen-item buffers, so this also holds after `load`). The first fallback is logged
        with the number of such users in the model.

        Args:
            users: int64 [B] user indices.
        """
        scores = self.score(users)  # [B, I]
        if self.cold_users != "none":
            return scores
        counts = self.seen_indptr_[1:] - self.seen_indptr_[:-1]  # [U] training interactions per user
        cold = counts[users] == 0  # [B]
        if not cold.any():
            return scores
        popularity = self._training_popularity(scores.shape[1]).to(scores.dtype)  # [I]
        scores = scores.clone()
        scores[cold] = popularity
        if not getattr(self, "_cold_users_logged", False):
            self._cold_users_logged = True
            logging.getLogger("coldstart").warning(
                "%s has no representation of users without training interactions (cold_users='none'): "
                "%d of %d users are ranked by training item popularity", self.name,
                int((counts == 0).sum()), len(counts))
        return scores

    def invalidate_cache(self) -> None:
        """Forget what inference derived from the parameters (item / user vectors in `self._cache`): it is
        recomputed on first use in eval mode. Called on every switch of train / eval mode and on load."""
        self._cache = None

    def train(self, mode: bool = True):
        self.invalidate_cache()
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.invalidate_cache()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _training_popularity(self, n_items: int) -> Tensor:
        """Training interactions per item, int64 [I], counted once per seen-item buffer (not once per batch)."""
        key = (self.seen_indices_.data_ptr(), len(self.seen_indices_), n_items)
        cached = getattr(self, "_popularity_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, torch.bincount(self.seen_indices_, minlength=n_items))
            self._popularity_cache = cached
        return cached[1]

    def dims_for(self, split: Split) -> dict[str, int]:
        """The sizes `build` needs; models with content add feature widths."""
        return {"n_users": split.n_users, "n_items": split.n_items}

    def fit(self, split: Split, options=None) -> "Recommender":
        """Build for the split's sizes, remember the training interactions (for masking), train; return self.

        Args:
            split: the split; only its train part (and valid, for early stopping) is used.
            options: optional train.TrainOptions (checkpoint folder, resume, progress bars, seed).
        """
        self.dims_ = self.dims_for(split)
        self.build(self.dims_)
        train = split.matrix("train")
        self.seen_indptr_ = torch.from_numpy(train.indptr.astype(np.int64))
        self.seen_indices_ = torch.from_numpy(train.indices.astype(np.int64))
        self._popularity_cache = None  # the counts of another training set
        self._fit(split, options)
        return self

    def seen_mask(self, users: Tensor) -> Tensor:
        """bool [B, I]: items each user interacted with in training."""
        from coldstart.nn.content import gather_csr_rows

        cols, _, _, counts = gather_csr_rows(self.seen_indptr_, self.seen_indices_, None, users)
        rows = torch.repeat_interleave(torch.arange(len(users)), counts)
        mask = torch.zeros(len(users), self.dims_["n_items"], dtype=torch.bool)
        mask[rows, cols] = True
        return mask

    @torch.no_grad()
    def recommend(self, users: Tensor, k: int = 10, candidates: Tensor | None = None,
                  exclude_seen: bool = True) -> tuple[Tensor, Tensor]:
        """Top-k items per user.

        Args:
            users: int64 [B] user indices.
            k: list length.
            candidates: optional bool [I] mask or int64 item indices to choose from.
            exclude_seen: drop items the user interacted with in training.

        Returns:
            (items int64 [B, k], scores float [B, k]); slots beyond the available candidates hold -1 / -inf.
        """
        from coldstart.eval.evaluate import topk_deterministic

        self.eval()
        users = torch.as_tensor(users, dtype=torch.int64)
        scores = self.rank_scores(users).float().clone()  # [B, I]
        if candidates is not None:
            keep = torch.zeros(scores.shape[1], dtype=torch.bool)
            keep[torch.as_tensor(candidates)] = True
            scores[:, ~keep] = float("-inf")
        if exclude_seen:
            scores[self.seen_mask(users)] = float("-inf")
        top, valid = topk_deterministic(scores, k, users)  # ties broken per user
        top_scores = torch.gather(scores, 1, top)
        return torch.where(valid, top, -1), top_scores

    def hyperparameters(self) -> dict[str, Any]:
        """Every hyperparameter, defaults included."""
        return dataclasses.asdict(self.config)

    def save(self, folder: str | Path) -> Path:
        """Write config.json and model.pt into `folder`, each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"model": self.name, "hyperparameters": self.hyperparameters(), "dims": self.dims_}
        atomic_write(folder / "config.json", (json.dumps(meta, indent=1) + "\n").encode())
        atomic_torch_save(self.state_dict(), folder / "model.pt")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Recommender":
        """Rebuild a saved model (any registered class when called on Recommender)."""
        from coldstart.models import MODELS

        folder = Path(folder)
        path = folder / "config.json"
        if not path.exists():
            raise DataError("missing required file config.json (is this a saved model?)", path=folder)
        meta = json.loads(path.read_text())
        klass = MODELS[meta["model"]] if cls is Recommender else cls
        model = klass(**meta["hyperparameters"])
        model.dims_ = {k: int(v) for k, v in meta["dims"].items()}
        model.build(model.dims_)
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        for name, _ in list(model.named_buffers(recurse=False)):
            if name.endswith("_") and name in state:  # fitted buffers whose size depends on the data
                setattr(model, name, state[name])
        model.load_state_dict(state)
        model.eval()
        return model


def atomic_write(path: Path, data: bytes) -> None:
    """Write bytes to a temporary file in the same folder, then rename over `path`."""
    fd, tmp = temp_sibling(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename over `path`."""
    fd, tmp = temp_sibling(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
