"""The service through FastAPI's TestClient: every endpoint and its error paths (docs/serving.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("faiss", reason="the serve extra is not installed")
pytest.importorskip("httpx", reason="TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from tests.serve_helpers import API_KEY, png_bytes, serve_run_fixture  # noqa: E402

KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory):
    return serve_run_fixture(tmp_path_factory)


@pytest.fixture()
def client(serve_run, tmp_path):
    from coldstart_serve.app import create_app

    app = create_app(serve_run, db=tmp_path / "serve.db", api_key=API_KEY)
    with TestClient(app) as c:
        c.service = app.state.service
        c.db = tmp_path / "serve.db"
        yield c


def post_item(client, body: dict, poster: bytes | None = None, headers=KEY, name="p.png", media="image/png"):
    files = {"poster": (name, poster, media)} if poster is not None else None
    return client.post("/items", data={"item": json.dumps(body)}, files=files, headers=headers)


def some_labels(service, item_pos: int) -> list[str]:
    return service.dataset.item_features["topic"].labels(item_pos)


# ---- reads ------------------------------------------------------------------------------------------------------

def test_health_info_and_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "clcrec" and health["items"] == 90
    info = client.get("/info").json()
    assert info["item_fields"]["topic"]["kind"] == "labels"
    assert info["accepts_items"] and not info["accepts_users"]
    assert set(info["item_modalities"]) == {"text_topic_tfidf", "meta_topic"}
    page = client.get("/")
    assert page.status_code == 200 and "Add a new film" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/users/{user_id}/recommendations"]
    assert client.get("/users?limit=5").json()["users"] == ["0", "1", "2", "3", "4"]


def test_recommendations_match_the_model_and_filters_hold(client):
    service = client.service
    model = service.model
    for user in ("0", "7", "31"):
        got = client.get(f"/users/{user}/recommendations?k=10").json()
        items = [r["item"] for r in got["items"]]
        assert len(items) == 10 and got["fallback"] is None
        u = service.user_pos[user]
        want, want_scores = model.recommend(torch.tensor([u]), k=10, exclude_seen=True)
        np.testing.assert_allclose([r["score"] for r in got["items"]], want_scores[0].numpy(), rtol=1e-4, atol=1e-5)
        seen = {service.item_ids[i] for i in service.seen_items(u)}
        assert not seen & set(items)
        with_seen = client.get(f"/users/{user}/recommendations?k=90&exclude_seen=false").json()["items"]
        assert seen <= {r["item"] for r in with_seen}  # exclude_seen=false keeps them
        for kind in ("warm", "cold"):
            listed = client.get(f"/users/{user}/recommendations?k=50&candidates={kind}").json()["items"]
            assert listed and all((r["kind"] == "warm") == (kind == "warm") for r in listed)


def test_read_errors(client):
    assert client.get("/users/nobody/recommendations").status_code == 404
    assert client.get("/users/0/recommendations?k=0").status_code == 422
    assert client.get("/users/0/recommendations?k=1001").status_code == 422
    assert client.get("/users/0/recommendations?candidates=some").status_code == 422
    assert client.get("/items/nothing/audience").status_code == 404
    assert client.get("/items/nothing").status_code == 404
    assert client.get("/items/nothing/poster").status_code == 404
    assert client.get("/items/0/poster").status_code == 404  # synthetic items have no posters
    assert client.get("/items/0/rank").status_code == 422  # users is required
    assert client.get("/items/0/rank", params={"users": ["nobody"]}).status_code == 404
    assert client.get("/items/0/rank", params={"users": [str(u) for u in range(21)]}).status_code == 422
    assert client.get("/users/nobody").status_code == 404


def test_audience_excludes_users_who_saw_the_item(client):
    service = client.service
    warm = int(np.flatnonzero(service.item_kind == 0)[0])
    item = service.item_ids[warm]
    got = client.get(f"/items/{item}/audience?k=15").json()["users"]
    assert len(got) == 15
    scores = [u["score"] for u in got]
    assert scores == sorted(scores, reverse=True)
    viewers = {service.user_ids[u] for u in np.flatnonzero(service.seen[:, warm].toarray().ravel())}
    assert not viewers & {u["user"] for u in got}
    # the best audience member has the top score of this item among every eligible user
    z = service.user_vecs @ service.item_vecs[warm]
    eligible = [u for u in range(len(z)) if service.user_ids[u] not in viewers and service.user_has_vector[u]]
    assert got[0]["user"] == service.user_ids[max(eligible, key=lambda u: z[u])]


def test_rank_agrees_with_recommendations(client):
    top = client.get("/users/5/recommendations?k=3").json()["items"]
    ranks = client.get(f"/items/{top[0]['item']}/rank", params={"users": ["5"]}).json()["ranks"]
    assert ranks[0]["rank"] == 1
    second = client.get(f"/items/{top[1]['item']}/rank", params={"users": ["5"]}).json()["ranks"][0]
    assert second["rank"] == 2 and second["of"] > 10


def test_metrics_are_prometheus_text(client):
    client.get("/users/0/recommendations")
    client.get("/users/nobody/recommendations")
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert 'coldstart_requests_total{method="GET",route="/users/{user_id}/recommendations",status="200"} 1' in text
    assert 'status="404"' in text
    assert "# TYPE coldstart_request_seconds histogram" in text
    assert 'coldstart_request_seconds_bucket{method="GET",route="/users/{user_id}/recommendations",le="+Inf"} 2' in text
    assert "coldstart_index_items 90" in text


# ---- security ---------------------------------------------------------------------------------------------------

def test_writes_need_the_key(client, serve_run, tmp_path):
    body = {"id": "n1", "labels": {"topic": ["topic1"]}}
    assert post_item(client, body, headers={}).status_code == 401
    assert post_item(client, body, headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 401
    assert post_item(client, body, headers={"Authorization": "Basic " + API_KEY}).status_code == 401
    assert client.post("/interactions", json={"user": "0", "item": "1"}).status_code == 401
    assert client.post("/users", json={"id": "x"}).status_code == 401
    assert post_item(client, body, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 201
    assert client.get("/users/0/recommendations").status_code == 200  # reads are open by default

    from coldstart_serve.app import create_app

    keyless = TestClient(create_app(serve_run, db=tmp_path / "other.db", api_key=None))
    refused = post_item(keyless, {"id": "n2", "labels": {"topic": ["topic1"]}}, headers=KEY)
    assert refused.status_code == 403 and "no API key is configured" in refused.json()["detail"]
    assert keyless.post("/interactions", json={"user": "0", "item": "1"}, headers=KEY).status_code == 403

    guarded = TestClient(create_app(serve_run, db=tmp_path / "g.db", api_key=API_KEY, protect_reads=True))
    assert guarded.get("/users/0/recommendations").status_code == 401
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/users/0/recommendations", headers=KEY).status_code == 200
    assert guarded.get("/health").status_code == 200  # liveness stays open for probes


def test_key_configuration(tmp_path, monkeypatch):
    from coldstart.errors import DataError
    from coldstart_serve.security import read_key

    monkeypatch.delenv("COLDSTART_API_KEY", raising=False)
    assert read_key() is None
    monkeypatch.setenv("COLDSTART_API_KEY", API_KEY)
    assert read_key() == API_KEY
    path = tmp_path / "key"
    path.write_text("file-key-0123456789abc\n")
    assert read_key(path) == "file-key-0123456789abc"
    path.write_text("short\n")
    with pytest.raises(DataError, match="at least 16"):
        read_key(path)
    with pytest.raises(DataError):
        read_key(tmp_path / "absent")


# ---- new items --------------------------------------------------------------------------------------------------

def test_new_item_is_recommendable_at_once_and_equals_its_training_twin(client):
    service = client.service
    cold = int(np.flatnonzero(service.item_kind == 1)[0])
    labels = some_labels(service, cold)
    response = post_item(client, {"id": "twin", "title": "Twin", "labels": {"topic": labels}})
    assert response.status_code == 201, response.text
    assert response.json()["kind"] == "new"
    new = service.item_pos["twin"]
    # the same content gives the same vector as the cold training item (its content tower output)
    np.testing.assert_allclose(service.item_vecs[new], service.item_vecs[cold], rtol=1e-4, atol=1e-5)
    # ... so it is listed with the twin's score, for every user who has seen neither
    for user in ("0", "3"):
        listed = client.get(f"/users/{user}/recommendations?k=200&candidates=cold").json()["items"]
        scores = {r["item"]: r["score"] for r in listed}
        assert scores["twin"] == pytest.approx(scores[service.item_ids[cold]], rel=1e-4, abs=1e-5)
    assert client.get("/items/twin").json() == {"item": "twin", "title": "Twin", "kind": "new", "poster": False,
                                                 "unknown_labels": {}, "missing": [], "seconds": None}
    assert len(client.get("/items/twin/audience?k=5").json()["users"]) == 5


def test_new_item_errors(client):
    ok = {"id": "fine", "labels": {"topic": ["topic2"]}}
    assert post_item(client, ok).status_code == 201
    assert post_item(client, ok).status_code == 409  # the id exists
    assert post_item(client, {**ok, "id": "0"}).status_code == 409  # a training item's id
    assert post_item(client, {**ok, "id": "../etc/passwd"}).status_code == 422
    assert post_item(client, {**ok, "id": "x" * 65}).status_code == 422
    assert post_item(client, {"id": "nocontent"}).status_code == 422
    assert post_item(client, {"id": "badfield", "labels": {"nope": ["a"]}}).status_code == 422
    assert post_item(client, {"id": "badkind", "text": {"topic": "words"}}).status_code == 422
    assert post_item(client, {"id": "extra", "labels": {"topic": ["topic2"]}, "owner": "me"}).status_code == 422
    assert post_item(client, {"id": "vec", "vectors": {"meta_topic": [1.0, 2.0]}}).status_code == 422  # width 8
    assert post_item(client, {"id": "vec2", "vectors": {"unknown": [1.0]}}).status_code == 422
    assert client.post("/items", data={"item": "{not json"}, headers=KEY).status_code == 422
    assert client.post("/items", headers=KEY).status_code == 422
    unknown = post_item(client, {"id": "odd", "labels": {"topic": ["topic1", "never-seen"]}})
    assert unknown.status_code == 201 and unknown.json()["unknown_labels"] == {"topic": ["never-seen"]}
    vector = post_item(client, {"id": "vec3", "vectors": {"meta_topic": [0.0] * 7 + [1.0]}})
    assert vector.status_code == 201, vector.text


def test_posters_are_validated(client):
    body = {"labels": {"topic": ["topic3"]}}
    good = post_item(client, {**body, "id": "p1"}, poster=png_bytes())
    assert good.status_code == 201 and good.json()["poster"]
    got = client.get("/items/p1/poster")
    assert got.status_code == 200 and got.headers["content-type"] == "image/png" and got.content == png_bytes()
    assert post_item(client, {**body, "id": "p2"}, poster=b"\x89PNG\r\n\x1a\n" + b"garbage" * 50).status_code == 400
    assert post_item(client, {**body, "id": "p3"}, poster=b"not an image at all").status_code == 400
    truncated = png_bytes(200, 200)[:500]
    assert post_item(client, {**body, "id": "p4"}, poster=truncated).status_code == 400
    assert post_item(client, {**body, "id": "p5"}, poster=png_bytes(fmt="TIFF"), name="p.tif",
                     media="image/tiff").status_code == 415
    big = png_bytes() + b"\0" * (5 * 1024 * 1024)  # over the 5 MiB poster bound, under the 8 MiB body bound
    assert post_item(client, {**body, "id": "p6"}, poster=big).status_code == 413
    from PIL import Image
    import io

    flat = io.BytesIO()
    Image.new("L", (6000, 6000)).save(flat, format="PNG")  # compresses to a few KB: the pixel bound catches it
    assert len(flat.getvalue()) < 1_000_000
    assert post_item(client, {**body, "id": "p7"}, poster=flat.getvalue()).status_code == 413
    assert post_item(client, {**body, "id": "p8"}, poster=b"").status_code == 400
    assert client.post("/interactions", content=b"x" * (9 * 1024 * 1024), headers={**KEY, "content-type":
                                                                                     "application/json"}).status_code == 413
    assert "p2" not in client.service.item_pos and "p6" not in client.service.item_pos


# ---- users and interactions -----------------------------------------------------------------------------------

def test_users_need_a_cold_user_model(client):
    refused = client.post("/users", json={"id": "newbie"}, headers=KEY)
    assert refused.status_code == 422 and "no representation of new users" in refused.json()["detail"]
    assert client.post("/users", json={"id": "a/b"}, headers=KEY).status_code == 422


def test_users_through_a_model_with_user_embeddings(client):
    service = client.service
    dim = service.user_vecs.shape[1]
    calls = []

    def user_embeddings(features, history=None):
        calls.append((features, history))
        return torch.ones(1, dim)

    service.model.user_embeddings = user_embeddings  # the generic path: any model with this method
    try:
        made = client.post("/users", json={"id": "newbie", "history": ["0", "1"]}, headers=KEY)
        assert made.status_code == 201, made.text
        assert made.json()["kind"] == "new" and {h["item"] for h in made.json()["history"]} == {"0", "1"}
        assert calls[0][1][0].tolist() == [0, 1]
        recs = client.get("/users/newbie/recommendations?k=5").json()["items"]
        assert len(recs) == 5 and not {"0", "1"} & {r["item"] for r in recs}
        np.testing.assert_allclose(recs[0]["score"], float(service.item_vecs.sum(1).max()), rtol=1e-5)
        assert client.post("/users", json={"id": "newbie"}, headers=KEY).status_code == 409
        assert client.post("/users", json={"id": "n2", "history": ["nope"]}, headers=KEY).status_code == 404
    finally:
        del service.model.user_embeddings


def test_interactions_are_kept_and_exclude_the_item(client):
    top = client.get("/users/2/recommendations?k=1").json()["items"][0]["item"]
    made = client.post("/interactions", json={"user": "2", "item": top, "rating": 5, "timestamp": 1700000000},
                       headers=KEY)
    assert made.status_code == 201 and made.json()["seq"] == 1
    assert top not in [r["item"] for r in client.get("/users/2/recommendations?k=5").json()["items"]]
    assert top in [h["item"] for h in client.get("/users/2?limit=1000").json()["history"]]
    assert "2" not in [u["user"] for u in client.get(f"/items/{top}/audience?k=100").json()["users"]]
    assert client.post("/interactions", json={"user": "nobody", "item": top}, headers=KEY).status_code == 404
    assert client.post("/interactions", json={"user": "2", "item": "nothing"}, headers=KEY).status_code == 404
    assert client.post("/interactions", json={"user": "2", "item": top, "rating": "x"}, headers=KEY).status_code == 422
    assert client.post("/interactions", json={"user": "2", "item": top, "timestamp": -1}, headers=KEY).status_code == 422
    assert client.post("/interactions", json={"user": "2"}, headers=KEY).status_code == 422
    kept = client.service.store.interactions()
    assert [(r["user"], r["item"], r["rating"], r["timestamp"]) for r in kept] == [("2", top, 5.0, 1700000000)]


def test_restart_reloads_everything(client, serve_run):
    cold = int(np.flatnonzero(client.service.item_kind == 1)[0])
    assert post_item(client, {"id": "kept", "title": "Kept", "labels": {"topic": some_labels(client.service, cold)}},
                     poster=png_bytes(seed=4)).status_code == 201
    assert client.post("/interactions", json={"user": "1", "item": "kept"}, headers=KEY).status_code == 201
    before = client.get("/users/0/recommendations?k=200&candidates=cold").json()
    client.service.store.close()

    from coldstart_serve.app import create_app

    again = TestClient(create_app(serve_run, db=client.db, api_key=API_KEY))
    assert again.get("/items/kept").json()["title"] == "Kept"
    assert again.get("/items/kept/poster").content == png_bytes(seed=4)
    assert again.get("/users/0/recommendations?k=200&candidates=cold").json() == before
    assert "kept" not in [r["item"] for r in again.get("/users/1/recommendations?k=200").json()["items"]]
    assert again.get("/health").json()["items"] == 91


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    from coldstart.cli import main

    empty = tmp_path / "key"
    empty.write_text("\n")
    cases = ((["serve", str(tmp_path)], "not a finished run directory"),
             (["serve", str(tmp_path), "--index", "lsh"], "unknown index 'lsh'"),
             (["serve", str(tmp_path), "--api-key-file", str(empty)], "the API key file is empty"))
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(args)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.startswith("error: ") and err.count("\n") == 1, err
