"""`compare`: every model x seed on one dataset and protocol, then the Table 2 and Table 3 reports.

    DIR/runs/<label>/seed<s>/   one run directory each (experiments.py), reused when finished

With `split_seed` every run tests on that one split and the seeds vary only the initialisation (what tuned
settings need: see runs.apply_tuned); without it each seed draws its own split too.
    DIR/study.json              the settings of the study
    DIR/table2.{md,csv,tex}     warm / cold / all x metrics, mean +- std over seeds, significance (report.py)
    DIR/table3.{md,csv,tex}     CEN_MF / CEN_GCN against MF-BPR / LightGCN, when those runs are in the study
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from coldstart.errors import DataError
from coldstart.experiments import RunConfig
from coldstart.models.base import atomic_write
from coldstart.studies.runs import Job, Variant, run_jobs, split_seeds_of


@dataclass
class Study:
    """What `compare` runs: variants x seeds on one dataset, protocol and content."""

    dataset: str
    protocol: str
    variants: list[Variant]
    seeds: list[int]
    data: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    ks: list[int] = field(default_factory=lambda: [10, 20])
    features: list[str] = field(default_factory=list)
    split_seed: int | None = None  # None: each seed draws its own split

    def split_seeds(self) -> list[int | None]:
        """The split seed of every run, in seed order (None for a published split)."""
        return split_seeds_of(self.protocol, self.seeds, self.split_seed)

    def jobs(self, output: Path) -> list[Job]:
        """One Job per (variant, seed), variants outermost so each model's seeds finish together."""
        if not self.seeds:
            raise DataError("no seeds given", field="--seeds")
        return [Job(RunConfig(dataset=self.dataset, model=v.model, protocol=self.protocol, seed=seed,
                              data=self.data, split=self.split, hyper=dict(v.hyper), ks=self.ks,
                              features=self.features, split_seed=self.split_seed),
                    output / "runs" / v.label / f"seed{seed}", {"model": v.label, "seed": seed})
                for v in self.variants for seed in self.seeds]

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "protocol": self.protocol, "seeds": self.seeds,
                "split_seed": self.split_seed, "data": self.data,
                "split": self.split, "ks": self.ks, "features": self.features,
                "models": {v.label: {"model": v.model, "hyper": v.hyper} for v in self.variants}}


def run_study(study: Study, output: str | Path, status: Callable[[str], None] | None = None,
              progress: bool = False) -> list[Job]:
    """Run (or reuse) every run of the study; returns its jobs, all finished."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    jobs = study.jobs(output)
    atomic_write(output / "study.json", (json.dumps(study.describe(), indent=1) + "\n").encode())
    run_jobs(jobs, status, progress)
    return jobs
