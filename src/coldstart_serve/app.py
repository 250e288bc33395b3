"""The FastAPI app over a trained run: recommendations, new items and users without retraining, feedback.

`create_app(run_dir)` loads the run (model, split id maps, fitted feature presets), builds the FAISS index over
the model's item vectors (`inference_vectors()`: what `model.score` ranks by) and reloads what earlier
processes added (store.py). Endpoints are listed in docs/serving.md and in the generated OpenAPI schema
(/docs, /openapi.json).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import scipy.sparse as sp
import torch
from fastapi import Depends, FastAPI, File, Form, HTTPException, Path as PathParam, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from coldstart.data.modalities import Image as ImageModality
from coldstart.data.modalities import Text
from coldstart.errors import DataError
from coldstart_serve import schemas
from coldstart_serve.index import ItemIndex
from coldstart_serve.metrics import Metrics
from coldstart_serve.security import KeyGuard, read_key
from coldstart_serve.store import Store

log = logging.getLogger("coldstart")

STATIC = Path(__file__).parent / "static"
#: Bounds on what a client may send.
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_POSTER_BYTES = 5 * 1024 * 1024
MAX_POSTER_PIXELS = 25_000_000
POSTER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
                  "BMP": "image/bmp"}
_UNSET = object()
PathId = Annotated[str, PathParam(min_length=1, max_length=128)]
KIND_NAMES = ("warm", "cold", "new")


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before the app reads it all."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(send, self.limit)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(send, self.limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _sniff(data: bytes) -> str:
    """The image MIME type from magic bytes (dataset posters carry no type)."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"GIF8"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    return "image/jpeg"


def check_poster(data: bytes) -> str:
    """Validate uploaded poster bytes: size, a known format, pixel count, a full decode. Returns its MIME type.

    Raises:
        HTTPException: 413 when too large (bytes or pixels), 415 for an unsupported format, 400 when unreadable.
    """
    if len(data) > MAX_POSTER_BYTES:
        raise HTTPException(413, f"poster over {MAX_POSTER_BYTES} bytes")
    if not data:
        raise HTTPException(400, "empty poster file")
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data)) as img:  # reads the header only
            fmt = img.format
            width, height = img.size
            if fmt not in POSTER_FORMATS:
                raise HTTPException(415, f"unsupported image format {fmt} (use {', '.join(POSTER_FORMATS)})")
            if width * height > MAX_POSTER_PIXELS:
                raise HTTPException(413, f"poster of {width}x{height} pixels is over {MAX_POSTER_PIXELS} pixels")
            img.load()  # a full decode: truncated or corrupt data fails here, not in the encoder
    except HTTPException:
        raise
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, struct.error ...)
        raise HTTPException(400, f"unreadable image ({type(exc).__name__})") from None
    return POSTER_FORMATS[fmt]


def takes_features(model, method: str) -> bool:
    """Whether the model has `method(features, ...)`: a dict of modalities in, vectors out (the content path).

    Some models name a method alike over indices of known entities (MeLU's user_embeddings(users)); those do
    not embed a new entity.
    """
    fn = getattr(model, method, None)
    if fn is None:
        return False
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] == "features"


