"""GIR's item tower: raw item content -> modality encoders (nn/transformer.py) -> fusion (nn/fusion.py) -> v [n, D].

Content is grouped into slots, in a fixed order: one per Text modality (a text encoder each, sharing one MiniLM
backbone), one per Image modality (a ViT each), one for all MultiLabel modalities together (the categorical
encoder, one field per modality), one per Dense / Sparse modality (a dense encoder each).

`ItemInputs` holds every item's encoder input, built once (`build_inputs`): token ids, the memory-mapped
pixels, label tokens, standardised dense rows, and per slot a bool `present` (False: no content for that item;
its tokens are replaced by a learnable "missing" token, the only token its encoder contributes).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from coldstart.data.modalities import Dense, Image, MultiLabel, Sparse, Text
from coldstart.errors import DataError
from coldstart.nn.fusion import EarlyFusion, LateFusion, MixedFusion
from coldstart.nn.text_encoder import MiniLMBackbone, ScratchTextEncoder, TextHead
from coldstart.nn.transformer import CategoricalEncoder, DenseEncoder, ImageEncoder, pad_mask

log = logging.getLogger("coldstart")


@dataclasses.dataclass
class ContentLayout:
    """Which modalities feed which slot, and what new items need to be encoded the same way (JSON-able).

    Attributes:
        text, image, categorical, dense: modality names per slot kind, in slot order.
        vocabularies: categorical name -> its labels that occur in at least one training item (the others
            carry no trained embedding and are dropped, for new items too).
        dense_stats: dense name -> [means, stds] per column over the catalogue (content, not interactions).
    """

    text: list[str] = dataclasses.field(default_factory=list)
    image: list[str] = dataclasses.field(default_factory=list)
    categorical: list[str] = dataclasses.field(default_factory=list)
    dense: list[str] = dataclasses.field(default_factory=list)
    vocabularies: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    dense_stats: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)

    @property
    def slots(self) -> list[str]:
        """Slot names in fusion order ("categorical" stands for all MultiLabel modalities)."""
        return self.text + self.image + (["categorical"] if self.categorical else []) + self.dense

    def dims(self) -> dict[str, int]:
        """Integer sizes `build` needs (saved in config.json)."""
        out = {"n_text": len(self.text), "n_image": len(self.image), "cat_fields": len(self.categorical),
               "cat_vocab": sum(len(self.vocabularies[n]) for n in self.categorical)}
        out |= {f"dense_{k}": len(self.dense_stats[n][0]) for k, n in enumerate(self.dense)}
        return out


def plan_layout(features: dict, use: tuple[str, ...] | None, train_items: np.ndarray) -> ContentLayout:
    """The layout for a dataset's item features.

    Args:
        features: name -> modality (Dataset.item_features).
        use: the modality names to use (None: every modality).
        train_items: bool [N], items with training interactions (label vocabularies are restricted to them).
    """
    names = list(features) if use is None else list(use)
    missing = [n for n in names if n not in features]
    if missing:
        raise DataError(f"unknown modality {missing[0]!r} (have: {', '.join(features) or 'none'})", field="modalities")
    layout = ContentLayout()
    for name in names:
        mod = features[name]
        if isinstance(mod, Text):
            layout.text.append(name)
        elif isinstance(mod, Image):
            layout.image.append(name)
        elif isinstance(mod, MultiLabel):
            used = np.asarray(mod.values[train_items].sum(0)).ravel() > 0  # [V]
            if used.any():
                layout.categorical.append(name)
                layout.vocabularies[name] = [lab for lab, keep in zip(mod.vocabulary, used) if keep]
            else:
                log.warning("modality %r has no label on any training item; left out", name)
        elif isinstance(mod, (Dense, Sparse)):
            values = _dense_values(mod)  # [N, w]
            present = mod.mask if isinstance(mod, Dense) and mod.mask is not None else np.ones(len(values), bool)
            rows = values[present] if present.any() else values
            mean, std = rows.mean(0), rows.std(0)
            if (std == 0).all():
                log.warning("modality %r is constant over the catalogue; left out", name)
                continue
            layout.dense.append(name)
            layout.dense_stats[name] = [mean.tolist(), np.where(std > 0, std, 1.0).tolist()]
        else:
            raise DataError(f"modality {name!r} of type {type(mod).__name__} is not supported", field="modalities")
    if not layout.slots:
        raise DataError("no item content to encode", field="modalities")
    return layout


def check_content(layout: ContentLayout, features: dict) -> None:
    """Raise unless `features` holds every modality of `layout` with the kind and width its encoders read.

    `build_inputs` reads a modality absent from `features` as missing content for every item, which serves new
    items; a frozen tower scoring another dataset (`gir`'s `towers_from`) must instead be told when the content
    it gets is not the content it was trained on.

    Raises:
        DataError: naming the first modality that is absent, of another kind, or of another width.
    """
    kinds = [(layout.text, (Text,)), (layout.image, (Image,)), (layout.categorical, (MultiLabel,)),
             (layout.dense, (Dense, Sparse))]
    for names, allowed in kinds:
        for name in names:
            mod = features.get(name)
            if mod is None:
                raise DataError(f"the towers read modality {name!r}, which this content lacks (have: "
                                f"{', '.join(features) or 'none'})", field=name)
            if not isinstance(mod, allowed):
                raise DataError(f"the towers read {name!r} as {allowed[0].__name__}, got {type(mod).__name__}",
                                field=name)
            if name in layout.dense_stats and mod.dim != len(layout.dense_stats[name][0]):
                raise DataError(f"the towers read {name!r} with width {len(layout.dense_stats[name][0])}, got "
                                f"{mod.dim}", field=name)


def _dense_values(mod) -> np.ndarray:
    values = mod.values.toarray() if sp.issparse(mod.values) else np.asarray(mod.values)
    return values.astype(np.float32)


@dataclasses.dataclass
class ItemInputs:
    """Every item's encoder inputs (CPU; pixels stay memory-mapped), aligned with the slot order.

    Attributes:
        text: per text slot (ids int64 [N, L], lengths int64 [N]).
        text_states: per text slot, the frozen MiniLM part's output float16 [N, L', 384] or None.
        image: per image slot, pixels uint8 [N, 3, S, S] (np.memmap or ndarray).
        categorical: (labels int64 [N, T], fields int64 [N, T]) or None.
        dense: per dense slot, standardised float32 [N, w].
        present: per slot, bool [N].
    """

    text: list[tuple[Tensor, Tensor]]
    text_states: list[Tensor | None]
    image: list[np.ndarray]
    categorical: tuple[Tensor, Tensor] | None
    dense: list[Tensor]
    present: list[Tensor]
    n: int


def categorical_tokens(mats: list[sp.csr_matrix], max_tokens: int) -> tuple[Tensor, Tensor]:
    """Label tokens of several MultiLabel fields: ids 1.. over the concatenated vocabularies (0 = padding).

    Fields come in order and each row keeps its first `max_tokens` labels (so the first fields, e.g. genres,
    are never cut); no Python loop over items.

    Returns:
        (labels int64 [N, max_tokens], fields int64 [N, max_tokens]).
    """
    widths = [m.shape[1] for m in mats]
    field_of = np.repeat(np.arange(len(mats)), widths)  # [V]
    both = sp.hstack(mats, format="csr")
    both.sort_indices()
    n = both.shape[0]
    counts = np.diff(both.indptr)
    rank = np.arange(both.nnz) - np.repeat(both.indptr[:-1], counts)  # position of each label in its row
    keep = rank < max_tokens
    rows = np.repeat(np.arange(n), counts)[keep]
    cols = both.indices[keep]
    labels = np.zeros((n, max_tokens), np.int64)
    fields = np.zeros((n, max_tokens), np.int64)
    labels[rows, rank[keep]] = cols + 1
    fields[rows, rank[keep]] = field_of[cols]
    return torch.from_numpy(labels), torch.from_numpy(fields)


def _remap(mod: MultiLabel, vocabulary: list[str]) -> sp.csr_matrix:
    """A MultiLabel's matrix with columns remapped to `vocabulary` (labels outside it dropped)."""
    index = {lab: j for j, lab in enumerate(vocabulary)}
    remap = np.array([index.get(lab, -1) for lab in mod.vocabulary], dtype=np.int64)
    coo = sp.coo_matrix(mod.values)
    keep = remap[coo.col] >= 0
    return sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (coo.row[keep], remap[coo.col[keep]])),
                         shape=(mod.n_rows, len(vocabulary)))


