"""Data-parallel training across processes: torch.distributed + DistributedDataParallel, started by torchrun.

One process per rank runs the same program. `train.fit` asks this module whether it runs distributed and, if so:

- every rank builds the same epoch from the shared per-epoch generator (`model.batches(generator)`) and takes its
  own contiguous slice of each global batch (`shard`), so the shards are identical bit for bit to slices of the
  single-process batches, and `config.batch_size` keeps its meaning: the GLOBAL batch (each of N ranks sees about
  batch_size / N rows);
- the model's loss runs inside `LossModule.forward`, wrapped in `DistributedDataParallel`: models train through
  `loss(batch, generator)`, not `forward`, and DDP only prepares its gradient reducer (which parameters to wait for,
  the all-reduce buckets) when its own `forward` is called; a module whose forward is `model.loss` makes the loss
  computation DDP's forward without changing any model;
- each rank scales its loss by the weight `shard` returns (its share of the global batch times the world size),
  so DDP's gradient average equals the gradient of the single-process mean over the global batch even when the
  last batch does not split evenly;
- random draws inside the loss (negatives, hybrid swaps) come from a per-rank generator (`loss_generator`): rank 0
  continues the epoch generator, as a single process does, and rank r > 0 uses its own stream; identical streams
  would give every rank the same negatives in the same rows;
- a loss with in-batch negatives gathers the other ranks' rows with `all_gather_with_grad` (identity in one
  process), so its softmax runs over the global batch as in one process;
- rank 0 alone validates, decides early stopping, writes checkpoints, logs and metrics; the decisions reach the other
  ranks through `broadcast` (`on_main` also carries rank 0's DataError to every rank, so all stop together).

Backends: gloo for CPU tensors, NCCL for CUDA tensors ("cpu:gloo,cuda:nccl" on a GPU machine, so CPU-only models
still train there). `init_from_env` reads the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT); `launch` starts N local processes through torch.distributed.run (`coldstart run --nproc N`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from coldstart.errors import DataError

log = logging.getLogger("coldstart")

#: How long a rank waits in a collective (e.g. for rank 0's validation) before the job fails; env override in minutes.
TIMEOUT_ENV = "COLDSTART_DIST_TIMEOUT_MIN"


def active() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes files, logs and validates."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher) set this process up as one rank of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env() -> bool:
    """Join the process group torchrun describes in the environment (no-op if already joined or not launched).

    On a machine with CUDA the group gets both backends ("cpu:gloo,cuda:nccl") and each rank the GPU of its
    LOCAL_RANK, so a CUDA model all-reduces through NCCL while CPU tensors (the broadcast decisions, CPU models)
    use gloo.

    Returns:
        Whether this process runs distributed (world size > 1).
    """
    if dist.is_available() and dist.is_initialized():
        return active()
    if not launched_by_torchrun():
        return False
    if not dist.is_available():
        raise DataError("this torch build has no torch.distributed; run with --nproc 1")
    backend = "gloo"
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    if torch.cuda.is_available():
        if torch.cuda.device_count() >= local_world:  # the same answer on every rank of a homogeneous cluster
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            backend = "cpu:gloo,cuda:nccl"
        else:  # NCCL refuses two ranks on one GPU
            log.warning("distributed: %d processes on this machine but %d GPU(s); training on the CPU with gloo "
                        "(give at most one process per GPU to use them)", local_world, torch.cuda.device_count())
    minutes = float(os.environ.get(TIMEOUT_ENV, "60"))
    dist.init_process_group(backend, timeout=timedelta(minutes=minutes))
    log.info("distributed: rank %d of %d (%s)", rank(), world_size(), backend)
    return active()


def shutdown() -> None:
    """Leave the process group (at the end of a run), if one was joined, all ranks together.

    The barrier first: a rank that tore its gloo connections down while another was still finishing its last
    collective made that one abort ("terminate called without an active exception"; seen in 2 of 4 test runs).
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# -- collectives ---------------------------------------------------------------------------------------------
def broadcast(value: Any, src: int = 0) -> Any:
    """Rank `src`'s value (any picklable object) on every rank; the value itself in one process."""
    if not active():
        return value
    holder = [value if rank() == src else None]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def on_main(fn: Callable[[], Any]) -> Any:
    """Run `fn` on rank 0 only and return its result on every rank.

    A DataError raised by `fn` is raised on every rank (with rank 0's message), so the ranks stop together instead
    of the others waiting for a broadcast that never comes.
    """
    if not active():
        return fn()
    outcome: tuple[str, Any] = ("ok", None)
    if is_main():
        try:
            outcome = ("ok", fn())
        except DataError as exc:
            outcome = ("error", exc)
    outcome = broadcast(outcome)
    if outcome[0] == "error":
        raise outcome[1]
    return outcome[1]


