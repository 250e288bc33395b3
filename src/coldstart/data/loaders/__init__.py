"""Dataset loaders. Each module exposes `load(root, **options) -> Dataset`; none of them splits.

`load_dataset(name_or_path)` finds a known dataset under $COLDSTART_DATA_DIR or the cache (downloading
the official archive where one exists), or reads a folder in one of the generic formats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from coldstart.data.dataset import Dataset
from coldstart.data.loaders import amazon, citeulike, clcrec_official, movielens, recbole, synthetic, tabular
from coldstart.data.loaders import kuairec, xing
from coldstart.data.loaders import amazon2014
from coldstart.errors import DataError

#: name -> (loader, files that mark a complete local copy, downloader or None)
LOADERS: dict[str, tuple[Callable[..., Dataset], tuple[str, ...], Callable[[], Path] | None]] = {
    "ml-100k": (movielens.load_ml100k, ("u.data", "u.item", "u.user"), movielens.download_ml100k),
    "ml-1m": (movielens.load_ml1m, ("users.dat", "movies.dat"), movielens.download_ml1m),
    "ml-latest-small": (movielens.load_ml_latest_small, ("ratings.csv", "movies.csv"), movielens.download_ml_latest_small),
    "citeulike-a": (citeulike.load, ("raw/users.dat", "raw/item-tag.dat"), None),
    "amazon-musical-instruments": (amazon.load, (amazon.FILE,), None),
    "amazon2014": (amazon2014.load, (), None),  # one category of the 2014 dumps: give root= (data.root)
    "amazon-cds": (amazon2014.load_cds, ("ratings_CDs_and_Vinyl.csv",), None),
    "kuairec": (kuairec.load, ("small_matrix.csv",), None),  # https://kuairec.com (the data/ folder)
    "xing": (xing.load, ("train.csv", "user_content.npz", "item_content.npz"), None),  # Heater's data/XING
    "synthetic": (synthetic.load, (), None),
}


def locate(name: str, download: bool = True) -> Path | None:
    """Folder of a known dataset: local copy first, else the official download (when it has one)."""
    from coldstart.data.paths import find_dataset_dir

    _, required, downloader = LOADERS[name]
    if not required:
        return None
    found = find_dataset_dir(name, required)
    if found is None and download and downloader is not None:
        found = downloader()
    return found


def load_dataset(name: str, root: str | Path | None = None, download: bool = True, **options) -> Dataset:
    """Load a dataset by name (see LOADERS) or from a folder in a generic format.

    Args:
        name: a key of LOADERS, or a path to a folder holding tabular, RecBole atomic or official CLCRec files.
        root: explicit folder for a named dataset (skips the search).
        download: allow downloading the official archive when no local copy exists.
        **options: passed to the loader (e.g. min_rating=4).

    Raises:
        DataError: unknown name, missing files, or malformed content.
    """
    if name in LOADERS:
        loader = LOADERS[name][0]
        if name == "synthetic":
            return loader(**options)
        folder = Path(root) if root is not None else locate(name, download)
        if folder is None:
            raise DataError(f"dataset '{name}' not found under $COLDSTART_DATA_DIR or the cache, and it has no "
                            "official download; set COLDSTART_DATA_DIR to the folder that holds it")
        dataset = loader(folder, **options)
    elif Path(name).is_dir():
        dataset = load_folder(Path(name), **options)
    else:
        known = ", ".join(sorted(LOADERS))
        raise DataError(f"unknown dataset '{name}' (known: {known}; or give a folder path)")
    dataset.root = folder if name in LOADERS else Path(name)
    return dataset


def folder_loader(path: Path) -> Callable[..., Dataset]:
    """The loader of a folder's format: RecBole atomic files, the official CLCRec layout, or generic tabular."""
    if list(path.glob("*.inter")):
        return recbole.load
    if (path / "train.npy").exists():
        return clcrec_official.load
    return tabular.load


def load_folder(path: Path, **options) -> Dataset:
    """Load a folder by its format (`folder_loader`)."""
    return folder_loader(path)(path, **options)
