"""Named content modalities for items or users, each row-aligned with the dataset's index.

Every modality has `n_rows`, `take(rows)` (a new modality restricted to those rows, in that order)
and `validate(name)`, which raises a DataError that names the field and the offending row.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from coldstart.errors import DataError


@dataclass
class Dense:
    """A dense float matrix, one row per entity.

    Attributes:
        values: float32 array [N, D].
        mask: optional bool array [N]; False where the entity has no content (the row is then zeros).
    """

    values: np.ndarray
    mask: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def take(self, rows: np.ndarray) -> "Dense":
        return Dense(self.values[rows], None if self.mask is None else self.mask[rows])

    def validate(self, name: str, row_ids: np.ndarray | None = None) -> None:
        if self.values.ndim != 2:
            raise DataError(f"expected a 2-D matrix, got shape {self.values.shape}", field=name)
        finite = np.isfinite(self.values)
        if not finite.all():
            row = int(np.argwhere(~finite)[0, 0])
            who = row_ids[row] if row_ids is not None else row
            raise DataError(f"NaN or inf in row for id {who}", field=name)


@dataclass
class Sparse:
    """A sparse matrix (bag of words, TF-IDF, ...), one row per entity.

    Attributes:
        values: scipy CSR matrix [N, D].
        vocabulary: optional column names.
    """

    values: sp.csr_matrix
    vocabulary: list[str] | None = None

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def take(self, rows: np.ndarray) -> "Sparse":
        return Sparse(self.values[rows], self.vocabulary)

    def validate(self, name: str, row_ids: np.ndarray | None = None) -> None:
        data = self.values.data
        if not np.isfinite(data).all():
            coo = self.values.tocoo()
            row = int(coo.row[~np.isfinite(coo.data)][0])
            who = row_ids[row] if row_ids is not None else row
            raise DataError(f"NaN or inf in row for id {who}", field=name)


@dataclass
class MultiLabel:
    """Labels from a vocabulary, any number per entity (genres, tags, actors); one label per row for a categorical.

    Attributes:
        values: binary CSR indicator matrix [N, V].
        vocabulary: the V label names.
    """

    values: sp.csr_matrix
    vocabulary: list[str]

    @classmethod
    def from_lists(cls, labels: list[list[str]], vocabulary: list[str] | None = None) -> "MultiLabel":
        """Build from one list of label strings per entity; the vocabulary is sorted unless given."""
        vocab = vocabulary if vocabulary is not None else sorted({lab for row in labels for lab in row})
        index = {lab: j for j, lab in enumerate(vocab)}
        indptr = np.zeros(len(labels) + 1, dtype=np.int64)
        cols: list[int] = []
        for r, row in enumerate(labels):
            cols.extend(sorted({index[lab] for lab in row if lab in index}))
            indptr[r + 1] = len(cols)
        data = np.ones(len(cols), dtype=np.float32)
        mat = sp.csr_matrix((data, np.asarray(cols, dtype=np.int64), indptr), shape=(len(labels), len(vocab)))
        return cls(mat, list(vocab))

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        return len(self.vocabulary)

    def labels(self, row: int) -> list[str]:
        """The label names of one row."""
        return [self.vocabulary[j] for j in sorted(self.values[row].indices)]

    def take(self, rows: np.ndarray) -> "MultiLabel":
        return MultiLabel(self.values[rows], self.vocabulary)

    def validate(self, name: str, row_ids: np.ndarray | None = None) -> None:
        if self.values.shape[1] != len(self.vocabulary):
            raise DataError(f"{self.values.shape[1]} columns but {len(self.vocabulary)} labels", field=name)


@dataclass
class Text:
    """Raw text per entity (plot, title, reviews); an empty string means no text."""

    texts: list[str]

    @property
    def n_rows(self) -> int:
        return len(self.texts)

    def take(self, rows: np.ndarray) -> "Text":
        return Text([self.texts[int(r)] for r in rows])

    def validate(self, name: str, row_ids: np.ndarray | None = None) -> None:
        for r, t in enumerate(self.texts):
            if not isinstance(t, str):
                who = row_ids[r] if row_ids is not None else r
                raise DataError(f"text for id {who} is {type(t).__name__}, not str", field=name)


@dataclass
class Image:
    """References to one image per entity inside a folder or a zip archive; None where there is no image.

    Attributes:
        refs: member name (zip) or relative path (folder) per entity, or None.
        source: the folder or .zip file the references point into.
    """

    refs: list[str | None]
    source: Path
    _zip: zipfile.ZipFile | None = field(default=None, repr=False, compare=False)

    @property
    def n_rows(self) -> int:
        return len(self.refs)

    @property
    def mask(self) -> np.ndarray:
        """bool [N]: True where the entity has an image."""
        return np.array([r is not None for r in self.refs], dtype=bool)

    def read_bytes(self, row: int) -> bytes | None:
        """The raw bytes of one entity's image, read straight from the folder or zip; None if it has none."""
        ref = self.refs[row]
        if ref is None:
            return None
        if self.source.suffix == ".zip":
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.source)
            return self._zip.read(ref)
        return (self.source / ref).read_bytes()

    def open(self, row: int) -> io.BytesIO | None:
        """A file-like object over one image, for PIL.Image.open; None if the entity has no image."""
        data = self.read_bytes(row)
        return None if data is None else io.BytesIO(data)

    def take(self, rows: np.ndarray) -> "Image":
        return Image([self.refs[int(r)] for r in rows], self.source)

    def validate(self, name: str, row_ids: np.ndarray | None = None) -> None:
        if not self.source.exists():
            raise DataError("image source not found", path=self.source, field=name)


Modality = Dense | Sparse | MultiLabel | Text | Image