def check_same(value: Any, what: str) -> None:
    """DataError on any rank whose `value` differs from rank 0's (e.g. the split fingerprint)."""
    if not active():
        return
    reference = broadcast(value)
    if value != reference:
        raise DataError(f"rank {rank()} has another {what} than rank 0 ({value!r} != {reference!r}); every rank must "
                        f"see the same data and settings")


def sum_dict(values: dict[str, float]) -> dict[str, float]:
    """Sum each value over the ranks (keys: rank 0's, in its order); the dict itself in one process."""
    if not active():
        return values
    keys = broadcast(list(values))
    flat = torch.tensor([float(values.get(k, 0.0)) for k in keys], dtype=torch.float64)  # [len(keys)], CPU: gloo
    dist.all_reduce(flat)
    return dict(zip(keys, flat.tolist()))


def _row_counts(tensor: Tensor) -> list[int]:
    """Rows of `tensor` on every rank, in rank order."""
    n = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    return [int(s.item()) for s in sizes]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 (rows of different counts per rank) whose backward returns each rank's rows' gradient
    summed over the ranks: every rank's loss depends on every rank's rows."""

    @staticmethod
    def forward(ctx, tensor: Tensor, counts: list[int]) -> Tensor:
        padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))  # [max n_r, ...]: all_gather needs equal shapes
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        ctx.counts, ctx.rank = counts, dist.get_rank()
        return torch.cat([p[:c] for p, c in zip(parts, counts)])  # [sum n_r, ...]

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad)  # each rank's loss contributes to every rank's rows: sum them
        start = sum(ctx.counts[: ctx.rank])
        return grad[start: start + ctx.counts[ctx.rank]], None


def all_gather_with_grad(tensor: Tensor, return_offset: bool = False):
    """Every rank's rows of `tensor` [n_r, ...] concatenated in rank order [sum n_r, ...], differentiable.

    For losses with in-batch negatives (GIR's Eq. 1): score the rank's own rows against the gathered candidates, so
    the softmax runs over the global batch as in one process. Gradients flow back to the rank that owns each row
    (summed over the ranks whose losses used it); with DDP's gradient average and `shard`'s loss weight, the
    parameters get the gradient of the single-process loss over the global batch. Identity in one process. Every rank must call it
    the same number of times per step (it is a collective).

    Args:
        tensor: this rank's rows.
        return_offset: also return where this rank's rows start in the result (the positives' columns).

    Returns:
        The gathered tensor, or (gathered, offset) with return_offset.
    """
    if not active():
        return (tensor, 0) if return_offset else tensor
    counts = _row_counts(tensor)
    gathered = _GatherWithGrad.apply(tensor.contiguous(), counts)
    return (gathered, sum(counts[: rank()])) if return_offset else gathered


# -- training ---------------------------------------------------------------------------------------------------
def shard(batch: Any, rank_: int | None = None, world: int | None = None) -> tuple[Any, float]:
    """This rank's contiguous slice of a global batch and the weight of its loss.

    Args:
        batch: a tensor (sliced along dim 0) or a tuple / list of tensors with the same first dimension.
        rank_, world: default: this process's.

    Returns:
        (the slice, weight = rows in the slice * world / rows in the batch). DDP averages the ranks' gradients, so
        weighting each rank's mean loss by its share makes the average the gradient of the global batch's mean.
        A rank left without rows (a last batch smaller than the world) gets the batch's first row with weight 0, so
        that it still joins the gradient all-reduce.
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    tensors = list(batch) if isinstance(batch, (tuple, list)) else [batch]
    total = tensors[0].shape[0]
    pieces = [t.tensor_split(w)[r] for t in tensors]
    n = pieces[0].shape[0]
    weight = n * w / max(total, 1)
    if n == 0:
        pieces, weight = [t[:1] for t in tensors], 0.0
    out = pieces[0] if not isinstance(batch, (tuple, list)) else type(batch)(pieces)
    return out, weight


