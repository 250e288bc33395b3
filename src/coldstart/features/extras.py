"""Optional dependencies: import them on first use, or say which extra installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from coldstart.errors import DataError


class MissingExtraError(DataError):
    """An optional dependency is not installed; the message gives the pip command that installs it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise MissingExtraError naming the extra that provides it.

    Args:
        module: the import name, e.g. "sentence_transformers".
        extra: the coldstart extra that installs it, e.g. "text".
        purpose: what needs it, for the message, e.g. "sentence embeddings".
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{purpose} need the optional package {module!r}: pip install 'coldstart[{extra}]'",
                                field=extra) from None
