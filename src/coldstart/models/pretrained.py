"""Pretrained collaborative embeddings for the two-stage baselines (DeepMusic, and later DropoutNet, Heater).

Stage 1 trains MF-BPR with the model's shared training settings (dim_E, l_r, reg_weight, num_neg, batch_size,
num_epoch, patience, min_epochs, valid_k), with its own checkpoint folder `<checkpoint_dir>/pretrain`, so an
interrupted run resumes inside stage 1 as well as stage 2.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor

from coldstart.data.splits import Split
from coldstart.models.bpr import MFBPR, TrainedConfig
from coldstart.train import CHECKPOINT, TrainOptions


def stage_options(options: TrainOptions | None, stage: str | None) -> TrainOptions:
    """Options of one training stage: its own checkpoint folder, resumed whenever a checkpoint is there.

    Args:
        options: the run's options (None: defaults, no checkpoints).
        stage: sub-folder of the checkpoint folder, or None for the run's own folder.
    """
    opts = options or TrainOptions()
    if opts.checkpoint_dir is None:
        return opts
    folder = opts.checkpoint_dir if stage is None else opts.checkpoint_dir / stage
    return dataclasses.replace(opts, checkpoint_dir=folder, resume=(folder / CHECKPOINT).exists())


def pretrain_mf(config: TrainedConfig, split: Split, options: TrainOptions | None) -> tuple[Tensor, Tensor]:
    """(user [U, dim_E], item [I, dim_E]) embeddings of an MF-BPR trained with the config's shared settings."""
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainedConfig)}
    mf = MFBPR(**shared).fit(split, stage_options(options, "pretrain"))
    return mf.user_embedding.detach().clone(), mf.item_embedding.detach().clone()
