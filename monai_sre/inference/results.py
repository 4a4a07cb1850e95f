# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Write prediction rows as CSV (one header line, nested values as JSON text) or JSON (a list of objects).

Files are written under a temporary name in the target folder and renamed, so a reader never sees half a file
and an existing file is replaced only by a complete one.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["write_predictions", "prediction_columns"]


def prediction_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of ``rows`` in first-seen order: the CSV header.

    Args:
        rows: prediction rows.

    Returns:
        the column names.
    """
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value


def write_predictions(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write prediction rows to ``path`` atomically, as CSV or JSON chosen by the suffix.

    Args:
        rows: one mapping per input (see :func:`monai_sre.inference.predict`).
        path: the output file, ending in ``.csv`` or ``.json``; missing parent folders are created.

    Returns:
        the path written.

    Raises:
        ValueError: when the suffix is neither ``.csv`` nor ``.json``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"output {path}: the file name must end in .csv or .json, got {path.suffix or 'no suffix'!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # e.g. "[Errno 17] File exists" for a parent that is a file: say which output and why
        raise OSError(e.errno, f"output {path}: cannot create a file in {path.parent} ({e.strerror or e})") from e
    try:
        with os.fdopen(fd, "w", newline="" if suffix == ".csv" else None, encoding="utf-8") as f:
            if suffix == ".csv":
                writer = csv.DictWriter(f, fieldnames=prediction_columns(rows), restval="")
                writer.writeheader()
                writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
            else:
                json.dump([dict(row) for row in rows], f, indent=2, allow_nan=False)
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
