"""The command line always ends cleanly: exit 0 done, 2 bad input or usage (one `error:` line, no traceback),
130 on Ctrl-C with how to resume; wrong-typed settings fail before any folder exists; `evaluate` reads its CSV
by header names.

Most cases call `cli.main(args)` in-process (fast); the Ctrl-C case and one usage error run a real process.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coldstart import cli
from coldstart.data.loaders import load_dataset
from coldstart.data.splits import make_split
from coldstart.errors import DataError
from coldstart.models import MODELS
from coldstart.settings import check_data, check_split, check_values, conforms


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """A console wide enough that table cells and titles are not wrapped (the tests search the text)."""
    from rich.console import Console

    monkeypatch.setattr(cli, "console", Console(width=400))


def call(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `coldstart ARGS` run in-process through main()."""
    argv, sys.argv = sys.argv, ["coldstart", *args]  # through sys.argv, exactly as the entry point
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    first = err.strip().splitlines()[0]
    assert first.startswith("error: "), err
    for fragment in fragments:
        assert fragment in first, (fragment, first)


# -- item 11: Ctrl-C ---------------------------------------------------------------------------------------

def default_sigint() -> None:
    """Give the child the default SIGINT action: a shell starts background jobs (`make test &`, a CI script run
    in the background) with SIGINT ignored, and Python then never installs its KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_on_a_training_run_exits_130_with_the_resume_command(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "coldstart.cli", "run", "--dataset", "synthetic", "--model",
                             "mf_bpr", "--set", "num_epoch=1000", "--set", "patience=1000", "--output", str(out),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=default_sigint)
    deadline = time.time() + 120
    while not (out / "checkpoint").is_dir() or not any((out / "checkpoint").iterdir()):
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == f"interrupted; resume with coldstart run --resume {out}"
    assert "Traceback" not in err and not (out / "metrics.json").exists()


@pytest.mark.parametrize("command,target", [
    (["compare", "--models", "pop"], "coldstart.studies.compare.run_study"),
    (["sweep", "--model", "mf_bpr", "--param", "dim_E=4,8"], "coldstart.studies.sweep.run_sweep"),
    (["tune", "--model", "mf_bpr"], "coldstart.studies.tune.run_tuning"),
])
def test_ctrl_c_in_a_study_says_rerun(capsys, monkeypatch, tmp_path, command, target):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    code, _, err = call(capsys, *command, "--dataset", "synthetic", "--output", str(tmp_path / "s"))
    assert code == 130 and err.strip() == "interrupted; rerun the same command to resume"


def test_ctrl_c_before_the_run_directory_is_resumable_says_rerun(capsys, monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("coldstart.experiments.run", interrupted)
    code, _, err = call(capsys, "run", "--dataset", "synthetic", "--model", "pop", "--output", str(tmp_path / "r"))
    assert code == 130 and "rerun the same command" in err and "--resume" not in err


def test_abort_from_an_older_click_counts_as_interrupt(capsys, monkeypatch):
    """typer < 0.16 re-raises click's Abort (caused by KeyboardInterrupt) in standalone_mode=False."""
    abort = cli._click_types("Abort")[0]

    def fake_app(**kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise abort() from exc

    monkeypatch.setattr(cli, "app", fake_app)
    code, _, err = call(capsys, "run")
    assert code == 130 and err.strip() == "interrupted"


# -- item 12: usage errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args,fragment", [
    (["--bogus"], "No such option: --bogus"),
    (["bogus"], "No such command 'bogus'"),
    (["run", "--bogus", "1"], "No such option: --bogus"),
    (["split", "--dataset", "synthetic"], "Missing option '--output'"),
    (["run", "--seed", "x"], "'--seed'"),
    (["run", "--dataset", "synthetic", "--model", "pop", "--output", "o", "--seed", "-1"], "'--seed'"),
    (["compare", "--dataset", "synthetic", "--models", "pop", "--output", "o", "--seeds", "-1"], "seeds"),
])
def test_usage_errors_are_one_error_line_and_exit_2(capsys, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    code, _, err = call(capsys, *args)
    assert_one_error_line(code, err, fragment)
    assert len(err.strip().splitlines()) <= 3  # the error, then click's usage line and where to get help
    assert not (tmp_path / "o").exists()


def test_usage_error_in_a_real_process_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "coldstart.cli", "run", "--no-such-flag"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: No such option: --no-such-flag")
    assert "Traceback" not in proc.stderr


def test_no_arguments_prints_the_help_and_exits_0(capsys):
    code, out, err = call(capsys)
    assert code == 0 and "Usage: coldstart" in out and "evaluate" in out and not err


# -- item 13: typed settings, checked before any folder is created ------------------------------------------

@pytest.mark.parametrize("extra,fragments", [
    (["--set", "num_epoch=abc"], ["field 'num_epoch'", "expected an integer", '"abc"']),
    (["--set", "num_epoch=2.5"], ["field 'num_epoch'", "expected an integer", "2.5"]),
    (["--set", "dim_E=1.5"], ["field 'dim_E'", "expected an integer"]),
    (["--set", "has_v=1"], ["field 'has_v'", "true or false"]),
    (["--set", "split.cold_fraction=abc"], ["field 'split.cold_fraction'", "expected a number"]),
    (["--set", "split.warm_ratios=[1,2]"], ["field 'split.warm_ratios'", "a list of 3 numbers"]),
    (["--set", "split.bogus=1"], ["field 'split.bogus'", "unknown setting"]),
    (["--set", "data.bogus=1"], ["field 'data.bogus'", "unknown setting for dataset synthetic"]),
    (["--set", "data.n_users=2.5"], ["field 'data.n_users'", "expected an integer"]),
    (["--protocol", "nope"], ["unknown protocol 'nope'"]),
])
def test_wrong_typed_settings_fail_before_any_folder(capsys, tmp_path, extra, fragments):
    model = "clcrec" if "has_v" in extra[-1] else "mf_bpr"
    out = tmp_path / "run"
    code, _, err = call(capsys, "run", "--dataset", "synthetic", "--model", model, "--output", str(out), *extra)
    assert_one_error_line(code, err, *fragments)
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("name,text,fragments", [
    ("list.json", "[1, 2]", ["list.json", "expected an object"]),
    ("typo.json", '{"modle": {"dim_E": 8}}', ["typo.json", "field 'modle'", "unknown key"]),
    ("hyper.json", '{"model": {"num_epoch": 2.5}}', ["hyper.json", "field 'num_epoch'", "expected an integer"]),
    ("split.toml", '[split]\ncold_fraction = "abc"\n', ["split.toml", "field 'split.cold_fraction'"]),
    ("section.json", '{"data": [1]}', ["section.json", "field 'data'", "expected an object"]),
    ("ks.json", '{"ks": [0]}', ["ks.json", "field 'ks'"]),
])
def test_bad_config_files_name_the_file(capsys, tmp_path, name, text, fragments):
    (tmp_path / name).write_text(text)
    out = tmp_path / "run"
    code, _, err = call(capsys, "run", "--dataset", "synthetic", "--model", "mf_bpr", "--output", str(out),
                        "--config", str(tmp_path / name))
    assert_one_error_line(code, err, *fragments)
    assert not out.exists()


def test_config_file_ks_are_used_when_k_is_not_given(capsys, tmp_path):
    (tmp_path / "c.json").write_text('{"ks": [5]}')
    code, _, err = call(capsys, "run", "--dataset", "synthetic", "--model", "pop", "--output", str(tmp_path / "r"),
                        "--config", str(tmp_path / "c.json"))
    assert code == 0, err
    assert set(json.loads((tmp_path / "r" / "metrics.json").read_text())["test"]["all"]) >= {"recall@5"}


@pytest.mark.parametrize("command", [
    ["compare", "--models", "pop,mf_bpr", "--set", "num_epoch=abc"],
    ["compare", "--models", "pop", "--set", "split.cold_fraction=abc"],
    ["sweep", "--model", "mf_bpr", "--param", "dim_E=8,1.5"],
    ["tune", "--model", "mf_bpr", "--space", "dim_E=a,8"],
    ["tune", "--model", "mf_bpr", "--set", "data.bogus=1"],
])
def test_studies_check_settings_before_creating_their_folder(capsys, tmp_path, command):
    out = tmp_path / "study"
    code, _, err = call(capsys, *command, "--dataset", "synthetic", "--output", str(out))
    assert_one_error_line(code, err)
    assert not out.exists()


def test_type_rules():
    assert conforms(3, int) and not conforms(True, int) and not conforms(2.0, int) and not conforms("3", int)
    assert conforms(np.int64(3), int) and conforms(3, float) and conforms(0.5, float)
    assert not conforms(True, float) and not conforms(float("nan"), float) and not conforms("0.5", float)
    assert conforms(None, int | None) and not conforms(None, int)
    assert conforms([1, 0.5, 2], tuple[float, float, float]) and not conforms([1, 2], tuple[float, float, float])
    assert conforms(["a"], tuple[str, ...]) and not conforms("a", tuple[str, ...]) and conforms([], list[str])
    assert conforms(True, bool) and not conforms(1, bool)


def test_model_config_types_are_checked_on_construction():
    with pytest.raises(DataError, match="field 'num_neg_re': expected an integer or null"):
        MODELS["clcrec"](num_neg_re="many")
    with pytest.raises(DataError, match="field 'modalities': expected a list of strings or null"):
        MODELS["clcrec"](modalities="t")
    assert MODELS["clcrec"](num_neg_re=None, modalities=["t"], l_r=1).config.l_r == 1


def test_split_and_data_checks_follow_the_signatures(tmp_path):
    check_split("cold_user", {"test_fraction": 0.3})
    check_data("ml-100k", {"min_rating": None, "download": False})
    with pytest.raises(DataError, match="field 'split.ratios': expected a list of 3 numbers"):
        check_split("cold_item_only", {"ratios": [0.8, 0.2]})
    with pytest.raises(DataError, match="field 'data.on_duplicate': unknown setting for dataset"):
        check_data("ml-100k", {"on_duplicate": "drop"})  # the MovieLens loader has no such option
    (tmp_path / "d").mkdir()
    check_data(str(tmp_path / "d"), {"on_duplicate": "drop"})  # a folder: the tabular loader's options
    with pytest.raises(DataError, match="unknown dataset"):
        check_data("no-such-dataset", {})
    with pytest.raises(DataError, match="expected an object"):
        check_values([1], MODELS["pop"].Config, "pop")


# -- item 15: evaluate reads by header names ----------------------------------------------------------------

@pytest.fixture()
def split_and_recs(tmp_path):
    ds = load_dataset("synthetic", n_users=60, n_items=80, mean_interactions=10, seed=2)
    folder = tmp_path / "split"
    make_split(ds, "cold_item", seed=1).save(folder)
    test = pd.read_csv(folder / "test.csv", dtype=str)
    train = pd.read_csv(folder / "train.csv", dtype=str)
    users, items = sorted(set(test["user"])), sorted(set(train["item"]) | set(test["item"]))
    grid = pd.DataFrame([(u, i) for u in users for i in items], columns=["user", "item"])
    grid["score"] = np.random.default_rng(0).permutation(len(grid)).astype(np.float64)
    return folder, grid


def test_evaluate_reads_columns_by_header_name(capsys, tmp_path, split_and_recs):
    folder, grid = split_and_recs
    grid.to_csv(tmp_path / "a.csv", index=False)
    grid[["item", "user", "score"]].to_csv(tmp_path / "c.csv", index=False)  # read by position: silently wrong
    grid.assign(model="x")[["item", "model", "score", "user"]].to_csv(tmp_path / "b.csv", index=False)
    got = []
    for name in ("a", "c", "b"):
        code, out, err = call(capsys, "evaluate", "--split", str(folder), "--recommendations",
                              str(tmp_path / f"{name}.csv"), "--scenario", "warm,cold,all",
                              "--output", str(tmp_path / f"{name}.json"))
        assert code == 0, err
        got.append(json.loads((tmp_path / f"{name}.json").read_text())["test"])
    assert got[0] == got[1] == got[2] and got[0]["all"]["recall@20"] > 0
    title = f"{tmp_path / 'b.csv'} on split {folder} (cold_item, seed 1), test"  # says what was evaluated
    assert title in out


def test_evaluate_without_the_header_names_is_an_error(capsys, tmp_path, split_and_recs):
    folder, grid = split_and_recs
    grid.rename(columns={"score": "rating"}).to_csv(tmp_path / "r.csv", index=False)
    code, _, err = call(capsys, "evaluate", "--split", str(folder), "--recommendations", str(tmp_path / "r.csv"))
    assert_one_error_line(code, err, "r.csv:1", "no column 'score'")
    grid.to_csv(tmp_path / "h.csv", index=False, header=False)  # no header at all
    code, _, err = call(capsys, "evaluate", "--split", str(folder), "--recommendations", str(tmp_path / "h.csv"))
    assert_one_error_line(code, err, "h.csv:1", "no column 'user'")
    grid.astype({"score": str}).assign(score=lambda f: f["score"].where(f.index != 3, "high")).to_csv(
        tmp_path / "s.csv", index=False)
    code, _, err = call(capsys, "evaluate", "--split", str(folder), "--recommendations", str(tmp_path / "s.csv"))
    assert_one_error_line(code, err, "s.csv:5", "field 'score'", "'high'")


# -- item 19 and the notes ----------------------------------------------------------------------------------

def test_output_that_cannot_be_written_gives_the_reason(capsys, tmp_path, split_and_recs):
    folder, grid = split_and_recs
    grid.to_csv(tmp_path / "a.csv", index=False)
    base = ["evaluate", "--split", str(folder), "--recommendations", str(tmp_path / "a.csv")]
    code, out, err = call(capsys, *base, "--output", str(tmp_path / "a.csv" / "m.json"))
    assert_one_error_line(code, err, "a.csv", "not a directory")
    assert "recall" not in out  # refused before the work
    if Path("/proc/self").exists():
        code, _, err = call(capsys, *base, "--output", "/proc/m.json")
        assert_one_error_line(code, err, "/proc", "cannot write here")
        assert "file not found" not in err


def test_os_errors_are_one_line_with_their_reason(capsys, monkeypatch, tmp_path):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/run")

    monkeypatch.setattr("coldstart.experiments.run", read_only)
    code, _, err = call(capsys, "run", "--dataset", "synthetic", "--model", "pop", "--output", str(tmp_path / "r"))
    assert_one_error_line(code, err, "/mnt/ro/run", "Read-only file system")


def test_datasets_lists_interaction_level_content(capsys, monkeypatch):
    from coldstart.data import loaders
    from coldstart.data.modalities import Text

    def with_reviews(name, **kwargs):
        ds = load_dataset("synthetic", n_users=20, n_items=30, mean_interactions=5)
        ds.interaction_features = {"review": Text(["good"] * ds.n_interactions)}
        return ds

    monkeypatch.setattr(loaders, "LOADERS", {"synthetic": loaders.LOADERS["synthetic"]})
    monkeypatch.setattr(loaders, "load_dataset", with_reviews)
    code, out, err = call(capsys, "datasets")
    assert code == 0, err
    assert "review (per interaction)" in out


def test_print_metrics_shows_the_note_lines(capsys):
    doc = {"model": "pop", "dataset": "d", "protocol": "cold_item", "seed": 0,
           "test": {"all": {"recall@10": 0.5}}, "note": "pop has no representation for cold items"}
    cli.print_metrics(doc, "test")
    out = capsys.readouterr().out
    assert "pop on d (cold_item, seed 0), test" in out and "note: pop has no representation" in out
    cli.print_metrics({**doc, "note": ["first", "second"]}, "test")
    out = capsys.readouterr().out
    assert "note: first" in out and "note: second" in out
