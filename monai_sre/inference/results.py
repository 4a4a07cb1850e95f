# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Write prediction rows as CSV (one header line, nested values as JSON text) or JSON (a list of objects).

Files are written through :mod:`monai_sre.io.files`: complete or not at all, with the user's umask, and file names
that are not valid UTF-8 written with ``\\xNN`` escapes rather than losing every row.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_sre.io.files import write_csv, write_json

__all__ = ["write_predictions", "prediction_columns", "probability_value"]


def probability_value(p: Any) -> float:
    """A model probability as a row value: the float64 itself, written as the shortest decimal that reads back as it.

    Rounding would merge nearby probabilities and change rank metrics (AUC) computed from the rows; so would float32,
    whose probabilities near 0 and 1 tie (two BreastMNIST test images of the 2D bundle's 0.9.0 weights: 0.999995
    both, and the AUC of the rows was 0.8593 against the evaluation's 0.8592). The bundle evaluation, predict and
    ``run inferring`` all score float64 probabilities (:func:`monai_sre.transforms.class_probabilities`).

    Args:
        p: a probability (tensor element, NumPy or Python number).

    Returns:
        the value as a Python float.
    """
    return float(p)


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


def _csv_value(value: Any) -> Any:
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
        ValueError: when the suffix is neither ``.csv`` nor ``.json``, or a value is NaN or infinite (JSON).
        OSError: naming the output when its folder cannot be created or written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"output {path}: the file name must end in .csv or .json, got {path.suffix or 'no suffix'!r}")
    try:
        if suffix == ".csv":
            columns = prediction_columns(rows)
            return write_csv(path, columns, ([_csv_value(row.get(c)) for c in columns] for row in rows))
        return write_json(path, [dict(row) for row in rows])
    except OSError as e:  # e.g. "[Errno 17] File exists" for a parent that is a file: say which output and why
        raise OSError(e.errno, f"output {path}: cannot create a file in {path.parent} ({e.strerror or e})") from e
