"""Every bad-input case gets a one-line error naming file, line or field (and exit code 2 from the CLI)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from coldstart.data.loaders import load_dataset
from coldstart.errors import DataError


def write_ml100k(root, data="1\t10\t5\t100\n2\t10\t4\t101\n", item=None, user=None):
    root.mkdir(exist_ok=True)
    genres = "|".join(["0"] * 19)
    (root / "u.data").write_text(data)
    (root / "u.item").write_text(item if item is not None else f"10|Film (1995)|01-Jan-1995||http://x|{genres}\n")
    (root / "u.user").write_text(user if user is not None else "1|20|M|student|12345\n2|30|F|other|54321\n")
    return root


def tabular(root, interactions="user,item\nu1,a\nu2,b\n", features=None):
    root.mkdir(exist_ok=True)
    (root / "interactions.csv").write_text(interactions)
    if features:
        (root / "items").mkdir()
        for name, content in features.items():
            path = root / "items" / name
            if isinstance(content, np.ndarray):
                np.save(path, content)
            else:
                path.write_text(content)
    return root


def error_of(fn) -> str:
    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_wrong_column_count_names_file_and_line(tmp_path):
    root = write_ml100k(tmp_path / "d", data="1\t10\t5\t100\n2\t10\t4\n")
    assert error_of(lambda: load_dataset("ml-100k", root=root)) == f"{root / 'u.data'}:2: expected 4 fields, found 3"


def test_non_numeric_id(tmp_path):
    root = write_ml100k(tmp_path / "d", data="1\t10\t5\t100\nx\t10\t4\t1\n")
    msg = error_of(lambda: load_dataset("ml-100k", root=root))
    assert msg == f"{root / 'u.data'}:2, field 'user': expected a number, got 'x'"


def test_nan_in_feature_matrix(tmp_path):
    root = tabular(tmp_path / "d", features={"vec.npy": np.array([[1.0], [np.nan]], np.float32),
                                              "vec.ids.txt": "a\nb\n"})
    assert error_of(lambda: load_dataset(str(root))) == f"{root / 'items' / 'vec.npy'}: NaN or inf in row 1 (id b)"


def test_missing_cells_in_a_numeric_feature_table_are_errors_unless_mean_filling_is_asked(tmp_path, caplog):
    root = tabular(tmp_path / "d", features={"year.csv": "item,year,price\na,,3\nb,1990,5\n"})
    msg = error_of(lambda: load_dataset(str(root)))
    assert msg.startswith(f"{root / 'items' / 'year.csv'}:2, field 'year': missing or non-finite value")
    with caplog.at_level("WARNING", logger="coldstart"):
        ds = load_dataset(str(root), missing_features="mean")
    np.testing.assert_array_equal(ds.item_features["year"].values, [[1990.0, 3.0], [1990.0, 5.0]])
    assert "1 missing or non-finite values in column 'year' set to the column mean" in caplog.text


def test_feature_rows_for_unknown_ids(tmp_path):
    root = tabular(tmp_path / "d", features={"text.csv": "item,text\na,x\nzz,y\n"})
    msg = error_of(lambda: load_dataset(str(root)))
    assert msg == f"{root / 'items' / 'text.csv'}:3: feature row for unknown item id zz (1 unknown in all)"


def test_duplicate_interactions(tmp_path):
    root = tabular(tmp_path / "d", interactions="user,item\nu1,a\nu2,b\nu1,a\n")
    msg = error_of(lambda: load_dataset(str(root)))
    assert msg.startswith(f"{root / 'interactions.csv'}:4: duplicate interaction (user u1, item a)")
    assert load_dataset(str(root), on_duplicate="drop").n_interactions == 2


def test_empty_file(tmp_path):
    root = write_ml100k(tmp_path / "d", data="")
    assert error_of(lambda: load_dataset("ml-100k", root=root)) == f"{root / 'u.data'}: empty file"


def test_missing_required_file(tmp_path):
    root = write_ml100k(tmp_path / "d")
    (root / "u.user").unlink()
    assert error_of(lambda: load_dataset("ml-100k", root=root)) == f"{root / 'u.user'}: missing required file"


def test_wrong_shapes_and_unknown_names(tmp_path):
    root = tabular(tmp_path / "d", features={"vec.npy": np.ones((3, 2), np.float32), "vec.ids.txt": "a\nb\n"})
    assert error_of(lambda: load_dataset(str(root))) == f"{root / 'items' / 'vec.npy'}: 3 feature rows but 2 ids"
    assert error_of(lambda: load_dataset("no-such-dataset")).startswith("unknown dataset 'no-such-dataset'")
    bad_header = tabular(tmp_path / "e", interactions="usr,item\nu1,a\n")
    assert "header must name columns user and item" in error_of(lambda: load_dataset(str(bad_header)))


def run_cli(*args, env_extra=None, cwd=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "coldstart.cli", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_cli_exit_code_2_and_one_line(tmp_path):
    root = write_ml100k(tmp_path / "d", data="1\t10\t5\t100\n2\t10\n")
    proc = run_cli("run", "--dataset", str(root), "--model", "pop", "--output", str(tmp_path / "run"))
    # a folder path is read as bring-your-own data, which needs interactions.csv
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr
    proc = run_cli("run", "--dataset", "synthetic", "--model", "pop", "--set", "bogus=1", "--output", str(tmp_path / "r"))
    assert proc.returncode == 2 and "unknown hyperparameter 'bogus' for pop" in proc.stderr
    assert not (tmp_path / "r").exists()
    proc = run_cli("evaluate", "--split", str(tmp_path / "nope"), "--recommendations", "x.csv")
    assert proc.returncode == 2 and "meta.json" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--model", "clcrec", "--set", "lr_lambda=2"], "error: field 'lr_lambda': must be in [0, 1], got 2"),
    (["--model", "clcrec", "--set", "encoder=gat"], "error: field 'encoder': unknown encoder 'gat' (use mf, lightgcn)"),
    (["--model", "clcrec", "--set", "modalities=[\"nope\"]", "--set", "num_epoch=1"],
     "error: field 'modalities': unknown modality 'nope' (have: content, topic)"),
    (["--model", "mf_bpr", "--set", "l_r=0"], "error: field 'l_r': must be > 0, got 0"),
])
def test_cli_rejects_bad_hyperparameters(tmp_path, args, message):
    proc = run_cli("run", "--dataset", "synthetic", *args, "--output", str(tmp_path / "run"), "--no-progress")
    assert proc.returncode == 2
    assert proc.stderr.strip() == message


def test_cli_resume_of_a_folder_that_is_not_a_run(tmp_path):
    proc = run_cli("run", "--resume", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path}: not a run directory (no config.json)"
