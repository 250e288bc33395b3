"""The one training loop for every torch model: epochs, early stopping, atomic checkpoints, resume, progress.

A trainable model (see models/embedding.py) provides:
    config.num_epoch, l_r, patience, min_epochs, valid_k   training settings (official CLCRec names)
    prepare(split)                   build samplers, graphs, content tables for this split
    batches(generator)               an epoch's batches (index tensors into the training pairs)
    loss(batch, generator)           (scalar loss, {name: float} parts for the log)

Randomness: each epoch draws from its own torch.Generator seeded with (seed, epoch), so a run resumed
from the checkpoint of epoch e replays epoch e + 1 exactly as an uninterrupted run would.
Checkpoint: one file written atomically after every epoch (model, optimizer, best state, history, training
seconds so far); the one before it is kept as checkpoint.prev.pt, so a damaged newest file (a full disk, a bad
copy) costs one epoch, loudly, and an interrupted run loses at most its current epoch.
Distributed (under torchrun, see distributed.py): every rank draws the same epoch and trains on its slice of each
global batch through DistributedDataParallel; rank 0 alone validates, decides early stopping (broadcast to the
others), writes checkpoints and logs. `config.batch_size` stays the global batch, so N processes follow the
single-process optimisation (same steps, same learning rate) and differ only in the random draws inside the loss.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from coldstart import distributed
from coldstart.data.splits import Split
from coldstart.errors import DataError
from coldstart.models.base import atomic_torch_save

log = logging.getLogger("coldstart")

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"  # the checkpoint before the newest, the fallback when the newest is damaged
#: TrainOptions.valid_scenario's default: the model config's `valid_scenario` ("all" for models without one).
FROM_CONFIG = "config"
VALID_SCENARIOS = ("all", "warm", "cold")


@dataclass
class TrainOptions:
    """How to train (not what: hyperparameters live in the model's Config).

    Attributes:
        checkpoint_dir: where to keep `checkpoint.pt` (None: no checkpoint).
        resume: continue from the checkpoint in `checkpoint_dir` (error if absent).
        progress: show a progress bar per epoch (on a terminal).
        seed: base seed of the per-epoch generators (None: drawn from torch's global generator,
            which `seed_everything` sets).
        valid_scenario: scenario of the validation recall used for early stopping ("all", "warm", "cold");
            FROM_CONFIG: the model config's `valid_scenario`; None: no validation (train num_epoch epochs, keep
            the last). Two-stage models set it per stage (models/pretrained.py, models/deepmusic.py).
        status: called with warnings a person should see (the CLI's status line); they also go to the log.
    """

    checkpoint_dir: Path | None = None
    resume: bool = False
    progress: bool = False
    seed: int | None = None
    valid_scenario: str | None = FROM_CONFIG
    status: Callable[[str], None] | None = None


def stops_early(cfg, bad_epochs: int, epochs_done: int) -> bool:
    """The early-stopping rule: `patience` epochs without improvement, and at least `min_epochs` done."""
    return bad_epochs >= cfg.patience and epochs_done >= cfg.min_epochs


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch (independent of how many draws earlier epochs made)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))


def validation_score(model, split: Split, scenario: str | None, k: int) -> float | None:
    """Validation recall@k of the model in its current state (None without valid data or scenario).

    A scenario without validation users falls back to "all" (`fit` warns about it once per training).
    """
    return _validation(model, split, scenario, k)[0]


def _validation(model, split: Split, scenario: str | None, k: int) -> tuple[float | None, str | None]:
    """(validation recall@k, the scenario it was computed on: `scenario`, or "all" when that one has no users)."""
    from coldstart.eval.evaluate import evaluate

    if len(split.valid) == 0 or scenario is None:
        return None, None
    result = evaluate(model, split, "valid", scenarios=(scenario,), ks=(k,), metrics=["recall"])
    if scenario not in result.metrics:
        result = evaluate(model, split, "valid", scenarios=("all",), ks=(k,), metrics=["recall"])
        scenario = "all"
    return result.metrics[scenario][f"recall@{k}"], scenario


def resolve_scenario(model, opts: TrainOptions) -> str | None:
    """The validation scenario early stopping watches: the options' own, else the model config's (default all)."""
    scenario = opts.valid_scenario
    if scenario == FROM_CONFIG:
        scenario = getattr(model.config, "valid_scenario", "all")
    if scenario is not None and scenario not in VALID_SCENARIOS:
        raise DataError(f"must be one of {', '.join(VALID_SCENARIOS)}, got {scenario!r}", field="valid_scenario")
    return scenario


def has_checkpoint(folder: Path | None) -> bool:
    """Whether `folder` holds a checkpoint to resume from (the newest or the previous one)."""
    return folder is not None and any((Path(folder) / name).exists() for name in (CHECKPOINT, PREVIOUS))


def save_checkpoint(state: dict, path: Path) -> None:
    """Write `state` atomically to `path`, keeping the file it replaces as checkpoint.prev.pt.

    A hard link keeps the previous file without copying it, and `path` itself is only ever replaced by a
    complete file, so at every instant one of the two is whole.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = path.with_name(PREVIOUS)
    if path.exists():
        staged = path.with_name(PREVIOUS + ".tmp")
        staged.unlink(missing_ok=True)
        try:
            os.link(path, staged)
        except OSError:  # a filesystem without hard links: rename instead (the newest is absent for an instant)
            os.replace(path, previous)
        else:
            os.replace(staged, previous)
    atomic_torch_save(state, path)


_CHECKPOINT_KEYS = ("model", "optimizer", "seed", "epoch", "bad_epochs", "history", "best", "best_epoch",
                    "best_state")


def _read_checkpoint(path: Path) -> dict:
    """torch.load one checkpoint file; DataError saying why when it is truncated, corrupt or incomplete."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError... for a damaged file
        # Only the exception's type: torch's own text for a damaged file suggests weights_only=False, a bad idea.
        raise DataError(f"damaged checkpoint (unreadable: {type(exc).__name__})", path=path) from exc
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise DataError(f"damaged checkpoint (no {missing[0]!r})", path=path)
    return ckpt


def load_checkpoint(folder: Path, status: Callable[[str], None] | None = None) -> tuple[dict, Path]:
    """The newest readable checkpoint in `folder`: checkpoint.pt, else (with a warning) checkpoint.prev.pt.

    Raises:
        DataError: neither file is readable; the message says how to start over.
    """
    folder = Path(folder)
    newest, previous = folder / CHECKPOINT, folder / PREVIOUS
    if not newest.exists() and not previous.exists():
        raise DataError("no checkpoint to resume from", path=folder)
    problem: DataError | None = None
    if newest.exists():
        try:
            return _read_checkpoint(newest), newest
        except DataError as exc:
            problem = exc
    if previous.exists():
        try:
            ckpt = _read_checkpoint(previous)
        except DataError as exc:
            problem = problem or exc
        else:
            why = str(problem) if problem else f"{newest}: missing"
            message = f"{why}; resuming from the previous checkpoint {previous} (epoch {ckpt['epoch']})"
            log.warning(message)
            if status is not None:
                status(f"warning: {message}")
            return ckpt, previous
    assert problem is not None  # one of the files exists and neither could be read
    raise DataError(f"{problem.problem}, and no readable previous checkpoint; delete {folder} to restart training "
                    f"from scratch, or rerun with --overwrite", path=problem.path)


def checkpoint_seconds(folder: Path | None) -> float:
    """Training seconds stored in the checkpoints under `folder` (both stages of a two-stage model), 0 if none.

    A resumed run adds these to its own time, so train_seconds covers every process that trained it.
    """
    if folder is None or not Path(folder).is_dir():
        return 0.0
    total = 0.0
    for stage in {p.parent for p in Path(folder).rglob("checkpoint*.pt")}:
        for name in (CHECKPOINT, PREVIOUS):  # the file fit will resume from
            try:
                total += float(_read_checkpoint(stage / name).get("train_seconds", 0.0))
                break
            except DataError:
                continue  # missing or damaged: fit's resume warns or fails about it, with what to do
    return total


def make_adam(parameters, lr: float) -> torch.optim.Adam:
    """Adam, fused into one kernel where this torch build supports it (4x faster on CPU for wide layers)."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(parameters, lr=lr)


def make_optimizer(model) -> torch.optim.Optimizer:
    """The model's own optimizer when it defines `make_optimizer()` (CIERec's Adagrad), else Adam at `config.l_r`.

    Each param group remembers its base rate as "base_lr", which `set_learning_rate` scales.
    """
    own = getattr(model, "make_optimizer", None)
    optimizer = own() if own is not None else make_adam(model.parameters(), model.config.l_r)
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
    return optimizer


def set_learning_rate(model, optimizer: torch.optim.Optimizer, progress: float) -> None:
    """Scale every group's base rate by `model.lr_scale(progress)` (progress in epochs, e.g. 2.5), if defined.

    The schedule is a pure function of progress, so a resumed run sets exactly the rate it would have had.
    """
    schedule = getattr(model, "lr_scale", None)
    if schedule is None:
        return
    scale = float(schedule(progress))
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * scale


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # Off the terminal (a pipe, a log file) a transient bar would leave only blank lines.
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), disable=not (enabled and Console().is_terminal), transient=True)