def build_inputs(layout: ContentLayout, features: dict, cfg, n: int) -> ItemInputs:
    """Encoder inputs for n items from raw modalities (the dataset's, or new items' for `item_embeddings`).

    A modality of the layout absent from `features` counts as missing content for every item.
    """
    from coldstart.features.raw import poster_pixels, token_ids

    text, image, dense, present = [], [], [], []
    tokenizer = "minilm" if cfg.text_encoder == "minilm" else "simple"
    for name in layout.text:
        texts = features[name].texts if name in features else [""] * n
        ids, lengths = token_ids(texts, cfg.text_max_len, tokenizer)
        text.append((torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(lengths)))
        present.append(torch.tensor([bool(t and t.strip()) for t in texts], dtype=torch.bool))
    for name in layout.image:
        if name in features:
            pixels, mask = poster_pixels(features[name], cfg.image_size)
        else:
            pixels, mask = np.zeros((n, 3, cfg.image_size, cfg.image_size), np.uint8), np.zeros(n, bool)
        image.append(pixels)
        present.append(torch.from_numpy(np.asarray(mask, bool)))
    categorical = None
    if layout.categorical:
        mats = [_remap(features[c], layout.vocabularies[c]) if c in features
                else sp.csr_matrix((n, len(layout.vocabularies[c])), dtype=np.float32) for c in layout.categorical]
        categorical = categorical_tokens(mats, cfg.cat_max_tokens)
        present.append(categorical[0][:, 0] > 0)
    for name in layout.dense:
        mean, std = (np.asarray(s, np.float32) for s in layout.dense_stats[name])
        if name in features:
            mod = features[name]
            values = _dense_values(mod)
            if values.shape[1] != len(mean):
                raise DataError(f"expected width {len(mean)}, got {values.shape[1]}", field=name)
            mask = mod.mask if isinstance(mod, Dense) and mod.mask is not None else np.ones(len(values), bool)
        else:
            values, mask = np.zeros((n, len(mean)), np.float32), np.zeros(n, bool)
        dense.append(torch.from_numpy((values - mean) / std))
        present.append(torch.from_numpy(np.asarray(mask, bool)))
    return ItemInputs(text, [None] * len(text), image, categorical, dense, present, n)


