"""SQLite persistence (WAL mode) of what the service learns at run time: new items, new users, interactions.

Every write is one transaction committed before the HTTP response is sent (synchronous=FULL), so a write that
was acknowledged survives a crash of the process (the SIGKILL test) and is reloaded on restart. Interactions
are kept for the next training run and never dropped: `export_interactions` writes them as a CSV that a
bring-your-own-data folder can take.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, title TEXT, content TEXT NOT NULL, vector BLOB NOT NULL, model_key TEXT NOT NULL,
    poster BLOB, poster_type TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, content TEXT NOT NULL, history TEXT NOT NULL, vector BLOB NOT NULL,
    model_key TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS interactions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, item TEXT NOT NULL, rating REAL,
    timestamp INTEGER, created REAL NOT NULL);
"""


class Store:
    """One SQLite database file; thread-safe (one connection behind a lock: writes are short).

    Args:
        path: the database file (created with its folder when absent).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # fsync at every commit: acknowledged means on disk
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: tuple) -> int:
        with self._lock:
            cur = self._db.execute(sql, args)  # autocommit: one statement, one transaction
            return int(cur.lastrowid or 0)

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- items ---------------------------------------------------------------------------------------------
    def add_item(self, item_id: str, title: str | None, content: dict, vector: np.ndarray, model_key: str,
                 poster: bytes | None, poster_type: str | None) -> None:
        """Insert a new item (raises sqlite3.IntegrityError when the id exists)."""
        self._write("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (item_id, title, json.dumps(content), np.asarray(vector, np.float32).tobytes(), model_key,
                     poster, poster_type, time.time()))

    def items(self) -> list[dict]:
        """Every stored item in insertion order (vector as float32 [D])."""
        rows = self._read("SELECT id, title, content, vector, model_key, poster_type FROM items ORDER BY rowid")
        return [{"id": r[0], "title": r[1], "content": json.loads(r[2]), "vector": np.frombuffer(r[3], np.float32),
                 "model_key": r[4], "poster_type": r[5]} for r in rows]

    def update_item_vector(self, item_id: str, vector: np.ndarray, model_key: str) -> None:
        self._write("UPDATE items SET vector = ?, model_key = ? WHERE id = ?",
                    (np.asarray(vector, np.float32).tobytes(), model_key, item_id))

    def poster(self, item_id: str) -> tuple[bytes, str] | None:
        rows = self._read("SELECT poster, poster_type FROM items WHERE id = ?", (item_id,))
        if not rows or rows[0][0] is None:
            return None
        return rows[0][0], rows[0][1]

    # -- users ---------------------------------------------------------------------------------------------
    def add_user(self, user_id: str, content: dict, history: list[str], vector: np.ndarray, model_key: str) -> None:
        self._write("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)",
                    (user_id, json.dumps(content), json.dumps(history), np.asarray(vector, np.float32).tobytes(),
                     model_key, time.time()))

    def users(self) -> list[dict]:
        rows = self._read("SELECT id, content, history, vector, model_key FROM users ORDER BY rowid")
        return [{"id": r[0], "content": json.loads(r[1]), "history": json.loads(r[2]),
                 "vector": np.frombuffer(r[3], np.float32), "model_key": r[4]} for r in rows]

    # -- interactions ------------------------------------------------------------------------------------------
    def add_interaction(self, user: str, item: str, rating: float | None, timestamp: int | None) -> int:
        """Record one interaction; returns its sequence number."""
        return self._write("INSERT INTO interactions (user, item, rating, timestamp, created) VALUES (?, ?, ?, ?, ?)",
                           (user, item, rating, timestamp, time.time()))

    def interactions(self) -> list[dict]:
        rows = self._read("SELECT seq, user, item, rating, timestamp, created FROM interactions ORDER BY seq")
        return [{"seq": r[0], "user": r[1], "item": r[2], "rating": r[3], "timestamp": r[4], "created": r[5]}
                for r in rows]

    def counts(self) -> dict[str, int]:
        return {t: int(self._read(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in ("items", "users", "interactions")}
