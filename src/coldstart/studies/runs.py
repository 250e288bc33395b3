"""Many runs, resumably: the engine under `compare`, `sweep` and `tune`.

A study is a list of `Job`s, each one `experiments.run` into its own run directory. `run_jobs` skips a job whose
directory holds a finished run with the same settings, resumes one that was interrupted, and refuses (DataError)
a directory that holds a run with other settings, so a study folder never mixes results of different settings.

Tuned settings (`apply_tuned`) are only accepted for a study tested on the split they were tuned on: on any
other split of the same data, the test rows overlap the tuning's validation rows, and the numbers would be
optimistic.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from coldstart import experiments
from coldstart.errors import DataError
from coldstart.experiments import RunConfig
from coldstart.models import MODELS
from coldstart.rundir import read_json

#: Named variants: label -> (model, hyperparameters). CEN_GCN is CLCRec with the LightGCN encoder (Table 3).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "clcrec_gcn": ("clcrec", {"encoder": "lightgcn"}),
    # user cold start (issue 13): the two-stage baselines with their content tower on user attributes
    "dropoutnet_user": ("dropoutnet", {"side": "user"}),
    "heater_user": ("heater", {"side": "user"}),
    "deepmusic_user": ("deepmusic", {"side": "user"}),
}


@dataclass
class Variant:
    """A model under a label, with its own hyperparameters (e.g. clcrec_gcn = clcrec with encoder=lightgcn)."""

    label: str
    model: str
    hyper: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    """One run of a study: its configuration, its directory, and labels for the report."""

    config: RunConfig
    folder: Path
    tags: dict[str, Any] = field(default_factory=dict)


def model_fields(model: str) -> set[str]:
    """The hyperparameter names a registered model accepts."""
    return {f.name for f in dataclasses.fields(MODELS[model].Config)}


def parse_variants(text: str) -> list[Variant]:
    """"a,b,clcrec_gcn" -> Variants; a name is a registered model or a VARIANTS label."""
    labels = [t.strip() for t in text.split(",") if t.strip()]
    if not labels:
        raise DataError("no models given", field="--models")
    if len(set(labels)) != len(labels):
        raise DataError(f"a model is listed twice in {text!r}", field="--models")
    out = []
    for label in labels:
        if label in MODELS:
            out.append(Variant(label, label))
        elif label in VARIANTS:
            model, hyper = VARIANTS[label]
            out.append(Variant(label, model, dict(hyper)))
        else:
            known = ", ".join([*MODELS, *VARIANTS])
            raise DataError(f"unknown model {label!r} (use {known})", field="--models")
    return out


def apply_settings(variants: list[Variant], hyper: dict[str, Any]) -> None:
    """Give each variant the --set hyperparameters meant for it, in place.

    `label.key=value` goes to that label only; a plain `key=value` goes to every variant whose model has that
    hyperparameter (num_epoch reaches the trained models, not popularity). A key no variant knows is an error.
    """
    by_label = {v.label: v for v in variants}
    for key, value in hyper.items():
        label, dot, name = key.partition(".")
        if dot:
            if label not in by_label:
                raise DataError(f"{label!r} is not among the models compared", field=key)
            targets = [by_label[label]]
            if name not in model_fields(targets[0].model):
                raise DataError(f"{targets[0].model} has no hyperparameter {name!r}", field=key)
        else:
            name = key
            targets = [v for v in variants if name in model_fields(v.model)]
            if not targets:
                raise DataError(f"no model compared has the hyperparameter {name!r}", field=key)
        for variant in targets:
            variant.hyper[name] = value


def apply_tuned(variants: list[Variant], paths: list[Path], split_seeds: list[int | None] | None = None) -> list[str]:
    """Apply `tune` results (best.json files, or folders holding one) to the variants with their labels.

    Args:
        variants: the study's variants, updated in place.
        paths: best.json files or their folders.
        split_seeds: the split seeds the study will test on (one per seed without --split-seed; [None] for a
            published split); None skips the check.

    Returns:
        One line per file used, for the log.

    Raises:
        DataError: a file that is not a tuning result, a label not compared, or a tuning on another split than
            the study's (its validation rows would be among the study's test rows).
    """
    lines = []
    by_label = {v.label: v for v in variants}
    for path in paths:
        file = path / "best.json" if path.is_dir() else path
        if not file.exists():
            raise DataError("no tuning result (best.json) here", path=path)
        try:
            best = json.loads(file.read_text())
            label, params = best["label"], best["params"]
        except (ValueError, KeyError) as exc:
            raise DataError(f"not a tuning result ({exc})", path=file) from exc
        if label not in by_label:
            raise DataError(f"tuned model {label!r} is not among the models compared", path=file)
        if split_seeds is not None:
            check_tuned_split(best.get("split_seed", best.get("seed")), split_seeds, file)
        by_label[label].hyper.update(params)
        lines.append(f"{label}: {json.dumps(params)} from {file}")
    return lines


def split_seeds_of(protocol: str, seeds: list[int], split_seed: int | None) -> list[int | None]:
    """The split seed each of `seeds` runs on (RunConfig.split_seed_used), e.g. for `apply_tuned`."""
    return [RunConfig("", "", protocol, seed, split_seed=split_seed).split_seed_used() for seed in seeds]


def check_tuned_split(tuned: int | None, split_seeds: list[int | None], file: Path) -> None:
    """DataError unless every split the study tests on is the split `file`'s tuning validated on.

    Args:
        tuned: the tuning's split seed (best.json files from before split_seed existed: their seed).
        split_seeds: the study's split seeds.
        file: the best.json, for the message.
    """
    distinct = sorted(set(split_seeds), key=str)
    if distinct == [None]:
        return  # a published split: one fixed split for the tuning and the study
    if len(distinct) > 1:
        raise DataError(f"tuned on split seed {tuned}, but without --split-seed each of the seeds "
                        f"{','.join(map(str, distinct))} draws its own split, whose test rows overlap the tuning's "
                        f"validation rows; pass --split-seed {tuned} so the seeds vary only the initialisation",
                        path=file)
    if distinct[0] != tuned:
        raise DataError(f"tuned on split seed {tuned}, but the study tests on split seed {distinct[0]}, whose test "
                        f"rows overlap the tuning's validation rows; pass --split-seed {tuned} or tune with "
                        f"--split-seed {distinct[0]}", path=file)


def _hyperparameters_differ(saved: dict, wanted: dict, defaults: dict) -> str | None:
    """First hyperparameter that differs; one absent from an older config.json counts as its default."""
    for name in sorted(set(saved) | set(wanted)):
        have = saved.get(name, defaults.get(name))
        if have != wanted.get(name):
            return f"hyperparameters.{name}: {json.dumps(have)} there, {json.dumps(wanted.get(name))} now"
    return None


def _matches(saved: dict, cfg: RunConfig) -> str | None:
    """None when the saved config.json describes the run `cfg` would make, else the first difference."""
    wanted = {"dataset": cfg.dataset, "model": cfg.model, "protocol": cfg.protocol, "seed": cfg.seed,
              "data": cfg.data, "ks": cfg.ks, "features": cfg.features, "phases": cfg.phases}
    plain = lambda v: json.loads(json.dumps(v))  # tuples -> lists, as config.json holds them
    # config.json files from before split_seed was recorded: the split's own seed is the split seed.
    have_split_seed = saved.get("split_seed", saved.get("split", {}).get("seed"))
    if have_split_seed != cfg.split_seed_used():
        return f"split_seed: {json.dumps(have_split_seed)} there, {json.dumps(cfg.split_seed_used())} now"
    for key, value in wanted.items():
        have = plain(saved.get(key, ["valid", "test"] if key == "phases" else None))
        value = plain(value)
        if have != value:
            if isinstance(have, dict) and isinstance(value, dict):
                key = next(k for k in sorted(set(have) | set(value)) if have.get(k) != value.get(k))
                have, value = have.get(key), value.get(key)
            return f"{key}: {json.dumps(have)} there, {json.dumps(value)} now"
    model_cls = MODELS[cfg.model]
    # Hyperparameters added since a run was made count as their default there, so old runs stay reusable.
    defaults = plain(dataclasses.asdict(model_cls.Config()))
    difference = _hyperparameters_differ(plain(saved.get("hyperparameters") or {}),
                                         plain(model_cls(**cfg.hyper).hyperparameters()), defaults)
    if difference is not None:
        return difference
    for key, value in cfg.split.items():
        have = plain(saved.get("split", {}).get(key))
        if have != plain(value):
            return f"split.{key}: {json.dumps(have)} there, {json.dumps(value)} now"
    return None


def run_job(job: Job, say: Callable[[str], None], progress: bool = False) -> tuple[dict, str]:
    """Run, resume or reuse one job.

    Returns:
        (metrics.json content, what happened: "done before", "resumed" or "ran").
    """
    folder = job.folder
    config_file = folder / "config.json"
    start_over = f"delete {folder} to run it again"
    if config_file.exists():
        difference = _matches(read_json(config_file, start_over), job.config)
        if difference is not None:
            raise DataError(f"holds a run with other settings ({difference}); use another --output", path=folder)
        if (folder / "metrics.json").exists():
            return read_json(folder / "metrics.json", start_over), "done before"
        return experiments.resume(folder, status=say, progress=progress), "resumed"
    # No config.json: nothing finished here (a run killed while writing its split starts again). `run` only
    # replaces a run directory (rundir.py), so a folder of other files is refused, not emptied.
    return experiments.run(job.config, folder, overwrite=True, status=say, progress=progress), "ran"


def run_jobs(jobs: list[Job], status: Callable[[str], None] | None = None, progress: bool = False) -> list[dict]:
    """Run every job in order (see the module docstring); returns their metrics in the same order."""
    say = status or (lambda message: None)
    out = []
    for n, job in enumerate(jobs, 1):
        tags = " ".join(f"{k}={v}" for k, v in job.tags.items())
        start = time.perf_counter()
        metrics, how = run_job(job, lambda m: say(f"[{n}/{len(jobs)}] {tags}: {m}"), progress)
        say(f"[{n}/{len(jobs)}] {tags}: {how} ({time.perf_counter() - start:.1f}s)")
        out.append(metrics)
    return out
