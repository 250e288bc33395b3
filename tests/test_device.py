"""Device choice (nn/device.py) and the id-embedding models on a device: the CPU path is the CPU-only code bit for bit,
saved models load on the CPU, and (on a machine with a GPU) a CUDA run follows the CPU run."""

from __future__ import annotations

import pytest
import torch

from coldstart.errors import DataError
from coldstart.experiments import seed_everything
from coldstart.models import MODELS
from coldstart.models.embedding import EmbeddingRecommender
from coldstart.nn import device as devices
from coldstart.train import TrainOptions

#: Every model that trains on config.device (EmbeddingRecommender.trains_on_device), with small budgets.
ON_DEVICE = {
    "mf_bpr": {},
    "lightgcn": {"n_layers": 2},
    "clcrec": {"num_neg": 8},
    "clcrec_gcn": {"num_neg": 8, "encoder": "lightgcn", "n_layers": 2},
    "clcrec_re": {"num_neg": 8, "num_neg_re": 3, "hybrid": "official"},
    "duif": {},
    "mtpr": {},
    "vbpr": {},
}


def model_class(label: str):
    return MODELS[label.split("_")[0] if label.startswith("clcrec") else label]


def fit(label: str, split, folder=None, resume=False, **hyper):
    """Two epochs from seed 0 (per-epoch generators from seed 1)."""
    seed_everything(0)
    model = model_class(label)(num_epoch=2, min_epochs=1, batch_size=64, **ON_DEVICE[label], **hyper)
    return model.fit(split, TrainOptions(folder, resume=resume, seed=1))


def losses(model) -> list[dict]:
    """The training history without its wall-clock seconds."""
    return [{k: v for k, v in record.items() if k != "seconds"} for record in model.history_]


