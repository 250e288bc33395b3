"""Pretrained collaborative embeddings for the two-stage baselines (DeepMusic, and later DropoutNet, Heater).

Stage 1 trains MF-BPR with the model's shared training settings (dim_E, l_r, reg_weight, num_neg, batch_size,
num_epoch, patience, min_epochs, valid_k), with its own checkpoint folder `<checkpoint_dir>/pretrain`, so an
interrupted run resumes inside stage 1 as well as stage 2.

Stage 1 early-stops on the *warm* validation interactions: MF-BPR has no representation for cold items, so a
validation list with cold items in it measures nothing about its factors. A split whose validation holds only
cold items (CiteULike-a's published Heater split) gives stage 1 no signal at all; it then trains `num_epoch`
epochs and keeps the last (selecting on zeros would keep epoch 1, an untrained model).
"""

from __future__ import annotations

import dataclasses
import logging

from torch import Tensor

from coldstart.data.splits import Split
from coldstart.models.bpr import MFBPR, TrainedConfig
from coldstart.train import CHECKPOINT, TrainOptions

log = logging.getLogger("coldstart")


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


def pretrain_options(split: Split, options: TrainOptions | None) -> TrainOptions:
    """Stage 1's options: its checkpoint folder, validated on warm interactions, or not at all if there are none."""
    has_warm = bool((~split.valid.cold).any())
    if not has_warm:
        log.info("stage 1: no warm validation interactions; MF-BPR trains num_epoch epochs and keeps the last")
    return dataclasses.replace(stage_options(options, "pretrain"), valid_scenario="warm" if has_warm else None)


def pretrain_mf(config: TrainedConfig, split: Split, options: TrainOptions | None) -> tuple[Tensor, Tensor]:
    """(user [U, dim_E], item [I, dim_E]) embeddings of an MF-BPR trained with the config's shared settings."""
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainedConfig)}
    # On the CPU, like stage 2: the two-stage models have no device setting yet (docs/distributed.md, Devices).
    mf = MFBPR(**shared, device="cpu").fit(split, pretrain_options(split, options))
    return mf.user_embedding.detach().clone(), mf.item_embedding.detach().clone()
