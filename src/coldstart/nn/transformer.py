"""GIR's modality-specific Transformer encoders (Kim et al., KDD'24, section 5.1).

Every encoder maps one content attribute of a batch of items to a token sequence and a padding mask:

    tokens float [B, T, d], mask bool [B, T] (True = a real token); tokens[:, 0] is the [CLS] aggregate

so the fusion layer (nn/fusion.py) can take either the aggregate (late fusion) or every token (early fusion).

- ImageEncoder (5.1.1): a ViT trained from scratch: P x P patches, a linear patch embedding, learnable
  positional encodings, L pre-norm blocks, an optional [CLS] token (without it, token 0 is the patch mean).
- VideoEncoder (5.1.2): the image encoder with [CLS] on each of F frames, learnable temporal positions, a second
  Transformer over the frames; `segment_starts` / `segment_max_scores` implement the S-segment inference (Eq. 4).
- Text encoders (5.1.3) live in nn/text_encoder.py.
- CategoricalEncoder: the labels of several MultiLabel attributes (genres, director, actors, MPAA) as one set of
  tokens: a label embedding plus a field embedding, no positions (a set has no order), then a Transformer.
- DenseEncoder: a frozen feature vector (e.g. EfficientNet features, synthetic numeric content) -> one token
  through LayerNorm + a two-layer MLP (no sequence to attend over).

Token tables are read with `index_select` (models/embedding.py: rows): the backward of plain indexing
accumulates repeated ids in a thread-dependent order on CPU, which broke bit-wise determinism before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coldstart.errors import DataError

#: Pixel normalisation of the from-scratch ViT: uint8 -> roughly zero mean, unit spread.
PIXEL_MEAN, PIXEL_STD = 0.5, 0.25


def rows(table: Tensor, ids: Tensor) -> Tensor:
    """table[ids] for any shape of ids -> [*ids.shape, D], with a deterministic backward (index_select)."""
    return table.index_select(0, ids.flatten()).view(*ids.shape, table.shape[-1])


class TransformerStack(nn.Module):
    """L pre-norm Transformer encoder blocks (self-attention + GELU MLP) and a final LayerNorm.

    Args:
        d: token width.
        layers: number of blocks (0: only the final LayerNorm).
        heads: attention heads (d must be divisible by it).
        dropout: dropout inside the blocks.
        mlp_ratio: hidden width of the MLP as a multiple of d.
    """

    def __init__(self, d: int, layers: int, heads: int, dropout: float = 0.0, mlp_ratio: int = 4) -> None:
        super().__init__()
        if d % heads:
            raise DataError(f"token width {d} is not divisible by {heads} heads", field="heads")
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, heads, dim_feedforward=mlp_ratio * d, dropout=dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, T, d], mask bool [B, T] (True = real token) -> [B, T, d]."""
        padding = None if mask is None or bool(mask.all()) else ~mask  # [B, T]; True = ignore
        for block in self.blocks:
            x = block(x, src_key_padding_mask=padding)
        return self.norm(x)


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean of the real tokens: tokens [B, T, d], mask bool [B, T] -> [B, d] (zeros for an all-padding row)."""
    weight = mask.to(tokens.dtype)[..., None]  # [B, T, 1]
    return (tokens * weight).sum(1) / weight.sum(1).clamp_min(1.0)


class ImageEncoder(nn.Module):
    """ViT from scratch (5.1.1): patches -> linear embedding + learnable positions -> L blocks (+ [CLS]).

    Args:
        image_size: side of the (square) input in pixels; must be a multiple of `patch`.
        patch: patch side P.
        d: token width.
        layers: Transformer blocks L.
        heads: attention heads.
        dropout: dropout in the blocks.
        cls: prepend a learnable [CLS] token; without it token 0 of the output is the mean patch token.
    """

    def __init__(self, image_size: int, patch: int, d: int, layers: int, heads: int, dropout: float = 0.0,
                 cls: bool = True) -> None:
        super().__init__()
        if image_size % patch:
            raise DataError(f"image size {image_size} is not a multiple of the patch size {patch}", field="patch")
        self.patch, self.grid, self.has_cls = patch, image_size // patch, cls
        self.patch_embedding = nn.Linear(3 * patch * patch, d)  # the linear patch embedding
        self.positions = nn.Parameter(torch.randn(1, self.grid * self.grid, d) * 0.02)  # learnable, one per patch
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02) if cls else None
        self.encoder = TransformerStack(d, layers, heads, dropout)

    def patches(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, h * w, 3 * P * P], rows in raster order (a over rows, b over columns)."""
        b, p, g = pixels.shape[0], self.patch, self.grid
        if pixels.shape[1:] != (3, g * p, g * p):
            raise DataError(f"expected images of shape (3, {g * p}, {g * p}), got {tuple(pixels.shape[1:])}",
                            field="image_size")
        x = pixels.reshape(b, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5)  # [B, h, w, 3, P, P]
        return x.reshape(b, g * g, 3 * p * p)

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """pixels uint8 or float [B, 3, H, W] -> (tokens [B, 1 + h*w, d], mask [B, 1 + h*w]).

        uint8 input is scaled to [0, 1] and normalised; float input is taken as already normalised.
        """
        x = pixels.float()
        if pixels.dtype == torch.uint8:
            x = (x / 255.0 - PIXEL_MEAN) / PIXEL_STD
        z = self.patch_embedding(self.patches(x)) + self.positions  # [B, T, d]
        if self.cls is not None:
            z = torch.cat([self.cls.expand(len(z), -1, -1), z], 1)  # [B, 1 + T, d]
        z = self.encoder(z)
        if self.cls is None:
            z = torch.cat([z.mean(1, keepdim=True), z], 1)  # token 0 = mean patch token
        return z, torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)