def train_epoch(model, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                on_batch: Callable[[int, int, dict[str, float]], None] | None = None,
                epoch: int = 0, ddp: torch.nn.Module | None = None,
                loss_generator: torch.Generator | None = None) -> tuple[dict[str, float], int]:
    """One pass over the model's batches: loss, backward, Adam step.

    Args:
        model: a prepared trainable model.
        optimizer: its optimizer.
        generator: the epoch's random generator (batch order; negatives and hybrid swaps unless loss_generator).
        on_batch: called with (batches done, total, loss parts) after every step.
        epoch: 0-based epoch number, for models with a learning-rate schedule (`lr_scale`).
        ddp: the model wrapped by `distributed.wrap` when training distributed: each step then runs on this rank's
            shard of the global batch, its loss weighted by the shard's share (distributed.shard).
        loss_generator: the generator of the draws inside the loss (default: `generator`); distributed ranks
            get their own (distributed.loss_generator).

    Returns:
        (sum of each loss part over the batches, number of batches); distributed, each batch's part is the global
        batch's (the ranks' parts weighted by their shares and summed over the ranks).
    """
    (ddp or model).train()
    batches = model.batches(generator)  # the same global batches on every rank: same generator, same draws
    draws = generator if loss_generator is None else loss_generator
    world = distributed.world_size() if ddp is not None else 1
    sums: dict[str, float] = {}
    for done, batch in enumerate(batches, 1):
        set_learning_rate(model, optimizer, epoch + (done - 1) / max(len(batches), 1))
        if ddp is None:
            loss, parts = model.loss(batch, draws)
            share = 1.0
        else:
            rows, weight = distributed.shard(batch)
            loss, parts = ddp(rows, draws)
            loss = loss * weight  # DDP averages the ranks' gradients: weight = share * world gives the global mean
            share = weight / world
        if not torch.isfinite(loss):
            raise DataError(f"loss became {loss.item()}; lower l_r or check the features", field="loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value * share
        if on_batch is not None:
            on_batch(done, len(batches), parts)
    if ddp is not None:
        sums = distributed.sum_dict(sums)
    return sums, len(batches)


def fit(model, split: Split, options: TrainOptions | None = None) -> None:
    """Train `model` on `split.train` with Adam and early stopping on validation recall; keep the best epoch.

    Sets model.best_epoch_ (1-based, None without validation data), model.history_ (list of dicts) and
    model.train_seconds_ (seconds of this fit, including those of the processes it resumed).

    Under torchrun (a process group of several ranks, distributed.py) every rank calls `fit` with the same model and
    split: rank 0 reads the checkpoint to resume from and sends it to the others, validates after each epoch and
    sends the score, and alone writes checkpoints, logs and status lines; the others train their shards and make the
    same early-stopping decisions from rank 0's scores.
    """
    opts = options or TrainOptions()
    cfg = model.config
    clock = time.perf_counter()
    main = distributed.is_main()
    say = opts.status if main else None  # one voice: rank 0's
    scenario = resolve_scenario(model, opts)
    # prepare places the model on its device (models/embedding.py) before the optimizer is built, so a resume's
    # load_state_dict calls below copy the CPU-mapped checkpoint onto that device (Adam's moments included).
    model.prepare(split)
    optimizer = make_optimizer(model)
    path = Path(opts.checkpoint_dir) / CHECKPOINT if opts.checkpoint_dir else None
    seed = opts.seed if opts.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item())
    # Rank 0's choices, on every rank: an unseeded rank draws its own seed, and a checkpoint a rank cannot see
    # (no shared file system) must not split the ranks into resuming and fresh ones.
    seed, resume = distributed.broadcast((seed, opts.resume))
    start, best, best_epoch, best_state, bad, history, carried = 0, -math.inf, None, None, 0, [], 0.0
    if resume:
        if path is None:
            raise DataError("no checkpoint to resume from (no checkpoint folder given)")
        ckpt, used = distributed.on_main(lambda: load_checkpoint(path.parent, say))
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:  # tensors of other shapes: another model's file
            raise DataError(f"checkpoint does not fit this model ({str(exc).splitlines()[0]}); delete "
                            f"{path.parent} to restart training from scratch, or rerun with --overwrite",
                            path=used) from exc
        seed, start, bad, history = ckpt["seed"], ckpt["epoch"], ckpt["bad_epochs"], ckpt["history"]
        best, best_epoch, best_state = ckpt["best"], ckpt["best_epoch"], ckpt["best_state"]
        carried = float(ckpt.get("train_seconds", 0.0))  # absent in checkpoints written before it was stored
        if main:
            log.info("resumed from %s after epoch %d (best epoch %s)", used, start, best_epoch)
        if stops_early(cfg, bad, start):
            start = cfg.num_epoch  # it had already stopped early
    ddp = None
    if distributed.active() and start < cfg.num_epoch and any(p.requires_grad for p in model.parameters()):
        unused = getattr(model, "ddp_find_unused_parameters", None)
        if unused is None:
            probe = model.batches(epoch_generator(seed, start))
            unused = bool(len(probe)) and distributed.has_unused_parameters(model, probe[0])
        ddp = distributed.wrap(model, unused)  # after the resume: DDP starts every rank from rank 0's parameters
    warned = stuck_warned = False
    with _progress(opts.progress and main) as bars:
        for epoch in range(start, cfg.num_epoch):
            tick = time.perf_counter()
            generator = epoch_generator(seed, epoch)
            task = bars.add_task(f"epoch {epoch + 1}", total=None, info="")

            def advance(done: int, total: int, parts: dict[str, float]) -> None:
                bars.update(task, completed=done, total=total, info=f"loss {parts['loss']:.4f}")

            draws = distributed.loss_generator(generator, seed, epoch) if ddp is not None else None
            sums, n_batches = train_epoch(model, optimizer, generator, advance, epoch, ddp, draws)
            bars.remove_task(task)
            model.eval()
            valid, scored = distributed.on_main(lambda: _validation(model, split, scenario, cfg.valid_k))
            if scored != scenario and not warned:
                # Early stopping on another scenario than asked changes the selected epoch: say so once.
                message = (f"early stopping: the validation split has no users in the {scenario} scenario; "
                           f"using valid recall@{cfg.valid_k} over all items instead")
                if main:
                    log.warning(message)
                if say is not None:
                    say(f"warning: {message}")
                warned = True
            record = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - tick, 3),
                      **{k: round(v / max(n_batches, 1), 6) for k, v in sums.items()},
                      f"valid_recall@{cfg.valid_k}": valid}
            history.append(record)
            improved = valid is None or valid > best
            if improved:
                best, best_epoch, bad = (valid if valid is not None else best), epoch + 1, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
            if main:
                log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v}" for k, v in record.items() if k != "epoch"))
            stuck = getattr(model, "training_warning", lambda h: None)(history)
            if stuck and not stuck_warned:  # e.g. a loss that never left its starting value: say so, once
                if main:
                    log.warning(stuck)
                if say is not None:
                    say(f"warning: {stuck}")
                stuck_warned = True
            if opts.progress and main:
                bars.console.print(f"epoch {epoch + 1}: loss {record.get('loss', float('nan')):.4f}, valid recall@"
                                   f"{cfg.valid_k} {'-' if valid is None else f'{valid:.4f}'}"
                                   f"{' *' if improved else ''} ({record['seconds']:.1f}s)")
            if path is not None and main:
                save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "seed": seed,
                                 "epoch": epoch + 1, "bad_epochs": bad, "history": history, "best": best,
                                 "best_epoch": best_epoch, "best_state": best_state,
                                 "train_seconds": carried + time.perf_counter() - clock,
                                 "world_size": distributed.world_size()}, path)
            if stops_early(cfg, bad, epoch + 1):
                if main:
                    log.info("early stop after epoch %d: no better validation recall for %d epochs", epoch + 1, bad)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    model.best_epoch_ = best_epoch if len(split.valid) else None
    model.history_ = history
    model.train_seconds_ = carried + time.perf_counter() - clock