def assert_same_state(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if isinstance(sa[key], torch.Tensor):
            assert torch.equal(sa[key].cpu(), sb[key].cpu()), key


def no_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def two_gpus(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


# -- resolve_device / check_device / autocast ---------------------------------------------------------------------
def test_resolve_device_without_a_gpu(monkeypatch):
    no_cuda(monkeypatch)
    assert devices.resolve_device("auto") == torch.device("cpu")
    assert devices.resolve_device("cpu") == torch.device("cpu")
    for wanted in ("cuda", "cuda:0"):
        with pytest.raises(DataError, match=r"field 'device'.*torch sees no CUDA device") as err:
            devices.resolve_device(wanted)
        assert err.value.field == "device"


def test_resolve_device_with_gpus(monkeypatch):
    two_gpus(monkeypatch)  # torch.device("cuda:1") is only a name: no GPU is touched
    assert devices.resolve_device("auto") == torch.device("cuda")
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device("cuda") == torch.device("cuda")
    assert devices.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DataError, match=r"'cuda:2' asked for, but torch sees 2 CUDA device") as err:
        devices.resolve_device("cuda:2")
    assert err.value.field == "device"


@pytest.mark.parametrize("bad", ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:0:1", " cpu", "", 0, None])
def test_unknown_device_names_are_rejected(bad):
    with pytest.raises(DataError, match="field 'device': must be auto, cpu, cuda or cuda:N"):
        devices.resolve_device(bad)


@pytest.mark.parametrize("name", ["mf_bpr", "lightgcn", "clcrec", "duif", "mtpr", "vbpr"])
def test_device_is_checked_with_the_config(name):
    with pytest.raises(DataError, match="field 'device'"):
        MODELS[name](device="gpu")
    # A GPU name is a valid setting on a CPU-only machine (a config written for a GPU machine still loads) ...
    assert MODELS[name](device="cuda:1").config.device == "cuda:1"


def test_asking_for_a_missing_gpu_fails_at_fit(synthetic_split, monkeypatch):
    no_cuda(monkeypatch)  # ... and fails, naming the field, once training would start there
    with pytest.raises(DataError, match="field 'device'"):
        MODELS["clcrec"](device="cuda", num_epoch=1).fit(synthetic_split)


@pytest.mark.skipif(torch.cuda.is_available(), reason="pretends a GPU on a CPU-only build")
def test_auto_moves_to_a_gpu_when_torch_sees_one_and_cpu_stays(synthetic_split, monkeypatch):
    """With a (pretended) GPU, "auto" tries to move the model there (this CPU-only build then fails to), while
    device="cpu" and the two-stage models, whose stage 1 is an MF-BPR pinned to the CPU, never touch CUDA."""
    two_gpus(monkeypatch)
    with pytest.raises((AssertionError, RuntimeError), match="CUDA"):
        MODELS["mf_bpr"](num_epoch=1).fit(synthetic_split)
    assert MODELS["mf_bpr"](num_epoch=1, device="cpu").fit(synthetic_split).device_ == torch.device("cpu")
    assert MODELS["deepmusic"](num_epoch=1).fit(synthetic_split).device_ == torch.device("cpu")


def test_autocast_is_a_no_op_on_the_cpu():
    x = torch.randn(4, 4)
    for enabled in (True, False):
        with devices.autocast(torch.device("cpu"), enabled):
            assert torch.is_autocast_enabled("cpu") is False
            assert (x @ x).dtype == torch.float32
    assert not isinstance(devices.autocast(torch.device("cuda"), False), torch.autocast)


# -- the CPU path is the CPU-only code --------------------------------------------------------------------------
@pytest.mark.parametrize("label", sorted(ON_DEVICE))
def test_device_cpu_trains_bit_for_bit_like_the_cpu_only_path(label, synthetic_split, monkeypatch):
    """device="cpu" (and "auto" on a machine without a GPU) equals the code that never moves anything: the same
    model with trains_on_device switched off, which is the code before devices existed."""
    cpu = fit(label, synthetic_split, device="cpu")
    no_cuda(monkeypatch)
    auto = fit(label, synthetic_split)
    monkeypatch.setattr(model_class(label), "trains_on_device", False)
    never_moved = fit(label, synthetic_split, device="cuda")  # would fail at prepare if it were read
    assert losses(cpu) == losses(auto) == losses(never_moved)
    assert_same_state(cpu, never_moved)
    assert_same_state(auto, never_moved)
    users = torch.arange(synthetic_split.n_users)
    assert torch.equal(cpu.rank_scores(users), never_moved.rank_scores(users))


@pytest.mark.parametrize("label", ["clcrec", "lightgcn"])
def test_auto_device_model_saves_and_loads_on_the_cpu(label, synthetic_split, tmp_path):
    model = fit(label, synthetic_split)  # "auto": the GPU when there is one
    model.save(tmp_path / "model")
    loaded = type(model).load(tmp_path / "model")
    assert loaded.device_ == torch.device("cpu")
    assert loaded.config.device == "auto"
    users = torch.arange(synthetic_split.n_users)
    scores, again = model.rank_scores(users), loaded.rank_scores(users)
    assert scores.device.type == "cpu" and again.device.type == "cpu"  # the evaluator's blocks stay on the CPU
    if model.device_.type == "cpu":
        assert torch.equal(again, scores)
    else:  # the same parameters, multiplied on another device
        torch.testing.assert_close(again, scores, rtol=1e-5, atol=1e-5)
    items, _ = loaded.recommend(users[:5], k=5)
    assert items.shape == (5, 5)


def test_resume_on_the_cpu_device_equals_an_uninterrupted_run(synthetic_split, tmp_path):
    whole = fit("clcrec", synthetic_split, device="cpu")
    seed_everything(0)
    first = MODELS["clcrec"](num_epoch=1, min_epochs=1, batch_size=64, device="cpu", **ON_DEVICE["clcrec"])
    first.fit(synthetic_split, TrainOptions(tmp_path, seed=1))
    resumed = fit("clcrec", synthetic_split, folder=tmp_path, resume=True, device="cpu")
    assert losses(resumed) == losses(whole)
    assert_same_state(whole, resumed)


def test_models_on_a_device_have_a_device_setting():
    """Every EmbeddingRecommender that trains on a device has a `device` setting to say where."""
    for name, klass in MODELS.items():
        if isinstance(klass, type) and issubclass(klass, EmbeddingRecommender) and klass.trains_on_device:
            assert "device" in klass.Config.__dataclass_fields__, name
    on_device = {n for n, k in MODELS.items() if getattr(k, "trains_on_device", False)}
    assert on_device == {"mf_bpr", "lightgcn", "clcrec", "duif", "mtpr", "vbpr"}  # docs/distributed.md lists them


# -- CUDA (runs only where torch sees a GPU) --------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("label", ["clcrec", "clcrec_gcn", "clcrec_re", "mf_bpr", "lightgcn", "vbpr"])
def test_cuda_training_follows_the_cpu_run(label, synthetic_split, tmp_path, monkeypatch):
    """Same initialisation, same CPU draws: after training, CUDA scores match the CPU ones up to float rounding;
    resuming on CUDA from a checkpoint puts the restored parameters and Adam moments on the GPU."""
    cpu = fit(label, synthetic_split, device="cpu")
    gpu = fit(label, synthetic_split, device="cuda")
    assert gpu.device_.type == "cuda" and gpu.warm_items_.device.type == "cuda"
    assert gpu.seen_indptr_.device.type == "cpu"  # the base class's bookkeeping stays on the CPU
    for a, b in zip(losses(cpu), losses(gpu), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-5)
    users = torch.arange(synthetic_split.n_users)
    scores = gpu.rank_scores(users)
    assert scores.device.type == "cpu"
    torch.testing.assert_close(scores, cpu.rank_scores(users), rtol=1e-3, atol=1e-3)

    from coldstart import train

    seed_everything(0)
    model_class(label)(num_epoch=1, min_epochs=1, batch_size=64, device="cuda", **ON_DEVICE[label]).fit(
        synthetic_split, TrainOptions(tmp_path, seed=1))
    restored = {}
    real = train.make_optimizer

    def keep(model):
        restored["optimizer"] = real(model)
        return restored["optimizer"]

    monkeypatch.setattr(train, "make_optimizer", keep)
    resumed = fit(label, synthetic_split, folder=tmp_path, resume=True, device="cuda")
    assert resumed.device_.type == "cuda"
    moments = [s["exp_avg"] for s in restored["optimizer"].state.values()]
    assert moments and all(m.device.type == "cuda" for m in moments)
    torch.testing.assert_close(resumed.rank_scores(users), scores, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["dropoutnet", "heater"])
def test_models_without_id_tables_embed_new_items(name, synthetic_split):
    """dropoutnet and heater delete the id tables their towers replace: `device_` (read by the content models'
    `item_embeddings`, which `coldstart serve` calls for a posted item) must not need `user_embedding`."""
    seed_everything(0)
    model = MODELS[name](num_epoch=1, min_epochs=1, batch_size=64).fit(synthetic_split)
    assert "user_embedding" not in dict(model.named_parameters())
    assert model.device_ == torch.device("cpu")
    features = synthetic_split.dataset.item_features
    new = model.item_embeddings(dict(features))  # [I, D]: every item as if it were new, content alone
    with torch.no_grad():
        expected = model.content_features(torch.arange(synthetic_split.n_items))  # no preference input
    assert new.device.type == "cpu" and new.shape == expected.shape
    torch.testing.assert_close(new, expected)
