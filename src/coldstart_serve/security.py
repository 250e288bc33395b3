"""The API key: who may write (and, with protect_reads, read).

The key comes from the environment variable COLDSTART_API_KEY or a file (--api-key-file, first line). A
request sends it as `X-API-Key: KEY` or `Authorization: Bearer KEY`; it is compared in constant time
(hmac.compare_digest). Without a configured key every write is refused (403): a service that anyone on the
network could write to is never the default.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from fastapi import HTTPException, Request

from coldstart.errors import DataError

ENV = "COLDSTART_API_KEY"
MIN_LENGTH = 16


def read_key(path: str | Path | None = None, environ: dict | None = None) -> str | None:
    """The configured key: the file's first line when a path is given, else $COLDSTART_API_KEY, else None.

    Raises:
        DataError: an unreadable or empty key file, or a key shorter than 16 characters.
    """
    environ = os.environ if environ is None else environ
    if path is not None:
        try:
            key = Path(path).read_text().splitlines()[0].strip() if Path(path).read_text().strip() else ""
        except OSError as exc:
            raise DataError(f"cannot read the API key file ({exc.strerror})", path=path) from exc
        if not key:
            raise DataError("the API key file is empty", path=path)
    else:
        key = (environ.get(ENV) or "").strip()
        if not key:
            return None
    if len(key) < MIN_LENGTH:
        raise DataError(f"the API key must have at least {MIN_LENGTH} characters", field=ENV if path is None else None)
    return key


def presented_key(request: Request) -> str | None:
    """The key a request sends: X-API-Key, or the token of `Authorization: Bearer`."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class KeyGuard:
    """Checks requests against the configured key.

    Args:
        key: the configured key (None: writes are refused).
        protect_reads: require the key on read endpoints too.
    """

    def __init__(self, key: str | None, protect_reads: bool = False) -> None:
        self.key = key
        self.protect_reads = protect_reads

    def _matches(self, request: Request) -> bool:
        given = presented_key(request)
        if given is None or self.key is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.key.encode())

    def check_write(self, request: Request) -> None:
        """Raise 403 when no key is configured, 401 when the request's key is missing or wrong."""
        if self.key is None:
            raise HTTPException(403, "writes are disabled: no API key is configured "
                                     f"(set {ENV} or start with --api-key-file)")
        if not self._matches(request):
            raise HTTPException(401, "missing or wrong API key (send X-API-Key or Authorization: Bearer)",
                                headers={"WWW-Authenticate": "Bearer"})

    def check_read(self, request: Request) -> None:
        """With protect_reads: as check_write; otherwise every read is allowed."""
        if self.protect_reads:
            self.check_write(request)
