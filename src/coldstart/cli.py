"""The `coldstart` command line: datasets, features, split, run, evaluate. Thin wrappers over the Python API.

Bad input ends with a one-line `error: ...` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from coldstart.errors import DataError

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


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise DataError(f"expected comma-separated integers, got {text!r}", field="--k") from None
    if not ks or min(ks) < 1:
        raise DataError(f"cut-offs must be positive integers, got {text!r}", field="--k")
    return ks


def read_config_file(path: Path) -> dict[str, Any]:
    """A JSON or TOML file with optional sections model / split / data and key ks."""
    if not path.exists():
        raise DataError("config file not found", path=path)
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(path.read_text())
        return json.loads(path.read_text())
    except (ValueError, ImportError) as exc:
        raise DataError(f"cannot parse config ({exc})", path=path) from exc


def print_metrics(metrics: dict, phase: str = "test") -> None:
    """The warm / cold / all table of one phase."""
    block = metrics.get(phase, {})
    if not block:
        console.print(f"no {phase} metrics")
        return
    keys = list(next(iter(block.values())).keys())
    table = Table(title=f"{metrics.get('model', '')} on {metrics.get('dataset', '')} "
                        f"({metrics.get('protocol', '')}), {phase}")
    table.add_column("metric")
    for scenario in block:
        users = metrics.get(f"{phase}_users", {}).get(scenario)
        table.add_column(scenario if users is None else f"{scenario} ({users} users)", justify="right")
    for key in keys:
        table.add_row(key, *(f"{block[s][key]:.4f}" for s in block))
    console.print(table)


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
            content = f"{', '.join(ds.item_features) or '-'}; {', '.join(ds.user_features) or '-'}"
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
    seed: int = typer.Option(0, help="Split seed, for presets built from training interactions."),
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


@app.command()
def split(
    dataset: str = typer.Option(..., help="Dataset name or folder."),
    protocol: str = typer.Option("cold_item", help="cold_item, cold_item_only, cold_user or published."),
    seed: int = typer.Option(0, help="Random seed."),
    set_: list[str] = typer.Option([], "--set", help="split.<param>=value or data.<option>=value."),
    output: Path = typer.Option(..., help="Folder to write the split into."),
) -> None:
    """Split a dataset and save the split (train/valid/test.csv + meta.json)."""
    from coldstart.data.loaders import load_dataset
    from coldstart.data.splits import make_split

    sets = parse_sets(set_)
    if sets["hyper"]:
        raise DataError(f"unknown setting {next(iter(sets['hyper']))!r} (use split.<param> or data.<option>)", field="--set")
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
    seed: int = typer.Option(0, help="Random seed (split and model)."),
    k: str = typer.Option("10,20", help="Cut-offs, comma-separated."),
    output: Optional[Path] = typer.Option(None, help="Run directory."),
    overwrite: bool = typer.Option(False, help="Replace an existing run directory."),
    resume: Optional[Path] = typer.Option(None, help="Continue the interrupted run in this directory "
                                                     "(every other option comes from its config.json)."),
    features: Optional[str] = typer.Option(None, help="Feature presets to build (or read from the cache) and use "
                                                      "as the content, comma-separated (see `coldstart features`)."),
    progress: bool = typer.Option(True, help="Progress bars while training."),
) -> None:
    """Train and evaluate one model; write a run directory and print the warm / cold / all table."""
    from coldstart import experiments
    from coldstart.experiments import RunConfig

    def say(message: str) -> None:
        console.print(f"[dim]{message}[/dim]")

    if resume is not None:
        metrics = experiments.resume(resume, status=say, progress=progress)
        output = resume
    else:
        for name, value in (("--dataset", dataset), ("--model", model), ("--output", output)):
            if value is None:
                raise DataError(f"missing option {name} (or pass --resume RUN_DIR)", field=name)
        file_cfg = read_config_file(config) if config else {}
        sets = parse_sets(set_)
        cfg = RunConfig(
            dataset=dataset, model=model, protocol=protocol, seed=seed,
            data={**file_cfg.get("data", {}), **sets["data"]},
            split={**file_cfg.get("split", {}), **sets["split"]},
            hyper={**file_cfg.get("model", {}), **sets["hyper"]},
            ks=parse_ks(k) if k else file_cfg.get("ks", [10, 20]),
            features=parse_presets(features) or list(file_cfg.get("features", [])),
        )
        metrics = experiments.run(cfg, output, overwrite=overwrite, status=say, progress=progress)
    print_metrics(metrics, "test")
    if metrics.get("best_epoch") is not None:
        console.print(f"best epoch (validation recall): {metrics['best_epoch']}")
    if "note" in metrics:
        console.print(f"note: {metrics['note']}")
    console.print(f"run directory: {output}")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise DataError(f"expected comma-separated integers, got {text!r}", field="--seeds") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise DataError(f"expected distinct seeds, got {text!r}", field="--seeds")
    return seeds


def say_dim(message: str) -> None:
    console.print(f"[dim]{message}[/dim]", highlight=False)


@app.command()
def compare(
    dataset: str = typer.Option(..., help="Dataset name or folder."),
    models: str = typer.Option(..., help="Models, comma-separated; clcrec_gcn is CLCRec with the LightGCN encoder."),
    protocol: str = typer.Option("cold_item", help="cold_item, cold_item_only, cold_user or published."),
    seeds: str = typer.Option("1,2,3,4,5", help="Seeds, comma-separated (each: split and model)."),
    output: Path = typer.Option(..., help="Study folder (runs/, table2.*, table3.*); rerun to resume."),
    set_: list[str] = typer.Option([], "--set", help="key=value for every model that has key, <model>.key=value "
                                                     "for one, split.key=value, data.key=value."),
    tuned: list[Path] = typer.Option([], help="best.json (or its folder) written by `coldstart tune`; repeatable."),
    features: Optional[str] = typer.Option(None, help="Feature presets used as content, comma-separated."),
    k: str = typer.Option("10,20", help="Cut-offs, comma-separated."),
    reference: Optional[str] = typer.Option(None, help="Model compared with the strongest other one "
                                                       "(default clcrec when compared, else the first)."),
    progress: bool = typer.Option(False, help="Per-epoch progress bars."),
) -> None:
    """Run every model x seed (finished runs are reused) and write the Table 2 / Table 3 reports."""
    from coldstart.studies.compare import Study, run_study
    from coldstart.studies.report import write_reports
    from coldstart.studies.runs import apply_settings, apply_tuned, parse_variants

    sets = parse_sets(set_)
    variants = parse_variants(models)
    for line in apply_tuned(variants, tuned):
        say_dim(f"tuned {line}")
    apply_settings(variants, sets["hyper"])  # --set wins over a tuned value
    if reference is not None and reference not in {v.label for v in variants}:
        raise DataError(f"{reference!r} is not among the models compared", field="--reference")
    ks = parse_ks(k)
    study = Study(dataset, protocol, variants, parse_seeds(seeds), data=sets["data"], split=sets["split"], ks=ks,
                  features=parse_presets(features))
    jobs = run_study(study, output, status=say_dim, progress=progress)
    written = write_reports(jobs, output, ks, reference)
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
    from coldstart.studies.runs import Variant, apply_tuned
    from coldstart.studies.sweep import Sweep, figure_grid, parse_assignment, run_sweep

    sets = parse_sets(set_)
    fixed: dict[str, Any] = {}
    if tuned is not None:
        holder = Variant(model, model)
        for line in apply_tuned([holder], [tuned]):
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
    spec_sweep = Sweep(dataset, model, name, values, parse_seeds(seeds), protocol, series_name, series_values,
                       fixed, sets["data"], sets["split"], ks, parse_presets(features))
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
    seed: int = typer.Option(1, help="Seed of the split and the model during tuning."),
    space: list[str] = typer.Option([], help="name=v1,v2,... replacing the model's search space for that name "
                                             "(repeatable); default: the paper's l_r x reg_weight grid."),
    objective: str = typer.Option("all:recall@20", help="Validation scenario:metric to maximise."),
    sampler: str = typer.Option("grid", help="grid (every point, in a seeded order) or tpe."),
    trials: Optional[int] = typer.Option(None, help="Most trials (default: the grid's size)."),
    set_: list[str] = typer.Option([], "--set", help="key=value (model, fixed), split.key=value, data.key=value."),
    features: Optional[str] = typer.Option(None, help="Feature presets used as content, comma-separated."),
    k: str = typer.Option("10,20", help="Cut-offs, comma-separated."),
    progress: bool = typer.Option(False, help="Per-epoch progress bars."),
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
    tuning = Tuning(dataset, variant, searched, protocol, seed, objective, sampler, trials, sets["data"],
                    sets["split"], parse_ks(k), parse_presets(features))
    best = run_tuning(tuning, output, status=say_dim, progress=progress)
    console.print(f"best valid {objective}: {best['value']:.4f} with "
                  + ", ".join(f"{k}={v}" for k, v in best["params"].items() if k in searched), highlight=False)
    console.print(f"wrote {output / 'best.json'} (use: coldstart compare ... --tuned {output})", highlight=False)


@app.command()
def evaluate(
    split_dir: Path = typer.Option(..., "--split", help="A split folder (e.g. RUN/split)."),
    recommendations: Path = typer.Option(..., help="CSV with header user,item,score (raw ids)."),
    phase: str = typer.Option("test", help="valid or test."),
    scenario: str = typer.Option("all", help="warm, cold, all, or a comma-separated list."),
    k: str = typer.Option("10,20", help="Cut-offs, comma-separated."),
    output: Optional[Path] = typer.Option(None, help="Write the metrics JSON here."),
) -> None:
    """Evaluate recommendations computed anywhere against a saved split."""

    from coldstart.data.readers import read_table
    from coldstart.data.splits import Split
    from coldstart.eval.evaluate import evaluate_scores, scores_from_recommendations
    from coldstart.models.base import atomic_write

    sp = Split.load(split_dir)
    recs = read_table(recommendations, ["user", "item", "score"], header=True, numeric=("score",))
    score_fn = scores_from_recommendations(recs, sp, source=str(recommendations))
    scenarios = [s.strip() for s in scenario.split(",") if s.strip()]
    res = evaluate_scores(score_fn, sp, phase, scenarios=scenarios, ks=parse_ks(k))
    doc = {"split": str(split_dir), "protocol": sp.protocol, "seed": sp.seed, phase: res.metrics,
           f"{phase}_users": res.n_users}
    print_metrics(doc, phase)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(output, (json.dumps(doc, indent=1) + "\n").encode())
        console.print(f"wrote {output}")


def main() -> None:
    """Entry point: run the app; DataError -> one line on stderr, exit 2."""
    try:
        app(standalone_mode=False)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as exc:
        print(f"error: {exc.filename}: file not found", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click usage errors in standalone_mode=False
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
