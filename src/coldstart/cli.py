"""The `coldstart` command line: datasets, features, split, run, evaluate. Thin wrappers over the Python API.

Exit codes: 0 done; 2 bad input or usage (a one-line `error: ...` on stderr, never a traceback); 130 interrupted
(Ctrl-C), with how to resume. Settings are type-checked (settings.py) before any folder is created.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from coldstart.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Cold-start recommendation: load, extract features, split, train, evaluate.")
console = Console()


def parse_value(text: str) -> Any:
    """JSON value if it parses (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """--set key=value items -> {"hyper": {...}, "split": {...}, "data": {...}}.

    `split.<name>` goes to the protocol, `data.<name>` to the loader, anything else to the model.
    """
    out: dict[str, dict[str, Any]] = {"hyper": {}, "split": {}, "data": {}}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise DataError(f"expected key=value, got {pair!r}", field="--set")
        group, dot, name = key.partition(".")
        if dot and group in ("split", "data"):
            out[group][name] = parse_value(value)
        else:
            out["hyper"][key] = parse_value(value)
    return out


def parse_metric_names(text: str) -> list[str]:
    """Metric names from "recall,ndcg,precision", each one of eval/metrics.py METRICS."""
    from coldstart.eval.metrics import METRICS

    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if not names or unknown:
        raise DataError(f"expected metric names among {', '.join(METRICS)}, got {text!r}", field="--metrics")
    return names


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise DataError(f"expected comma-separated integers, got {text!r}", field="--k") from None
    if not ks or min(ks) < 1:
        raise DataError(f"cut-offs must be positive integers, got {text!r}", field="--k")
    return ks


#: The keys a --config file may hold; any other (a misspelt section) is an error, not silently ignored.
CONFIG_KEYS = {"model": dict, "split": dict, "data": dict, "ks": list, "features": list}


def read_config_file(path: Path) -> dict[str, Any]:
    """A JSON or TOML object with optional sections model / split / data and keys ks / features.

    Raises:
        DataError: naming the file: unreadable, not an object, an unknown key, or a key of the wrong type.
    """
    if not path.exists():
        raise DataError("config file not found", path=path)
    try:
        if path.suffix == ".toml":
            import tomllib

            doc = tomllib.loads(path.read_text())
        else:
            doc = json.loads(path.read_text())
    except (ValueError, ImportError) as exc:
        raise DataError(f"cannot parse config ({exc})", path=path) from exc
    if not isinstance(doc, dict):
        raise DataError(f"expected an object with sections {', '.join(CONFIG_KEYS)}, got {type(doc).__name__}",
                        path=path)
    for key, value in doc.items():
        if key not in CONFIG_KEYS:
            raise DataError(f"unknown key (allowed: {', '.join(CONFIG_KEYS)})", path=path, field=key)
        if not isinstance(value, CONFIG_KEYS[key]):
            raise DataError(f"expected {'an object' if CONFIG_KEYS[key] is dict else 'a list'}, "
                            f"got {type(value).__name__}", path=path, field=key)
    ks = doc.get("ks")
    if ks is not None and not (ks and all(type(k) is int and k >= 1 for k in ks)):
        raise DataError(f"expected positive integers, got {ks}", path=path, field="ks")
    if not all(isinstance(f, str) for f in doc.get("features", [])):
        raise DataError(f"expected preset names, got {doc['features']}", path=path, field="features")
    return doc


def check_settings(dataset: str, protocol: str, sets: dict[str, dict[str, Any]], path: Path | None = None) -> None:
    """Type-check data and split settings (settings.py) before any folder is created or data is loaded."""
    from coldstart.settings import check_data, check_split

    check_data(dataset, sets.get("data", {}), path)
    check_split(protocol, sets.get("split", {}), path)


def check_hyper(model: str, *hypers: dict[str, Any], path: Path | None = None) -> None:
    """Type- and range-check hyperparameter sets of a model (building a model does no work) up front."""
    from coldstart.models import MODELS
    from coldstart.settings import check_values

    if model not in MODELS:
        raise DataError(f"unknown model {model!r} (use {', '.join(MODELS)})", field="model")
    for hyper in hypers:
        if path is not None:  # values from a file: name it in the error
            check_values(hyper, MODELS[model].Config, model, path=path)
        MODELS[model](**hyper)


def print_metrics(metrics: dict, phase: str = "test") -> None:
    """The warm / cold / all table of one phase, then the document's note lines (e.g. how a model without a
    representation of cold items scores them)."""
    block = metrics.get(phase, {})
    if block:
        console.print(_metrics_table(metrics, phase, block))
    else:
        console.print(f"no {phase} metrics")
    notes = metrics.get("note") or []
    for line in [notes] if isinstance(notes, str) else notes:
        console.print(f"note: {line}", markup=False, highlight=False)


def _metrics_table(metrics: dict, phase: str, block: dict) -> Table:
    keys = list(next(iter(block.values())).keys())
    # A run names its model and dataset; `evaluate` knows only the recommendations file and the split folder.
    what = (f"{metrics['model']} on {metrics.get('dataset', '?')}" if "model" in metrics else
            f"{metrics.get('recommendations', 'recommendations')} on split {metrics.get('split', '?')}")
    seed = f", seed {metrics['seed']}" if metrics.get("seed") is not None else ""
    title = f"{what} ({metrics.get('protocol', '?')}{seed}), {phase}"
    table = Table(title=title, min_width=len(title))  # keep the title on one line over a narrow table
    table.add_column("metric")
    for scenario in block:
        users = metrics.get(f"{phase}_users", {}).get(scenario)
        table.add_column(scenario if users is None else f"{scenario} ({users} users)", justify="right")
    for key in keys:
        table.add_row(key, *(f"{block[s][key]:.4f}" for s in block))
    return table


@app.command()
def datasets(sizes: bool = typer.Option(True, help="Load each dataset found to report its sizes.")) -> None:
    """List known datasets, where each was found, and their sizes."""
    from coldstart.data.loaders import LOADERS, load_dataset, locate

    table = Table(title="datasets (implicit feedback: rating >= 4 where ratings exist)")
    table.add_column("name", no_wrap=True)
    for col in ("users", "items", "interactions"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("content (items; users)", overflow="fold")
    where = []
    for name, (_, _, downloader) in LOADERS.items():
        folder = locate(name, download=False)
        found = str(folder) if folder else ("generated in code" if name == "synthetic" else
                                            "not found: downloads on first use" if downloader else "not found")
        where.append(f"{name}: {found}")
        row = [name, "", "", "", ""]
        if sizes and (folder or name == "synthetic"):
            ds = load_dataset(name, download=False)
            # Interaction-level content (Amazon's review text) becomes item content after the split.
            items = [*ds.item_features, *(f"{n} (per interaction)" for n in ds.interaction_features)]
            content = f"{', '.join(items) or '-'}; {', '.join(ds.user_features) or '-'}"
            row[1:] = [str(ds.n_users), str(ds.n_items), str(ds.n_interactions), content]
        table.add_row(*row)
    console.print(table)
    console.print("\n".join(where), markup=False, highlight=False, soft_wrap=True)


def parse_presets(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


@app.command()
def features(
    dataset: str = typer.Option(..., help="Dataset name or folder."),
    preset: Optional[str] = typer.Option(None, help="Presets, comma-separated (e.g. visual,textual,meta), or "
                                                    "kind:modality specs; omit to list the dataset's presets."),
    protocol: str = typer.Option("cold_item", help="Split protocol, for presets built from training interactions."),
    seed: int = typer.Option(0, min=0, help="Split seed, for presets built from training interactions."),
    set_: list[str] = typer.Option([], "--set", help="split.<param>=value or data.<option>=value."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache folder (default $COLDSTART_FEATURE_CACHE "
                                                        "or ~/.cache/coldstart/features)."),
    progress: bool = typer.Option(True, help="Progress bars while extracting."),
) -> None:
    """Extract content features (cached on disk); `run --features` uses the same cache."""
    from coldstart.data.loaders import load_dataset
    from coldstart.features import PRESETS, FeatureCache, get_preset, with_features

    sets = parse_sets(set_)
    if sets["hyper"]:
        raise DataError(f"unknown setting {next(iter(sets['hyper']))!r} (use split.<param> or data.<option>)", field="--set")
    check_settings(dataset, protocol, sets)
    ds = load_dataset(dataset, **sets["data"])
    names = parse_presets(preset)
    if not names:
        table = Table(title=f"feature presets of {ds.name}")
        for col in ("preset", "side", "extractor", "content"):
            table.add_column(col, overflow="fold")
        for p in PRESETS.get(ds.name, {}).values():
            table.add_row(p.name, p.side, p.extractor, p.description)
        console.print(table)
        console.print("any dataset also takes kind:modality specs: sentence:<text>, tfidf:<text or labels>[@dim], "
                      "image:<images>, multihot:<labels>[+<labels>]", markup=False, highlight=False)
        return
    train = None
    if any(get_preset(ds, n).needs_train for n in names):
        from coldstart.data.splits import make_split

        train = make_split(ds, protocol, seed=seed, **sets["split"]).train
        console.print(f"[dim]text from the training interactions of {protocol} (seed {seed})[/dim]")
    cache = FeatureCache(cache_dir) if cache_dir is not None else FeatureCache()
    _, reports = with_features(ds, names, train=train, cache=cache, progress=progress,
                               status=lambda line: console.print(line, markup=False, highlight=False))
    for report in reports:
        if report.get("path"):
            console.print(f"[dim]cached {report['path']}[/dim]")


@app.command(name="generate")
def generate_data(
    output: Path = typer.Argument(..., help="Folder to write: a bring-your-own folder for `run --dataset FOLDER`."),
    users: int = typer.Option(1_000_000, min=1, help="Users."),
    items: int = typer.Option(100_000, min=1, help="Items."),
    interactions: int = typer.Option(10_000_000, min=1, help="Distinct (user, item) interactions."),
    topics: int = typer.Option(50, min=1, help="Planted topics."),
    seed: int = typer.Option(0, min=0, help="Random seed."),
) -> None:
    """Write a synthetic dataset with planted topics: interactions.parquet and three item content modalities."""
    import time

    from coldstart.data.generate import generate, write_folder

    start = time.perf_counter()
    data = generate(users, items, interactions, n_topics=topics, seed=seed)
    write_folder(data, output)
    console.print(f"{len(data.users):,} interactions, {data.n_users:,} users, {data.n_items:,} items "
                  f"({time.perf_counter() - start:.1f}s) -> {output}")


@app.command()
def split(
    dataset: str = typer.Option(..., help="Dataset name or folder."),
    protocol: str = typer.Option("cold_item", help="cold_item, cold_item_only, cold_user or published."),
    seed: int = typer.Option(0, min=0, help="Random seed."),
    set_: list[str] = typer.Option([], "--set", help="split.<param>=value or data.<option>=value."),
    output: Path = typer.Option(..., help="Folder to write the split into."),
) -> None:
    """Split a dataset and save the split (train/valid/test.csv + meta.json)."""
    from coldstart.data.loaders import load_dataset
    from coldstart.data.splits import make_split

    sets = parse_sets(set_)
    if sets["hyper"]:
        raise DataError(f"unknown setting {next(iter(sets['hyper']))!r} (use split.<param> or data.<option>)", field="--set")
    check_settings(dataset, protocol, sets)
    ds = load_dataset(dataset, **sets["data"])
    sp = make_split(ds, protocol, seed=seed, **sets["split"])
    sp.save(output)
    meta = sp.meta()
    console.print(f"wrote {output}: {json.dumps(meta['counts'])}; fingerprint {meta['fingerprint'][:12]}")


@app.command()
def run(
    dataset: Optional[str] = typer.Option(None, help="Dataset name or folder."),
    model: Optional[str] = typer.Option(None, help="Model name (see the README)."),
    protocol: str = typer.Option("cold_item", help="cold_item, cold_item_only, cold_user or published."),
    config: Optional[Path] = typer.Option(None, help="JSON/TOML file with sections model, split, data and key ks."),
    set_: list[str] = typer.Option([], "--set", help="key=value (model), split.key=value, data.key=value."),
    seed: int = typer.Option(0, min=0, help="Random seed (split and model)."),
    split_seed: Optional[int] = typer.Option(None, min=0, help="Seed of the split (default: --seed); --seed then "
                                                               "seeds only the model."),
    k: Optional[str] = typer.Option(None, help="Cut-offs, comma-separated (default: the config file's ks, "
                                               "else 10,20)."),
    output: Optional[Path] = typer.Option(None, help="Run directory."),
    overwrite: bool = typer.Option(False, help="Replace an existing run directory (only a folder an earlier run "
                                               "marked as one; any other non-empty folder is refused)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the interrupted run in this directory "
                                                     "(every other option comes from its config.json)."),
    features: Optional[str] = typer.Option(None, help="Feature presets to build (or read from the cache) and use "
                                                      "as the content, comma-separated (see `coldstart features`)."),
    progress: bool = typer.Option(True, help="Progress bars while training."),
    sampled: int = typer.Option(0, min=0, help="Also rank each test user's positives among this many sampled "
                                               "non-interacted items (CIERec's protocol, e.g. 500) and write "
                                               "RUN/sampled.json; works on a finished run with --resume."),
    repeats: int = typer.Option(5, min=1, help="Independent negative draws averaged by --sampled."),
    sampled_from: str = typer.Option("all", help="Where --sampled draws negatives: all (every non-interacted "
                                                 "item, the paper's wording) or scenario (the scenario's "
                                                 "candidates, as full ranking; RUN/sampled-scenario.json)."),
    nproc: int = typer.Option(1, min=1, help="Train in N processes with DistributedDataParallel (started through "
                                             "torch.distributed.run; gloo on CPU, NCCL on GPU); batch_size stays "
                                             "the global batch. Under torchrun, leave it at 1."),
) -> None:
    """Train and evaluate one model; write a run directory and print the warm / cold / all table."""
    from coldstart import distributed, experiments
    from coldstart.experiments import RunConfig

    if nproc > 1:
        if distributed.launched_by_torchrun():
            raise DataError("this process is already one of several torchrun processes; give the process count to "
                            "torchrun only", field="--nproc")
        folder = resume if resume is not None else output
        if folder is not None:
            on_interrupt(resume_hint(folder))
        raise typer.Exit(distributed.launch(distributed.strip_option(_argv, "--nproc"), nproc))
    if distributed.init_from_env() and not distributed.is_main():
        console.quiet = True  # one voice: rank 0 prints the status lines and the table

    def say(message: str) -> None:
        console.print(f"[dim]{message}[/dim]")

    if resume is not None:
        on_interrupt(resume_hint(resume))
        metrics = experiments.resume(resume, status=say, progress=progress)
        output = resume
    else:
        for name, value in (("--dataset", dataset), ("--model", model), ("--output", output)):
            if value is None:
                raise DataError(f"missing option {name} (or pass --resume RUN_DIR)", field=name)
        file_cfg = read_config_file(config) if config else {}
        if config:  # check the file's sections alone first, so that an error names the file
            check_settings(dataset, protocol, file_cfg, config)
            check_hyper(model, file_cfg.get("model", {}), path=config)
        sets = parse_sets(set_)
        cfg = RunConfig(
            dataset=dataset, model=model, protocol=protocol, seed=seed, split_seed=split_seed,
            data={**file_cfg.get("data", {}), **sets["data"]},
            split={**file_cfg.get("split", {}), **sets["split"]},
            hyper={**file_cfg.get("model", {}), **sets["hyper"]},
            ks=parse_ks(k) if k is not None else file_cfg.get("ks", [10, 20]),
            features=parse_presets(features) or list(file_cfg.get("features", [])),
        )
        check_settings(cfg.dataset, cfg.protocol, {"data": cfg.data, "split": cfg.split})
        on_interrupt(resume_hint(output))
        metrics = experiments.run(cfg, output, overwrite=overwrite, status=say, progress=progress)
    print_metrics(metrics, "test")
    if metrics.get("best_epoch") is not None:
        console.print(f"best epoch (validation recall): {metrics['best_epoch']}")
    if sampled and distributed.is_main():  # rank 0's run directory, once it is complete
        print_metrics(sampled_report(output, sampled, repeats, negatives=sampled_from), "test")
    console.print(f"run directory: {output}")
    distributed.shutdown()


def sampled_report(run_dir: Path, n_negatives: int, repeats: int, seed: int = 0, negatives: str = "all") -> dict:
    """Sampled test ranking of a finished run's saved model (evaluate_sampled per user, `repeats` draws of
    `n_negatives` from `negatives`); written atomically to RUN/sampled.json (RUN/sampled-scenario.json for
    negatives="scenario") and returned in metrics.json's layout."""
    from coldstart.data.loaders import load_dataset
    from coldstart.data.splits import Split
    from coldstart.eval.evaluate import evaluate_sampled
    from coldstart.models.base import Recommender, atomic_write

    run_dir = Path(run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    split = Split.load(run_dir / "split", dataset=load_dataset(saved["dataset"], **saved.get("data", {})))
    model = Recommender.load(run_dir / "model")
    res = evaluate_sampled(model.rank_scores, split, "test", ks=saved.get("ks", [10, 20]),
                           n_negatives=n_negatives, seed=seed, per_user=True, repeats=repeats, negatives=negatives)
    doc = {"model": f"{saved['model']} (sampled: {n_negatives} negatives per user from {negatives}, mean of "
                    f"{repeats} draws)",
           "dataset": saved["dataset"], "protocol": saved["protocol"], "seed": saved.get("seed"),
           "sampled": {"n_negatives": n_negatives, "repeats": repeats, "seed": seed, "per": "user",
                       "negatives": negatives},
           "test": res.metrics, "test_users": res.n_users}
    name = "sampled.json" if negatives == "all" else f"sampled-{negatives}.json"
    atomic_write(run_dir / name, (json.dumps(doc, indent=1) + "\n").encode())
    return doc


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise DataError(f"expected comma-separated integers, got {text!r}", field="--seeds") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise DataError(f"expected distinct seeds >= 0, got {text!r}", field="--seeds")
    return seeds


def say_dim(message: str) -> None:
    console.print(f"[dim]{message}[/dim]", highlight=False)


@app.command()
def compare(
    dataset: str = typer.Option(..., help="Dataset name or folder."),
    models: str = typer.Option(..., help="Models, comma-separated; clcrec_gcn is CLCRec with the LightGCN encoder."),
    protocol: str = typer.Option("cold_item", help="cold_item, cold_item_only, cold_user or published."),
    seeds: str = typer.Option("1,2,3,4,5", help="Seeds, comma-separated (each: split and model, or only the model "
                                                 "with --split-seed)."),
    split_seed: Optional[int] = typer.Option(None, min=0, help="One split for every seed (the seeds then vary only "
                                                               "the initialisation); needed with --tuned."),
    output: Path = typer.Option(..., help="Study folder (runs/, table2.*, table3.*); rerun to resume."),
    set_: list[str] = typer.Option([], "--set", help="key=value for every model that has key, <model>.key=value "
                                                     "for one, split.key=value, data.key=value."),
    tuned: list[Path] = typer.Option([], help="best.json (or its folder) written by `coldstart tune`; repeatable."),
    features: Optional[str] = typer.Option(None, help="Feature presets used as content, comma-separated."),
    k: str = typer.Option("10,20", help="Cut-offs, comma-separated."),
    reference: Optional[str] = typer.Option(None, help="Model compared with the strongest other one "
                                                       "(default clcrec when compared, else the first)."),
    progress: bool = typer.Option(False, help="Per-epoch progress bars."),
    metrics: str = typer.Option("recall,ndcg", help="Metrics of the tables at each cut-off, comma-separated "
                                                    "(recall, ndcg, precision, hit_rate, mrr, map)."),
) -> None:
    """Run every model x seed (finished runs are reused) and write the Table 2 / Table 3 reports."""
    from coldstart.studies.compare import Study, run_study
    from coldstart.studies.report import write_reports
    from coldstart.studies.runs import apply_settings, apply_tuned, parse_variants, split_seeds_of

    sets = parse_sets(set_)
    variants = parse_variants(models)
    for line in apply_tuned(variants, tuned, split_seeds_of(protocol, parse_seeds(seeds), split_seed)):
        say_dim(f"tuned {line}")
    apply_settings(variants, sets["hyper"])  # --set wins over a tuned value
    if reference is not None and reference not in {v.label for v in variants}:
        raise DataError(f"{reference!r} is not among the models compared", field="--reference")
    ks = parse_ks(k)
    names = parse_metric_names(metrics)
    check_settings(dataset, protocol, sets)
    for variant in variants:
        check_hyper(variant.model, variant.hyper)
    on_interrupt(_study_hint)
    study = Study(dataset, protocol, variants, parse_seeds(seeds), data=sets["data"], split=sets["split"], ks=ks,
                  features=parse_presets(features), split_seed=split_seed)
    jobs = run_study(study, output, status=say_dim, progress=progress)
    written = write_reports(jobs, output, ks, reference, names)
    console.print((output / "table2.md").read_text(), markup=False, highlight=False, soft_wrap=True)
    if "table3.md" in written:
        console.print((output / "table3.md").read_text(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {', '.join(str(p) for p in written.values())}")


@app.command()
def sweep(
    dataset: str = typer.Option(..., help="Dataset name or folder."),
    output: Path = typer.Option(..., help="Sweep folder (runs/, sweep.csv, sweep_summary.csv, sweep.png)."),
    model: str = typer.Option("clcrec", help="Model to sweep."),
    param: Optional[str] = typer.Option(None, help="name=v1,v2,... or name=first,second,...,last (a range)."),
    series: Optional[str] = typer.Option(None, help="name=v1,v2: one curve per value (e.g. num_neg=1,128)."),
    figure: Optional[str] = typer.Option(None, help="The paper's ablation: 5 (rho, 1 and 128 negatives, lambda=0), "
                                                    "6 (R-E negatives, 1 U-I negative) or 7 (lambda)."),
    protocol: str = typer.Option("cold_item", help="cold_item, cold_item_only, cold_user or published."),
    seeds: str = typer.Option("1", help="Seeds, comma-separated; error bars are the std over seeds."),
    split_seed: Optional[int] = typer.Option(None, min=0, help="One split for every seed (the seeds then vary only "
                                                               "the initialisation); needed with --tuned."),
    set_: list[str] = typer.Option([], "--set", help="key=value (model), split.key=value, data.key=value."),
    tuned: Optional[Path] = typer.Option(None, help="best.json (or its folder) from `coldstart tune`."),
    features: Optional[str] = typer.Option(None, help="Feature presets used as content, comma-separated."),
    k: str = typer.Option("10,20", help="Cut-offs, comma-separated."),
    metrics: Optional[str] = typer.Option(None, help="Metrics to plot (default recall@<first k>; figure 6 adds ndcg)."),
    phase: str = typer.Option("test", help="Phase plotted: test (as the paper) or valid."),
    progress: bool = typer.Option(False, help="Per-epoch progress bars."),
) -> None:
    """Train one model over a grid of one hyperparameter; plot warm / cold / all curves (Figures 5-7)."""
    from coldstart.studies.plots import plot_sweep
    from coldstart.studies.runs import Variant, apply_tuned, split_seeds_of
    from coldstart.studies.sweep import Sweep, figure_grid, parse_assignment, run_sweep

    sets = parse_sets(set_)
    fixed: dict[str, Any] = {}
    if tuned is not None:
        holder = Variant(model, model)
        for line in apply_tuned([holder], [tuned], split_seeds_of(protocol, parse_seeds(seeds), split_seed)):
            say_dim(f"tuned {line}")
        fixed.update(holder.hyper)
    if figure is not None:
        if param is not None or series is not None:
            raise DataError("--figure sets --param and --series; give one or the other", field="--figure")
        name, values, series_name, series_values, figure_fixed = figure_grid(figure)
        fixed.update(figure_fixed)
    elif param is None:
        raise DataError("give --param name=values or --figure 5|6|7", field="--param")
    else:
        name, values = parse_assignment(param, "--param")
        series_name, series_values = parse_assignment(series, "--series") if series else (None, [None])
    fixed.update(sets["hyper"])
    ks = parse_ks(k)
    plotted = [m.strip() for m in metrics.split(",")] if metrics else (
        [f"recall@{ks[0]}", f"ndcg@{ks[0]}"] if figure == "6" else [f"recall@{ks[0]}"])
    if phase not in ("valid", "test"):
        raise DataError(f"phase must be valid or test, got {phase!r}", field="--phase")
    check_settings(dataset, protocol, sets)
    check_hyper(model, *({**fixed, name: value, **({series_name: s_value} if series_name else {})}
                         for value in values for s_value in series_values))
    on_interrupt(_study_hint)
    spec_sweep = Sweep(dataset, model, name, values, parse_seeds(seeds), protocol, series_name, series_values,
                       fixed, sets["data"], sets["split"], ks, parse_presets(features), split_seed)
    summary = run_sweep(spec_sweep, output, status=say_dim, progress=progress)
    known = set(summary["metric"])
    missing = [m for m in plotted if m not in known]
    if missing:
        raise DataError(f"no metric {missing[0]!r} in the runs (have {', '.join(sorted(known))})", field="--metrics")
    title = f"{model} on {dataset} ({protocol}): {name}" + (f", per {series_name}" if series_name else "")
    png = plot_sweep(summary, name, series_name, plotted, phase, output / "sweep.png", title)
    table = Table(title=f"{phase} {', '.join(plotted)} (mean over seeds)")
    for col in ([series_name] if series_name else []) + [name, "scenario", *plotted]:
        table.add_column(col)
    wide = summary[summary["phase"] == phase].pivot_table(
        index=[c for c in (series_name, "value", "scenario") if c], columns="metric", values="mean").reset_index()
    for _, row in wide.iterrows():
        table.add_row(*(str(row[c]) for c in ([series_name] if series_name else []) + ["value", "scenario"]),
                      *(f"{row[m]:.4f}" for m in plotted))
    console.print(table)
    console.print(f"wrote {output / 'sweep.csv'}, {output / 'sweep_summary.csv'}, {png}")


@app.command()
def tune(
    dataset: str = typer.Option(..., help="Dataset name or folder."),
    model: str = typer.Option(..., help="Model (or clcrec_gcn) to tune."),
    output: Path = typer.Option(..., help="Tuning folder (trials/, trials.csv, best.json, tune.png); rerun to resume."),
    protocol: str = typer.Option("cold_item", help="cold_item, cold_item_only, cold_user or published."),
    seed: int = typer.Option(1, min=0, help="Seed of the model during tuning, and of the split unless --split-seed."),
    split_seed: Optional[int] = typer.Option(None, min=0, help="Seed of the split (default: --seed); `compare "
                                                               "--tuned` needs the same --split-seed."),
    space: list[str] = typer.Option([], help="name=v1,v2,... replacing the model's search space for that name "
                                             "(repeatable); default: the paper's l_r x reg_weight grid."),
    objective: str = typer.Option("all:recall@20", help="Validation scenario:metric to maximise."),
    sampler: str = typer.Option("grid", help="grid (every point, in a seeded order) or tpe."),
    trials: Optional[int] = typer.Option(None, help="Most trials (default: the grid's size)."),
    set_: list[str] = typer.Option([], "--set", help="key=value (model, fixed), split.key=value, data.key=value."),
    features: Optional[str] = typer.Option(None, help="Feature presets used as content, comma-separated."),
    k: str = typer.Option("10,20", help="Cut-offs, comma-separated."),
    progress: bool = typer.Option(False, help="Per-epoch progress bars."),
    storage: Optional[str] = typer.Option(None, help="SQLAlchemy URL of a shared Optuna study (sqlite:///study.db, "
                                                     "postgresql://host/db): workers here and on other machines "
                                                     "share its trials. Default: in memory, or OUTPUT/study.db with "
                                                     "--workers > 1."),
    workers: int = typer.Option(1, min=1, help="Local worker processes running trials at once (a shared study)."),
) -> None:
    """Search hyperparameters with Optuna on the validation split (test is never evaluated); save the best."""
    from coldstart.models import MODELS
    from coldstart.studies.runs import apply_settings, parse_variants
    from coldstart.studies.sweep import parse_assignment
    from coldstart.studies.tune import Tuning, run_tuning

    sets = parse_sets(set_)
    variants = parse_variants(model)
    if len(variants) != 1:
        raise DataError("tune one model at a time", field="--model")
    variant = variants[0]
    apply_settings(variants, sets["hyper"])
    searched = dict(MODELS[variant.model].search_space)
    for item in space:
        name, values = parse_assignment(item, "--space")
        searched[name] = values
    for name in searched:
        if name in variant.hyper and name in sets["hyper"]:
            raise DataError(f"{name} is searched; drop --set {name} or give --space {name}=<values>", field=name)
        variant.hyper.pop(name, None)  # a variant's own value (e.g. clcrec_gcn's encoder) yields to the search
    check_settings(dataset, protocol, sets)
    check_hyper(variant.model, variant.hyper, *({**variant.hyper, name: value}
                                                for name, values in searched.items() for value in values))
    on_interrupt(_study_hint)
    tuning = Tuning(dataset, variant, searched, protocol, seed, objective, sampler, trials, sets["data"],
                    sets["split"], parse_ks(k), parse_presets(features), split_seed, storage=storage, workers=workers)
    best = run_tuning(tuning, output, status=say_dim, progress=progress)
    console.print(f"best valid {objective}: {best['value']:.4f} with "
                  + ", ".join(f"{k}={v}" for k, v in best["params"].items() if k in searched), highlight=False)
    same_split = "" if best["split_seed"] is None else f"--split-seed {best['split_seed']} "
    console.print(f"wrote {output / 'best.json'} (use: coldstart compare ... {same_split}--tuned {output})",
                  highlight=False)


def writable_parent(path: Path) -> None:
    """Create the folder of an output file, or raise DataError with the operating system's reason."""
    for folder in [path.parent, *path.parent.parents]:
        if folder.exists():
            if not folder.is_dir():
                raise DataError("not a directory", path=folder)
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the folder ({exc.strerror or exc})", path=path.parent) from exc
    try:  # a real probe: permission bits say nothing for root, /proc or a read-only mount
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise DataError(f"cannot write here ({exc.strerror or exc})", path=path.parent) from exc


def read_recommendations(path: Path) -> pd.DataFrame:
    """A recommendations CSV read by its header names (user, item, score in any order; other columns ignored).

    Returns:
        user and item as strings (raw ids), score as float64; row i is on line i + 2 of the file.

    Raises:
        DataError: naming the file (and line): missing, no such column, a malformed row, a score that is no number.
    """
    import pandas as pd

    from coldstart.data.readers import require_file

    require_file(path)
    try:
        # Blank lines are kept (and fail below) so that row i stays on line i + 2 in the messages.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], skip_blank_lines=False,
                            engine="c")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"malformed CSV ({str(exc).strip()})", path=path) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in ("user", "item", "score"):
        if column not in frame.columns:
            raise DataError(f"no column {column!r} in the header (found: {', '.join(frame.columns)}); "
                            "expected a header naming user, item and score", path=path, line=1)
    frame = frame[["user", "item", "score"]].fillna("")  # rows with fewer fields than the header
    score = pd.to_numeric(frame["score"].str.strip(), errors="coerce")
    if score.isna().any():
        row = int(score.isna().to_numpy().argmax())
        raise DataError(f"expected a number, got {frame['score'].iloc[row]!r}", path=path, line=row + 2,
                        field="score")
    return frame.assign(score=score.astype("float64"))


@app.command()
def evaluate(
    split_dir: Path = typer.Option(..., "--split", help="A split folder (e.g. RUN/split)."),
    recommendations: Path = typer.Option(..., help="CSV whose header names user, item and score (raw ids; any "
                                                   "column order, other columns ignored)."),
    phase: str = typer.Option("test", help="valid or test."),
    scenario: str = typer.Option("all", help="warm, cold, all, or a comma-separated list."),
    k: str = typer.Option("10,20", help="Cut-offs, comma-separated."),
    output: Optional[Path] = typer.Option(None, help="Write the metrics JSON here."),
) -> None:
    """Evaluate recommendations computed anywhere against a saved split."""

    from coldstart.data.splits import Split
    from coldstart.eval.evaluate import evaluate_scores, scores_from_recommendations
    from coldstart.models.base import atomic_write

    if output:  # fail before the work, not after it
        writable_parent(output)
    sp = Split.load(split_dir)
    recs = read_recommendations(recommendations)
    score_fn = scores_from_recommendations(recs, sp, source=str(recommendations))
    scenarios = [s.strip() for s in scenario.split(",") if s.strip()]
    res = evaluate_scores(score_fn, sp, phase, scenarios=scenarios, ks=parse_ks(k))
    doc = {"recommendations": str(recommendations), "split": str(split_dir), "protocol": sp.protocol,
           "seed": sp.seed, phase: res.metrics, f"{phase}_users": res.n_users}
    print_metrics(doc, phase)
    if output:
        try:
            atomic_write(output, (json.dumps(doc, indent=1) + "\n").encode())
        except OSError as exc:  # the error names atomic_write's temporary file: name the one asked for
            raise DataError(f"cannot write ({exc.strerror or exc})", path=output) from exc
        console.print(f"wrote {output}")


@app.command()
def serve(
    run_dir: Path = typer.Argument(..., help="A finished run directory (e.g. runs/demo)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (the default is this machine only)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    index: str = typer.Option("exact", help="Item index: exact, ivf or hnsw (docs/serving.md: recall and latency)."),
    api_key_file: Optional[Path] = typer.Option(None, help="File whose first line is the API key for writes "
                                                            "(default: $COLDSTART_API_KEY; none: writes refused)."),
    protect_reads: bool = typer.Option(False, help="Require the API key on read endpoints too."),
    db: Optional[Path] = typer.Option(None, help="SQLite file of items, users and interactions added at run time "
                                                 "(default RUN_DIR/serve/serve.db)."),
) -> None:
    """Serve a run over HTTP: recommendations, new items and users without retraining, a web page at /."""
    if index not in ("exact", "ivf", "hnsw"):
        raise DataError(f"unknown index {index!r} (use exact, ivf or hnsw)", field="--index")
    from coldstart.features.extras import require

    require("fastapi", "serve", "coldstart serve")
    uvicorn = require("uvicorn", "serve", "coldstart serve")
    require("faiss", "serve", "coldstart serve")
    from coldstart_serve.app import create_app
    from coldstart_serve.security import read_key

    key = read_key(api_key_file)
    console.print(f"loading {run_dir} ({index} index)")
    application = create_app(run_dir, index=index, db=db, api_key=key, protect_reads=protect_reads)
    if key is None:
        console.print("[yellow]no API key configured: writes are refused (set COLDSTART_API_KEY or "
                      "--api-key-file)[/yellow]")
    console.print(f"serving on http://{host}:{port}/ (API docs at /docs)")
    uvicorn.run(application, host=host, port=port, log_level="warning")


def _click_types(name: str) -> tuple[type, ...]:
    """`name` from every click exception hierarchy present: typer >= 0.16 bundles its own click (typer._click),
    older typer raises the real click's exceptions, and the two are unrelated classes."""
    import importlib

    found = []
    for module in ("typer._click.exceptions", "typer.exceptions", "click.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _plain_interrupt() -> str:
    return "interrupted"


#: The command line main() was given (without the program name): `run --nproc N` hands it to its N processes.
_argv: list[str] = []

#: What to print on Ctrl-C; `run`, `compare`, `sweep` and `tune` replace it with how to resume.
_interrupt_hint: Callable[[], str] = _plain_interrupt


def on_interrupt(hint: Callable[[], str]) -> None:
    """Set the line printed (to stderr, exit 130) if Ctrl-C stops the command from now on."""
    global _interrupt_hint
    _interrupt_hint = hint


def resume_hint(folder: Path) -> Callable[[], str]:
    """How to continue the run in `folder`, decided when the interrupt comes (resumable once config.json exists)."""
    def hint() -> str:
        if (folder / "config.json").exists():
            return f"interrupted; resume with coldstart run --resume {folder}"
        return f"interrupted before {folder} held a resumable run; rerun the same command"
    return hint


def _study_hint() -> str:
    return "interrupted; rerun the same command to resume"


def _interrupted() -> None:
    print(_interrupt_hint(), file=sys.stderr)
    sys.exit(130)


def _usage_error(exc: Exception) -> None:
    """Click's message and usage line, without a traceback; exit 2 (no arguments at all: the help, exit 0)."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # `coldstart` alone means --help
        print(ctx.get_help())
        sys.exit(0)
    print(f"error: {exc.format_message()}", file=sys.stderr)
    if ctx is not None:
        print(f"{ctx.get_usage()}\nTry '{ctx.command_path} --help' for help.", file=sys.stderr)
    sys.exit(2)


def main(args: list[str] | None = None) -> None:
    """Entry point: exit 0 when done, 2 on bad input or usage (one `error: ...` line), 130 on Ctrl-C.

    Args:
        args: the command line without the program name (default: sys.argv[1:]).
    """
    global _argv
    _argv = list(sys.argv[1:] if args is None else args)
    on_interrupt(_plain_interrupt)  # until a command knows better
    try:
        # standalone_mode=False hands exceptions to us; typer then turns Ctrl-C into the exit code 130 it
        # returns (older click raises Abort instead), and any other exit code too.
        code = app(args=args, prog_name="coldstart", standalone_mode=False)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # outside click's handler, e.g. while importing
        _interrupted()
    except OSError as exc:  # permission denied, read-only file system, not a directory, disk full, ...
        where = ": ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        print(f"error: {where + ': ' if where else ''}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        if isinstance(exc, _click_types("ClickException")):
            _usage_error(exc)
        if isinstance(exc, _click_types("Abort")):
            if isinstance(exc.__context__, KeyboardInterrupt):
                _interrupted()
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        raise
    if code == 130:
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