class ItemTower(nn.Module):
    """Encoders per slot + the fusion layer. `forward(inputs, rows)` -> (v [n, D], z [n, C, d] or None).

    Args:
        dims: the ContentLayout's dims (n_text, n_image, cat_vocab, cat_fields, dense_k).
        cfg: the GIR config (resolved preset).
        minilm_path: folder of the MiniLM weights (text_encoder "minilm" only).
    """

    def __init__(self, dims: dict[str, int], cfg, minilm_path: str | None = None) -> None:
        super().__init__()
        d, heads, drop = cfg.d, cfg.heads, cfg.dropout
        self.text = nn.ModuleList()
        if dims["n_text"]:
            if cfg.text_encoder == "minilm":
                # One MiniLM backbone shared by the text slots (title, plot): one frozen cache, one fine-tuned copy.
                self.backbone = MiniLMBackbone(minilm_path, cfg.text_trainable_layers)
                self.text.extend(TextHead(self.backbone.width, d, cfg.text_top_layers, heads, drop)
                                 for _ in range(dims["n_text"]))
            else:
                from coldstart.features.raw import SIMPLE_VOCAB

                self.text.extend(ScratchTextEncoder(SIMPLE_VOCAB, cfg.text_max_len, d, cfg.text_layers, heads, drop)
                                 for _ in range(dims["n_text"]))
        self.image = nn.ModuleList(ImageEncoder(cfg.image_size, cfg.patch, d, cfg.image_layers, heads, drop,
                                                cls=cfg.image_cls) for _ in range(dims["n_image"]))
        self.categorical = CategoricalEncoder(dims["cat_vocab"], dims["cat_fields"], d, cfg.cat_layers, heads, drop) \
            if dims["cat_fields"] else None
        n_dense = sum(1 for k in dims if k.startswith("dense_"))
        self.dense = nn.ModuleList(DenseEncoder(dims[f"dense_{k}"], d, cfg.dense_hidden) for k in range(n_dense))
        self.n_slots = len(self.text) + len(self.image) + (self.categorical is not None) + len(self.dense)
        self.missing = nn.Parameter(torch.randn(self.n_slots, d) * 0.02)  # one "no content" token per slot
        if cfg.fusion == "late":
            self.fusion = LateFusion(self.n_slots, d, cfg.dim_E, cfg.fc_layers)
        elif cfg.fusion == "early":
            self.fusion = EarlyFusion(self.n_slots, d, cfg.dim_E, cfg.fusion_layers, heads, drop, cfg.pool)
        else:
            self.fusion = MixedFusion(self.n_slots, list(cfg.early_positions), d, cfg.dim_E, cfg.fc_layers,
                                      cfg.fusion_layers, heads, drop, cfg.pool)

    def device(self) -> torch.device:
        return self.missing.device

    # -- MiniLM's frozen part, computed once per item ------------------------------------------------------
    @torch.no_grad()
    def fill_text_states(self, inputs: ItemInputs, chunk: int = 256) -> None:
        """Cache the frozen MiniLM output of every item's text (float16, trimmed to the longest text)."""
        if not len(self.text) or not hasattr(self, "backbone"):
            return
        dev = self.device()
        for k, (ids, lengths) in enumerate(inputs.text):
            if inputs.text_states[k] is not None:
                continue
            width = int(lengths.max()) if len(lengths) else 1
            out = torch.zeros(inputs.n, width, self.backbone.width, dtype=torch.float16)
            for start in range(0, inputs.n, chunk):
                sl = slice(start, start + chunk)
                mask = pad_mask(lengths[sl], width).to(dev)
                out[sl] = self.backbone.frozen_states(ids[sl, :width].to(dev), mask).to(torch.float16).cpu()
            inputs.text_states[k] = out

    # -- encoding ----------------------------------------------------------------------------------------------
    def encode_slots(self, inputs: ItemInputs, rows: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(tokens [n, T_c, d], mask [n, T_c]) per slot for the items `rows` (int64 [n], CPU)."""
        dev, out = self.device(), []
        for k, encoder in enumerate(self.text):
            ids, lengths = inputs.text[k]
            width = max(int(lengths[rows].max()), 1)  # trim the batch to its longest text
            mask = pad_mask(lengths[rows], width).to(dev)
            if hasattr(self, "backbone"):
                if inputs.text_states[k] is None:
                    states = self.backbone.frozen_states(ids[rows, :width].to(dev), mask)
                else:
                    states = inputs.text_states[k][rows, :width].to(dev)
                out.append(encoder(self.backbone.upper(states, mask), mask))
            else:
                out.append(encoder(ids[rows, :width].to(dev), mask))
        np_rows = rows.numpy()
        for k, encoder in enumerate(self.image):
            pixels = torch.from_numpy(np.ascontiguousarray(inputs.image[k][np_rows]))  # reads only these rows
            out.append(encoder(pixels.to(dev)))
        if self.categorical is not None:
            labels, fields = inputs.categorical[0][rows], inputs.categorical[1][rows]  # [n, T]
            width = max(int((labels > 0).sum(1).max()), 1)  # labels are left-aligned: trim to the batch's longest
            out.append(self.categorical(labels[:, :width].to(dev), fields[:, :width].to(dev)))
        for k, encoder in enumerate(self.dense):
            out.append(encoder(inputs.dense[k][rows].to(dev)))
        for c, (tokens, mask) in enumerate(out):  # items without this content: the slot's "missing" token only
            present = inputs.present[c][rows].to(dev)
            tokens = tokens.float()  # slots leave autocast in bf16 or fp32: one dtype for the fusion's cat / stack
            tokens = torch.where(present[:, None, None], tokens, self.missing[c])
            first = torch.zeros_like(mask)
            first[:, 0] = True
            out[c] = (tokens, torch.where(present[:, None], mask, first))
        return out

    def forward(self, inputs: ItemInputs, rows: Tensor) -> tuple[Tensor, Tensor | None]:
        """(v [n, D], z [n, C', d] per-modality aggregates for the alignment loss, or None for early fusion)."""
        return self.fusion(self.encode_slots(inputs, rows))