class Service:
    """The loaded run and everything added since; every public method is thread-safe.

    Args:
        run_dir: a finished run directory (model/, split/, config.json; features/ from runs written since
            fitted presets are saved, refitted from the dataset otherwise).
        index: "exact", "ivf" or "hnsw".
        db: the SQLite file (default RUN_DIR/serve/serve.db).
        load_data: load the run's dataset for titles, posters and histories (off: ids only).
    """

    def __init__(self, run_dir: str | Path, index: str = "exact", db: str | Path | None = None,
                 load_data: bool = True) -> None:
        from coldstart.data.splits import Split
        from coldstart.features.fitted import load_or_fit
        from coldstart.models.base import Recommender

        run = Path(run_dir)
        for need in ("config.json", "model/config.json", "split/meta.json"):
            if not (run / need).exists():
                raise DataError(f"not a finished run directory (no {need})", path=run)
        self.run_dir = run
        self.config = json.loads((run / "config.json").read_text())
        self.model = Recommender.load(run / "model")
        self.model.eval()
        if not hasattr(self.model, "inference_vectors"):
            raise DataError(f"{self.model.name} does not score by user / item vectors, so it cannot be served "
                            "from a vector index (serve an embedding model such as clcrec)", field="model")
        split = Split.load(run / "split")
        self.dataset = None
        if load_data:
            try:
                from coldstart.data.loaders import load_dataset

                self.dataset = load_dataset(self.config["dataset"], **self.config.get("data", {}))
            except (DataError, OSError) as exc:
                log.warning("serving without the dataset (no titles, posters or refit of presets): %s", exc)
        if self.dataset is not None and list(self.dataset.item_ids) != list(split.item_ids):
            split = Split.load(run / "split", dataset=self.dataset)
        self.fitted = None
        try:
            self.fitted = load_or_fit(run, None if self.dataset is None else (lambda: self.dataset))
        except DataError as exc:
            log.warning("new items take precomputed vectors only: %s", exc)
        self.model_key = self._model_key(run / "model" / "model.pt")
        z_users, z_items = self.model.inference_vectors()  # [U, D], [I, D]
        if z_users.shape[0] != len(split.user_ids) or z_items.shape[0] != len(split.item_ids):
            raise DataError("the model and the split have different sizes", path=run)
        self.user_ids: list[str] = [str(u) for u in split.user_ids]
        self.item_ids: list[str] = [str(i) for i in split.item_ids]
        self.user_pos = {u: k for k, u in enumerate(self.user_ids)}
        self.item_pos = {i: k for k, i in enumerate(self.item_ids)}
        self.user_vecs = z_users.float().numpy().copy()
        self.item_vecs = z_items.float().numpy().copy()
        warm = self.model.warm_items_.numpy() if hasattr(self.model, "warm_items_") else split.train_item_mask()
        self.item_kind = np.where(warm, 0, 1).astype(np.int8)  # 0 warm, 1 cold (in the split), 2 new
        indptr, indices = self.model.seen_indptr_.numpy(), self.model.seen_indices_.numpy()
        self.seen = sp.csr_matrix((np.ones(len(indices), bool), indices, indptr),
                                  shape=(len(self.user_ids), len(self.item_ids)))
        self.seen_by_item = self.seen.tocsc()
        counts = np.diff(indptr)
        # Users without training interactions have no learnt vector unless the model declares one.
        self.user_has_vector = (counts > 0) if self.model.cold_users == "none" else np.ones(len(counts), bool)
        self.user_kind = np.where(counts > 0, 0, 1).astype(np.int8)
        self.popularity = np.bincount(indices, minlength=len(self.item_ids)).astype(np.float32)
        self.runtime_seen: dict[int, set[int]] = {}  # user -> items recorded at run time
        self.runtime_viewers: dict[int, set[int]] = {}  # item -> users, the same pairs
        self.titles = self._titles()
        self.posters = self._posters()
        self.item_extra_titles: dict[int, str] = {}
        self.index_kind = index
        self.index = ItemIndex(self.item_vecs, index)
        self._write_lock = threading.Lock()
        self._embed_lock = threading.Lock()
        self.store = Store(db or run / "serve" / "serve.db")
        if self.fitted is not None and hasattr(self.model, "spec_"):
            self.fitted.warm_up("item", list(self.model.spec_.names))  # the first POST /items pays no model load
        self._reload()

    # -- loading -----------------------------------------------------------------------------------------------
    @staticmethod
    def _model_key(path: Path) -> str:
        """Identifies the model file: stored vectors from another model are recomputed, never reused."""
        stat = path.stat()
        return hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]

    def _titles(self) -> list[str | None] | None:
        mod = None if self.dataset is None else self.dataset.item_features.get("title")
        return list(mod.texts) if isinstance(mod, Text) else None

    def _posters(self) -> ImageModality | None:
        if self.dataset is None:
            return None
        images = [m for m in self.dataset.item_features.values() if isinstance(m, ImageModality)]
        return images[0] if images else None

    def _reload(self) -> None:
        """Add what earlier processes stored: items (re-embedded if the model changed), users, interactions."""
        for row in self.store.items():
            vector = row["vector"]
            if row["model_key"] != self.model_key:
                log.warning("item %s was embedded by another model file: re-embedding it", row["id"])
                poster = self.store.poster(row["id"])
                try:
                    vector, _ = self._embed_item(schemas.ItemIn.model_validate(row["content"]),
                                                 None if poster is None else poster[0])
                    self.store.update_item_vector(row["id"], vector, self.model_key)
                except (HTTPException, DataError, ValidationError) as exc:
                    detail = getattr(exc, "detail", exc)
                    log.error("item %s could not be re-embedded (%s): its stored vector is kept", row["id"], detail)
                    vector = row["vector"]
                if len(vector) != self.item_vecs.shape[1]:
                    log.error("item %s has a %d-d vector, the model %d-d: left out of the index", row["id"],
                              len(vector), self.item_vecs.shape[1])
                    continue
            self._append_item(row["id"], row["title"], vector)
        for row in self.store.users():
            if row["model_key"] != self.model_key:
                log.warning("user %s was embedded by another model file; its stored vector is kept", row["id"])
            if len(row["vector"]) != self.user_vecs.shape[1]:
                log.error("user %s has a %d-d vector, the model %d-d: left out", row["id"], len(row["vector"]),
                          self.user_vecs.shape[1])
                continue
            self._append_user(row["id"], row["vector"])
        for row in self.store.interactions():
            u, i = self.user_pos.get(row["user"]), self.item_pos.get(row["item"])
            if u is not None and i is not None:
                self._record(u, [i])
        counts = self.store.counts()
        if any(counts.values()):
            log.info("reloaded from %s: %s", self.store.path, counts)

    # -- growing -------------------------------------------------------------------------------------------
    def _append_item(self, item_id: str, title: str | None, vector: np.ndarray) -> int:
        pos = int(self.index.add(vector[None, :])[0])
        if pos != len(self.item_ids):
            raise RuntimeError("index and item list out of step")
        self.item_vecs = np.concatenate([self.item_vecs, vector[None, :].astype(np.float32)])
        self.item_kind = np.concatenate([self.item_kind, np.array([2], np.int8)])
        self.popularity = np.concatenate([self.popularity, np.zeros(1, np.float32)])
        if title:
            self.item_extra_titles[pos] = title
        self.item_ids.append(item_id)
        self.item_pos[item_id] = pos  # last: the item is visible once everything about it is in place
        return pos

    def _append_user(self, user_id: str, vector: np.ndarray) -> int:
        self.user_vecs = np.concatenate([self.user_vecs, vector[None, :].astype(np.float32)])
        self.user_has_vector = np.concatenate([self.user_has_vector, [True]])
        self.user_kind = np.concatenate([self.user_kind, np.array([2], np.int8)])
        self.user_ids.append(user_id)
        self.user_pos[user_id] = len(self.user_ids) - 1
        return self.user_pos[user_id]

    def _record(self, u: int, items: list[int]) -> None:
        """Remember interactions made at run time (both directions); callers hold the write lock or are loading."""
        self.runtime_seen.setdefault(u, set()).update(items)
        for i in items:
            self.runtime_viewers.setdefault(i, set()).add(u)

    # -- reading -------------------------------------------------------------------------------------------
    def title(self, pos: int) -> str | None:
        if pos in self.item_extra_titles:
            return self.item_extra_titles[pos]
        if self.titles is not None and pos < len(self.titles):
            return self.titles[pos] or None
        return None

    def seen_items(self, u: int) -> np.ndarray:
        """Item positions the user interacted with: training plus interactions recorded at run time."""
        trained = self.seen.indices[self.seen.indptr[u]:self.seen.indptr[u + 1]] if u < self.seen.shape[0] else \
            np.zeros(0, np.int64)
        extra = self.runtime_seen.get(u)
        return trained if not extra else np.union1d(trained, np.array(list(extra), np.int64))

    def candidate_mask(self, candidates: str, n: int) -> np.ndarray:
        kinds = self.item_kind[:n]
        if candidates == "warm":
            return kinds == 0
        if candidates == "cold":
            return kinds > 0
        return np.ones(n, bool)

    def scored(self, positions: np.ndarray, scores: np.ndarray) -> list[schemas.Scored]:
        return [schemas.Scored(item=self.item_ids[p], score=float(s), title=self.title(int(p)),
                               kind=KIND_NAMES[self.item_kind[p]])
                for p, s in zip(positions.tolist(), scores.tolist()) if p >= 0]

    def recommend(self, user: str, k: int, exclude_seen: bool, candidates: str) -> schemas.Recommendations:
        u = self.user_pos.get(user)
        if u is None:
            raise HTTPException(404, f"unknown user {user!r}")
        n = len(self.item_ids)
        allowed = self.candidate_mask(candidates, n)
        if exclude_seen:
            allowed[self.seen_items(u)] = False
        fallback = None
        if self.user_has_vector[u]:
            # `allowed` covers the n items visible now; one added meanwhile is not listed (index.py pads with False)
            ids, scores = self.index.search(self.user_vecs[u], k, allowed)
            ids, scores = ids[0], scores[0]
        else:  # the model's documented rule for users without a representation (base.rank_scores)
            fallback = "popularity: the model has no representation of users without training interactions"
            pop = np.where(allowed, self.popularity[:n], -np.inf)
            ids = np.argsort(-pop, kind="stable")[:k]
            ids, scores = ids[np.isfinite(pop[ids])], pop[ids][np.isfinite(pop[ids])]
        return schemas.Recommendations(user=user, k=k, candidates=candidates, exclude_seen=exclude_seen,
                                       fallback=fallback, items=self.scored(ids, scores))

    def audience(self, item: str, k: int) -> schemas.Audience:
        i = self._item(item)
        n = len(self.user_ids)  # a consistent view: a user being added is appended to user_ids last
        scores = self.user_vecs[:n] @ self.item_vecs[i]  # [U]
        eligible = self.user_has_vector[:n].copy()
        if i < self.seen_by_item.shape[1]:
            eligible[self.seen_by_item.indices[self.seen_by_item.indptr[i]:self.seen_by_item.indptr[i + 1]]] = False
        viewers = list(self.runtime_viewers.get(i, ()))
        if viewers:
            eligible[np.array(viewers, np.int64)] = False
        scores = np.where(eligible, scores, -np.inf)
        k_eff = min(k, int(eligible.sum()))
        top = np.argpartition(-scores, k_eff - 1)[:k_eff] if k_eff else np.zeros(0, np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        return schemas.Audience(item=item, k=k, users=[schemas.AudienceUser(user=self.user_ids[u], score=float(scores[u]))
                                                       for u in top.tolist()])

    def ranks(self, item: str, users: list[str]) -> schemas.Ranks:
        i = self._item(item)
        out = []
        for user in users:
            u = self.user_pos.get(user)
            if u is None:
                raise HTTPException(404, f"unknown user {user!r}")
            scores = self.item_vecs @ self.user_vecs[u]  # [I]
            allowed = np.ones(len(scores), bool)
            seen = self.seen_items(u)
            allowed[seen] = False
            rank = int((scores[allowed] > scores[i]).sum()) + 1 if allowed[i] else None
            out.append(schemas.Rank(user=user, rank=rank, of=int(allowed.sum()), score=float(scores[i])))
        return schemas.Ranks(item=item, ranks=out)

    def _item(self, item: str) -> int:
        i = self.item_pos.get(item)
        if i is None:
            raise HTTPException(404, f"unknown item {item!r}")
        return i

    def user_history(self, user: str, limit: int) -> schemas.UserOut:
        u = self.user_pos.get(user)
        if u is None:
            raise HTTPException(404, f"unknown user {user!r}")
        seen = self.seen_items(u)[:limit]
        return schemas.UserOut(user=user, kind=KIND_NAMES[self.user_kind[u]],
                               history=self.scored(seen, self.item_vecs[seen] @ self.user_vecs[u]))

    def poster(self, item: str) -> tuple[bytes, str] | None:
        i = self._item(item)
        if self.item_kind[i] == 2:
            return self.store.poster(item)
        if self.posters is None or i >= self.posters.n_rows:
            return None
        try:
            data = self.posters.read_bytes(i)
        except (OSError, KeyError):
            return None
        return None if data is None else (data, _sniff(data))

    def info(self) -> dict:
        model = self.model
        names = list(getattr(getattr(model, "spec_", None), "names", []) or [])
        fields = {} if self.fitted is None else self.fitted.inputs("item", names or None)
        # long label lists (ml-1m's actors) are typed, not ticked: the page gets their size only
        fields = {name: (d if d["kind"] != "labels" or len(d["vocabulary"]) <= 200
                         else {"kind": "labels", "vocabulary_size": len(d["vocabulary"])}) for name, d in fields.items()}
        needs_vector = [] if self.fitted is None else [p.name for p in self.fitted.presets
                                                       if p.side == "item" and p.needs_vector and p.name in names]
        dims = dict(zip(names, getattr(model.spec_, "dims", []))) if names else {}
        return {"run": self.run_dir.name, "dataset": self.config["dataset"], "model": model.name,
                "index": self.index_kind, "items": len(self.item_ids), "users": len(self.user_ids),
                "new_items": int((self.item_kind == 2).sum()), "accepts_items": takes_features(model, "item_embeddings"),
                "accepts_users": takes_features(model, "user_embeddings"), "cold_users": model.cold_users,
                "item_fields": fields, "item_modalities": dims, "needs_vector": needs_vector,
                "titles": self.titles is not None, "posters": self.posters is not None}

    # -- writing -------------------------------------------------------------------------------------------
    def _embed_item(self, item: schemas.ItemIn, poster: bytes | None) -> tuple[np.ndarray, dict]:
        model = self.model
        if not takes_features(model, "item_embeddings"):
            raise HTTPException(422, f"{model.name} has no content tower (cold_items={model.cold_items!r}): it "
                                     "cannot embed a new item; serve a content model such as clcrec")
        names = list(model.spec_.names)
        vectors = {k: np.asarray(v, np.float32) for k, v in item.vectors.items()}
        if self.fitted is None:
            features = {}
            for name, vec in vectors.items():
                from coldstart.data.modalities import Dense

                features[name] = Dense(vec[None, :])
            report = {"unknown_labels": {}, "missing": []}
        else:
            raw_item = self.fitted.raw.get("item", {})
            text = dict(item.text)
            if item.title and "title" in raw_item and raw_item["title"]["kind"] == "text" and "title" not in text:
                text["title"] = item.title  # the display title is the title content too, where the data has one
            images = {}
            image_fields = [n for n, d in raw_item.items() if d["kind"] == "image"]
            if poster is not None and image_fields:
                images[image_fields[0]] = poster
            row = {"text": text, "labels": item.labels, "numbers": item.numbers, "images": images}
            features, report = self.fitted.transform("item", [row], names=names, vectors=vectors)
            used = self.fitted.inputs("item", names)
            given = {n for part in row.values() for n, v in part.items() if v not in ("", [], None)}
            if not (given & set(used)) and not (set(vectors) & set(names)):
                raise HTTPException(422, f"no content for the model: give some of {', '.join(sorted(used))} "
                                         f"(or a vector for {', '.join(names)}); GET /info lists the fields")
        if not any(name in features for name in names):
            raise HTTPException(422, f"no content for any of the model's modalities ({', '.join(names)}); "
                                     "GET /info lists the fields this run takes")
        with self._embed_lock, torch.no_grad():
            vector = model.item_embeddings(features)[0].float().numpy()
        if not np.isfinite(vector).all():
            raise HTTPException(422, "the content gave a non-finite vector")
        return vector, report

    def add_item(self, item: schemas.ItemIn, poster: bytes | None, poster_type: str | None) -> schemas.ItemOut:
        start = time.perf_counter()
        if item.id in self.item_pos:
            raise HTTPException(409, f"item {item.id!r} exists")
        try:
            vector, report = self._embed_item(item, poster)
        except DataError as exc:
            raise HTTPException(422, str(exc)) from None
        content = item.model_dump()
        with self._write_lock:
            if item.id in self.item_pos:
                raise HTTPException(409, f"item {item.id!r} exists")
            try:
                self.store.add_item(item.id, item.title, content, vector, self.model_key, poster, poster_type)
            except sqlite3.IntegrityError:
                raise HTTPException(409, f"item {item.id!r} exists") from None
            self._append_item(item.id, item.title, vector)
        return schemas.ItemOut(item=item.id, title=item.title, kind="new", poster=poster is not None,
                               unknown_labels=report["unknown_labels"], missing=report["missing"],
                               seconds=round(time.perf_counter() - start, 4))

    def add_user(self, user: schemas.UserIn) -> schemas.UserOut:
        model = self.model
        if not takes_features(model, "user_embeddings"):
            why = "no representation of new users" if model.cold_users == "none" else \
                "a representation of users from attributes only inside its training data"
            raise HTTPException(422, f"{model.name} has {why} (cold_users={model.cold_users!r}; no "
                                     "user_embeddings(features) method): serve a model with one to add users")
        if user.id in self.user_pos:
            raise HTTPException(409, f"user {user.id!r} exists")
        missing = [i for i in user.history if i not in self.item_pos]
        if missing:
            raise HTTPException(404, f"unknown item {missing[0]!r} in history")
        history = torch.tensor([self.item_pos[i] for i in user.history], dtype=torch.int64)
        try:
            features: dict = {}
            vectors = {k: np.asarray(v, np.float32) for k, v in user.vectors.items()}
            if self.fitted is not None:
                row = {"text": user.text, "labels": user.labels, "numbers": user.numbers}
                features, _ = self.fitted.transform("user", [row], vectors=vectors)
            params = inspect.signature(model.user_embeddings).parameters
            with self._embed_lock, torch.no_grad():
                out = model.user_embeddings(features, history=[history]) if "history" in params else \
                    model.user_embeddings(features)
            vector = np.asarray(out[0].float().numpy() if isinstance(out, torch.Tensor) else out[0], np.float32)
        except DataError as exc:
            raise HTTPException(422, str(exc)) from None
        if vector.shape != (self.user_vecs.shape[1],) or not np.isfinite(vector).all():
            raise HTTPException(422, f"the model gave a user vector of shape {vector.shape}, expected "
                                     f"({self.user_vecs.shape[1]},) and finite")
        with self._write_lock:
            if user.id in self.user_pos:
                raise HTTPException(409, f"user {user.id!r} exists")
            self.store.add_user(user.id, user.model_dump(exclude={"id", "history"}), list(user.history), vector,
                                self.model_key)
            u = self._append_user(user.id, vector)
            if len(history):
                self._record(u, history.tolist())
        return self.user_history(user.id, 200)

    def add_interaction(self, body: schemas.InteractionIn) -> schemas.InteractionOut:
        u, i = self.user_pos.get(body.user), self.item_pos.get(body.item)
        if u is None:
            raise HTTPException(404, f"unknown user {body.user!r}")
        if i is None:
            raise HTTPException(404, f"unknown item {body.item!r}")
        with self._write_lock:
            seq = self.store.add_interaction(body.user, body.item, body.rating, body.timestamp)
            self._record(u, [i])
        return schemas.InteractionOut(seq=seq, user=body.user, item=body.item)


def create_app(run_dir: str | Path, index: str = "exact", db: str | Path | None = None, api_key=_UNSET,
               protect_reads: bool = False, load_data: bool = True) -> FastAPI:
    """The FastAPI app serving one run.

    Args:
        run_dir: the run directory.
        index: "exact" (default), "ivf" or "hnsw".
        db: the SQLite file of run-time additions (default RUN_DIR/serve/serve.db).
        api_key: the write key (default: $COLDSTART_API_KEY; None: writes refused).
        protect_reads: require the key on read endpoints too.
        load_data: load the dataset for titles, posters and histories.
    """
    service = Service(run_dir, index=index, db=db, load_data=load_data)
    guard = KeyGuard(read_key() if api_key is _UNSET else api_key, protect_reads)
    metrics = Metrics({
        "coldstart_index_items": ("Items in the index (trained plus added).", lambda: len(service.item_ids)),
        "coldstart_users": ("Users known (trained plus added).", lambda: len(service.user_ids)),
        "coldstart_new_items": ("Items added at run time.", lambda: int((service.item_kind == 2).sum())),
    })
    app = FastAPI(title="coldstart", version="0.1.0",
                  description=f"Cold-start recommendations from run {Path(run_dir).name}: "
                              f"{service.model.name} on {service.config['dataset']}.")
    app.state.service = service

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def read_access(request: Request) -> None:
        guard.check_read(request)

    def write_access(request: Request) -> None:
        guard.check_write(request)

    reads = [Depends(read_access)]
    writes = [Depends(write_access)]
    auth_errors = {401: {"description": "missing or wrong API key"},
                   403: {"description": "writes disabled: no API key configured"}}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health", response_model=schemas.Health)
    async def health() -> schemas.Health:
        return schemas.Health(status="ok", model=service.model.name, dataset=service.config["dataset"],
                              index=service.index_kind, items=len(service.item_ids), users=len(service.user_ids))

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=reads, responses=auth_errors)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/info", dependencies=reads, responses=auth_errors)
    async def info() -> dict:
        """The run, and the content fields POST /items takes (the web page builds its form from this)."""
        return service.info()

    @app.get("/users", dependencies=reads, responses=auth_errors)
    async def list_users(limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict:
        """Some user ids (for pickers), in index order; new users last."""
        return {"total": len(service.user_ids), "users": service.user_ids[offset:offset + limit]}

    @app.get("/users/{user_id}", response_model=schemas.UserOut, dependencies=reads,
             responses={404: {"description": "unknown user"}, **auth_errors})
    async def user(user_id: PathId,
             limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> schemas.UserOut:
        """A user's history: training interactions, then interactions recorded at run time."""
        return service.user_history(user_id, limit)

    @app.get("/users/{user_id}/recommendations", response_model=schemas.Recommendations, dependencies=reads,
             responses={404: {"description": "unknown user"}, **auth_errors})
    async def recommendations(user_id: PathId,
                        k: Annotated[int, Query(ge=1, le=1000)] = 10,
                        exclude_seen: bool = True,
                        candidates: Literal["all", "warm", "cold"] = "all") -> schemas.Recommendations:
        """Top-k items for a user: raw ids, scores (the model's own), titles where the dataset has them.

        `candidates`: warm = items with training interactions, cold = the split's cold items and items added
        at run time. `exclude_seen` drops training interactions and interactions recorded since.
        """
        return service.recommend(user_id, k, exclude_seen, candidates)

    @app.get("/items/{item_id}", response_model=schemas.ItemOut, dependencies=reads,
             responses={404: {"description": "unknown item"}, **auth_errors})
    async def item(item_id: PathId) -> schemas.ItemOut:
        i = service._item(item_id)
        has_poster = service.item_kind[i] == 2 and service.store.poster(item_id) is not None or \
            service.item_kind[i] != 2 and service.posters is not None and i < service.posters.n_rows and \
            service.posters.refs[i] is not None
        return schemas.ItemOut(item=item_id, title=service.title(i), kind=KIND_NAMES[service.item_kind[i]],
                               poster=bool(has_poster))

    @app.get("/items/{item_id}/poster", dependencies=reads, response_class=Response,
             responses={200: {"content": {"image/*": {}}}, 404: {"description": "no poster"}, **auth_errors})
    def poster(item_id: PathId) -> Response:
        """The item's poster: the dataset's image, or the one uploaded with the item."""
        found = service.poster(item_id)
        if found is None:
            raise HTTPException(404, f"no poster for item {item_id!r}")
        return Response(found[0], media_type=found[1], headers={"Cache-Control": "max-age=3600"})

    @app.get("/items/{item_id}/audience", response_model=schemas.Audience, dependencies=reads,
             responses={404: {"description": "unknown item"}, **auth_errors})
    async def audience(item_id: PathId,
                 k: Annotated[int, Query(ge=1, le=1000)] = 10) -> schemas.Audience:
        """The k users most likely to adopt the item (highest z_u . v_i) among those who have not seen it."""
        return service.audience(item_id, k)

    @app.get("/items/{item_id}/rank", response_model=schemas.Ranks, dependencies=reads,
             responses={404: {"description": "unknown item or user"}, **auth_errors})
    async def rank(item_id: PathId,
             users: Annotated[list[str], Query(min_length=1, max_length=20,
                                               description="raw user ids (1-20)")]) -> schemas.Ranks:
        """Where the item would rank in each user's list of unseen items (1 = first)."""
        return service.ranks(item_id, users)

    @app.post("/items", status_code=201, response_model=schemas.ItemOut, dependencies=writes,
              responses={400: {"description": "unreadable poster"}, 409: {"description": "the id exists"},
                         413: {"description": "body or poster too large"}, 415: {"description": "image format"},
                         422: {"description": "invalid item or content"}, **auth_errors})
    def add_item(item: Annotated[str, Form(max_length=200_000, description="the item as JSON (ItemIn schema: id, "
                                           "title, text, labels, numbers, vectors)")],
                 poster: Annotated[UploadFile | None, File(description="poster image (JPEG, PNG, GIF, WEBP, BMP)")]
                 = None) -> schemas.ItemOut:
        """Add a new item from its content; it is in the index (recommendable) when this returns."""
        try:
            parsed = schemas.ItemIn.model_validate_json(item)
        except ValidationError as exc:
            raise HTTPException(422, json.loads(exc.json(include_url=False, include_input=False))) from None
        data, media = None, None
        if poster is not None:
            data = poster.file.read(MAX_POSTER_BYTES + 1)
            if data or poster.filename:
                media = check_poster(data)
            else:
                data = None
        return service.add_item(parsed, data, media)

    @app.post("/users", status_code=201, response_model=schemas.UserOut, dependencies=writes,
              responses={404: {"description": "unknown item in history"}, 409: {"description": "the id exists"},
                         422: {"description": "the model has no cold-user representation, or invalid content"},
                         **auth_errors})
    def add_user(user: schemas.UserIn) -> schemas.UserOut:
        """Add a new user from attributes (and an optional history), for models with a cold-user representation."""
        return service.add_user(user)

    @app.post("/interactions", status_code=201, response_model=schemas.InteractionOut, dependencies=writes,
              responses={404: {"description": "unknown user or item"}, **auth_errors})
    def add_interaction(body: schemas.InteractionIn) -> schemas.InteractionOut:
        """Record feedback for the next training run (stored, never dropped); later lists exclude the item."""
        return service.add_interaction(body)

    return _with_limit(app, metrics)


class Observe:
    """ASGI middleware: request counts and latency per route template into `metrics`, and a nosniff header.

    Pure ASGI rather than @app.middleware("http"), which wraps every response in a stream and costs a good part
    of a millisecond per request.
    """

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = list(message.get("headers", [])) + [(b"x-content-type-options", b"nosniff")]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")  # set by FastAPI's router on the shared scope dict
            self.metrics.observe(scope["method"], getattr(route, "path", "unmatched"), status,
                                 time.perf_counter() - start)


def _with_limit(app: FastAPI, metrics: Metrics) -> FastAPI:
    """Install the metrics and the body limit (outermost) as middleware, keeping the FastAPI object."""
    app.add_middleware(Observe, metrics=metrics)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    return app
