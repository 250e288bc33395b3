"""One error type for bad input, so the CLI can turn it into a one-line message and exit code 2."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data: a malformed row, an unknown id, a NaN feature, an empty or missing file.

    The message always names where the problem is (file, line, field) so that a person can fix it.

    Args:
        problem: what is wrong, in a few words.
        path: the file (or folder) concerned, if any.
        line: the 1-based line number in that file, if known.
        field: the column, modality or argument concerned, if any.
    """

    def __init__(
        self,
        problem: str,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        where = []
        if self.path is not None:
            where.append(self.path if line is None else f"{self.path}:{line}")
        elif line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)
