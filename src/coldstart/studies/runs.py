"""Many runs, resumably: the engine under `compare`, `sweep` and `tune`.

A study is a list of `Job`s, each one `experiments.run` into its own run directory. `run_jobs` skips a job whose
directory holds a finished run with the same settings, resumes one that was interrupted, and refuses (DataError)
a directory that holds a run with other settings, so a study folder never mixes results of different settings.
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

#: Named variants: label -> (model, hyperparameters). CEN_GCN is CLCRec with the LightGCN encoder (Table 3).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "clcrec_gcn": ("clcrec", {"encoder": "lightgcn"}),
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


def apply_tuned(variants: list[Variant], paths: list[Path]) -> list[str]:
    """Apply `tune` results (best.json files, or folders holding one) to the variants with their labels.

    Returns:
        One line per file used, for the log.
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
        by_label[label].hyper.update(params)
        lines.append(f"{label}: {json.dumps(params)} from {file}")
    return lines


def _matches(saved: dict, cfg: RunConfig) -> str | None:
    """None when the saved config.json describes the run `cfg` would make, else the first difference."""
    wanted = {"dataset": cfg.dataset, "model": cfg.model, "protocol": cfg.protocol, "seed": cfg.seed,
              "data": cfg.data, "ks": cfg.ks, "features": cfg.features,
              "hyperparameters": MODELS[cfg.model](**cfg.hyper).hyperparameters(),
              "phases": cfg.phases}
    plain = lambda v: json.loads(json.dumps(v))  # tuples -> lists, as config.json holds them
    for key, value in wanted.items():
        have = plain(saved.get(key, ["valid", "test"] if key == "phases" else None))
        value = plain(value)
        if have != value:
            if isinstance(have, dict) and isinstance(value, dict):
                key = next(k for k in sorted(set(have) | set(value)) if have.get(k) != value.get(k))
                have, value = have.get(key), value.get(key)
            return f"{key}: {json.dumps(have)} there, {json.dumps(value)} now"
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
    if config_file.exists():
        difference = _matches(json.loads(config_file.read_text()), job.config)
        if difference is not None:
            raise DataError(f"holds a run with other settings ({difference}); use another --output", path=folder)
        if (folder / "metrics.json").exists():
            return json.loads((folder / "metrics.json").read_text()), "done before"
        return experiments.resume(folder, status=say, progress=progress), "resumed"
    # No config.json: nothing finished here (a run killed while writing its split starts again).
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