def loss_generator(epoch_generator: torch.Generator, seed: int, epoch: int) -> torch.Generator:
    """The generator of this rank's in-loss draws: rank 0 continues the epoch generator (as one process does), rank r
    > 0 gets its own stream seeded by (seed, epoch, r), so that no two ranks draw the same negatives."""
    r = rank()
    if r == 0:
        return epoch_generator
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + r * 104_729 + 1) % (2**63))


class LossModule(nn.Module):
    """A module whose forward is the model's loss, so DistributedDataParallel sees the training computation.

    DDP registers its gradient hooks on the parameters at construction but prepares each step's reduction in its own
    `forward` (it records which outputs to wait for and, with find_unused_parameters, which parameters the step did
    not use). Our models train through `loss(batch, generator)`; calling that directly would bypass DDP's forward and
    leave the reducer unprepared. Wrapping it here changes no model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any, generator: torch.Generator):
        return self.model.loss(batch, generator)


def has_unused_parameters(model: nn.Module, batch: Any) -> bool:
    """Whether one loss on this rank's shard of `batch` leaves a trainable parameter without a gradient, on any rank.

    A probe (autograd.grad, so no .grad is touched, and a throwaway generator, so no training draw is consumed):
    DDP's find_unused_parameters costs a traversal of the autograd graph every step and a warning when nothing is
    unused, but without it a parameter that gets no gradient makes DDP wait for it and fail at the next step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    rows, _ = shard(batch)
    was_training = model.training
    model.train()
    loss, _ = model.loss(rows, torch.Generator().manual_seed(0))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    model.train(was_training)
    unused = float(sum(g is None for g in grads))
    return sum_dict({"unused": unused})["unused"] > 0


def wrap(model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `LossModule(model)`; call the result like `model.loss`.

    Args:
        model: the prepared model, on the device it trains on.
        find_unused_parameters: some parameters get no gradient in some steps (a modality encoder a batch does not
            use); `fit` sets it from `model.ddp_find_unused_parameters` when the model declares it, else from a probe
            (`has_unused_parameters`).

    Buffers are not broadcast in the forward passes: every rank builds the same buffers (content tables, the
    seen-item CSR) from the same split, and broadcasting them every step would cost more than the step on large
    catalogues (DDP still broadcasts rank 0's parameters and buffers once, at construction).
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    params = [p for p in model.parameters() if p.requires_grad]
    device_ids = None
    if params and params[0].device.type == "cuda":
        device_ids = [params[0].device.index if params[0].device.index is not None else torch.cuda.current_device()]
    # torch >= 2.13 renames broadcast_buffers to forward_sync_buffers (and warns about the old name).
    names = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in names else {"broadcast_buffers": False}
    return DistributedDataParallel(LossModule(model), device_ids=device_ids,
                                   find_unused_parameters=find_unused_parameters, **no_sync)


# -- launching ---------------------------------------------------------------------------------------------------
def strip_option(argv: Sequence[str], name: str) -> list[str]:
    """argv without `name VALUE` / `name=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == name:
            skip = True
            continue
        if arg.startswith(name + "="):
            continue
        out.append(arg)
    return out


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run `python -m coldstart.cli ARGV` in `nproc` local processes through torch.distributed.run; its exit code.

    The same as `torchrun --standalone --nproc-per-node N -m coldstart.cli ARGV`, which is what to run on a cluster
    (with --nnodes and a rendezvous endpoint instead of --standalone). torchrun sets OMP_NUM_THREADS=1 per process
    unless it is set; on a CPU machine give each process cores / N threads.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "coldstart.cli", *argv]
    log.info("launching %s", " ".join(command))
    return subprocess.run(command, check=False).returncode