class VideoEncoder(nn.Module):
    """ViViT "model 2"-style two-stage encoder (5.1.2): per-frame ViT [CLS] -> temporal Transformer over F frames.

    Args:
        frame_encoder: an ImageEncoder with cls=True (its [CLS] output is the frame embedding).
        frames: clip length F (number of learnable temporal positions).
        layers: blocks of the temporal Transformer.
        heads: attention heads.
        dropout: dropout in the blocks.
    """

    def __init__(self, frame_encoder: ImageEncoder, frames: int, layers: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not frame_encoder.has_cls:
            raise DataError("the video encoder needs a frame encoder with [CLS]", field="cls")
        d = frame_encoder.positions.shape[-1]
        self.frame_encoder, self.frames = frame_encoder, frames
        self.temporal_positions = nn.Parameter(torch.randn(1, frames, d) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.encoder = TransformerStack(d, layers, heads, dropout)

    def forward(self, clip: Tensor) -> tuple[Tensor, Tensor]:
        """clip [B, F, 3, H, W] -> (tokens [B, 1 + F, d], mask [B, 1 + F])."""
        b, f = clip.shape[:2]
        if f != self.frames:
            raise DataError(f"expected clips of {self.frames} frames, got {f}", field="frames")
        per_frame = self.frame_encoder(clip.flatten(0, 1))[0][:, 0]  # [B * F, d]: each frame's [CLS]
        z = per_frame.view(b, f, -1) + self.temporal_positions  # [B, F, d]
        z = self.encoder(torch.cat([self.cls.expand(b, -1, -1), z], 1))  # [B, 1 + F, d]
        return z, torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)


def random_clip_starts(n_frames: Tensor, frames: int, generator: torch.Generator | None = None) -> Tensor:
    """Training (5.1.2): one random start per video for a clip of `frames` consecutive frames.

    Args:
        n_frames: int64 [B] frames available per video (a video shorter than the clip starts at 0).
        frames: clip length F.
    """
    room = (n_frames - frames).clamp_min(0) + 1  # [B] possible starts
    return (torch.rand(len(n_frames), generator=generator) * room).long()


def segment_starts(n_frames: int, frames: int, segments: int) -> Tensor:
    """Inference (5.4): S clip starts spread evenly over a video of n_frames (int64 [S]; 0s when it is short)."""
    last = max(n_frames - frames, 0)
    return torch.linspace(0, last, segments).round().long()


def take_clips(video: Tensor, starts: Tensor, frames: int) -> Tensor:
    """video [B, T, ...], starts int64 [B] or [B, S] -> clips [B, F, ...] or [B, S, F, ...] (indices clamped)."""
    offsets = torch.arange(frames, device=video.device)
    index = (starts[..., None] + offsets).clamp_max(video.shape[1] - 1)  # [B, (S,) F]
    batch = torch.arange(len(video), device=video.device).view(-1, *([1] * (index.dim() - 1)))
    return video[batch, index]


def segment_max_scores(users: Tensor, segment_vectors: Tensor) -> Tensor:
    """Eq. 4: R_ij = max_s u_i . v_{j_s}.

    Args:
        users: float [U, D].
        segment_vectors: float [I, S, D], one item vector per sampled segment.

    Returns:
        float [U, I].
    """
    per_segment = torch.einsum("ud,isd->uis", users, segment_vectors)  # [U, I, S]
    return per_segment.max(-1).values


class CategoricalEncoder(nn.Module):
    """Labels of several categorical attributes as one token set: label + field embeddings, [CLS], Transformer.

    Args:
        vocab: total number of labels over all fields (ids 1..vocab; 0 is padding).
        fields: number of categorical attributes (field ids 0..fields-1).
        d, layers, heads, dropout: Transformer shape.
    """

    def __init__(self, vocab: int, fields: int, d: int, layers: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.labels = nn.Parameter(torch.randn(vocab + 1, d) * 0.02)  # row 0: padding (never attended to)
        self.fields = nn.Parameter(torch.randn(fields, d) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.encoder = TransformerStack(d, layers, heads, dropout)

    def forward(self, labels: Tensor, fields: Tensor) -> tuple[Tensor, Tensor]:
        """labels int64 [B, T] (0 = padding), fields int64 [B, T] -> (tokens [B, 1 + T, d], mask [B, 1 + T])."""
        z = rows(self.labels, labels) + rows(self.fields, fields)  # [B, T, d]
        z = torch.cat([self.cls.expand(len(z), -1, -1), z], 1)
        mask = torch.cat([torch.ones(len(z), 1, dtype=torch.bool, device=z.device), labels > 0], 1)  # [B, 1 + T]
        return self.encoder(z, mask), mask


class DenseEncoder(nn.Module):
    """A dense feature vector (frozen image / text features, numeric content) -> one token of width d.

    The caller standardises the columns (models/gir.py: z-scores with catalogue statistics); a LayerNorm here
    would erase a one-column input such as the release year.

    Args:
        in_dim: input width.
        d: output width.
        hidden: MLP hidden width (0: a linear map).
    """

    def __init__(self, in_dim: int, d: int, hidden: int = 0) -> None:
        super().__init__()
        self.net = nn.Linear(in_dim, d) if hidden == 0 else nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x float [B, in_dim] -> (tokens [B, 1, d], mask [B, 1])."""
        z = self.net(x.float())[:, None, :]
        return z, torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)


def pad_mask(lengths: Tensor, width: int) -> Tensor:
    """bool [B, width]: True at positions < lengths[b]."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def l2_normalize(x: Tensor) -> Tensor:
    """Rows scaled to unit norm (zeros stay zero)."""
    return F.normalize(x, dim=-1)
