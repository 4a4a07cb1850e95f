# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The rotation-robustness report: per-model CSV, summary JSON and the ACC/AUC-against-angle plot.

Every file is written atomically with the user's umask through :mod:`monai_sre.io.files`.
:func:`run_rotation_evaluation` evaluates every model (:mod:`monai_sre.evaluation.robustness`) and writes the report.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import nn

from monai_sre.evaluation.robustness import evaluate_rotations, summarize
from monai_sre.evaluation.rotated_sets import VARIANTS, rotation_transforms
from monai_sre.io import files

__all__ = [
    "CSV_FIELDS",
    "plot_robustness",
    "read_csv",
    "read_metrics",
    "rows_from_csv",
    "run_rotation_evaluation",
    "write_csv",
    "write_json",
]

CSV_FIELDS: tuple[str, ...] = ("name", "kind", "axis", "angle", "acc", "auc", "n", "variant")


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write evaluation rows as CSV, atomically, with a header (:data:`CSV_FIELDS`).

    Args:
        rows: output of :func:`evaluate_rotations`; a row without ``variant`` is written as ``full``.
        path: target file; its folder is created if needed.

    Returns:
        the path written.

    Raises:
        ValueError: when a row lacks one of :data:`CSV_FIELDS`.
    """
    rows = [{"variant": "full", **r} for r in rows]
    for i, r in enumerate(rows):
        missing = [k for k in CSV_FIELDS if k not in r]
        if missing:
            raise ValueError(f"row {i} lacks {missing}; rows must have {list(CSV_FIELDS)}")

    return files.write_csv(path, CSV_FIELDS, ([r[k] for k in CSV_FIELDS] for r in rows))


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a report written by :func:`write_csv` back into evaluation rows, typed as :func:`evaluate_rotations`
    gives them, so that :func:`summarize` of the file equals the summary written beside it.

    Args:
        path: a ``rotation_<model>.csv`` of the report.

    Returns:
        as :func:`rows_from_csv`.

    Raises:
        ValueError: as :func:`rows_from_csv`, naming ``path``.
        OSError: when the file cannot be read.
    """
    with open(path, newline="") as f:
        return rows_from_csv(f, source=str(path))


def read_metrics(path: str | os.PathLike) -> dict[str, float]:
    """Read the ``metrics.csv`` that MONAI's ``MetricsSaver`` writes (one ``name,value`` line per metric, as the
    bundles' evaluation leaves it in ``eval/``).

    Args:
        path: the ``metrics.csv`` file.

    Returns:
        metric name -> value, in file order.

    Raises:
        ValueError: naming ``path`` and the line, when a line is not ``name,value`` with a number as its value.
        OSError: when the file cannot be read.
    """
    metrics: dict[str, float] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(",")
        try:
            if not sep or not name:
                raise ValueError
            metrics[name] = float(value)
        except ValueError:
            raise ValueError(f"{path}, line {number}: expected 'name,value' with a number as the value (MONAI "
                             f"MetricsSaver's metrics.csv), got {line!r}.") from None
    return metrics


def rows_from_csv(lines: Iterable[str], source: str = "rows") -> list[dict[str, Any]]:
    """Type the lines of a rotation report (its header first), e.g. a report kept as text in a results record.

    Args:
        lines: the CSV lines, header :data:`CSV_FIELDS` first (or all but ``variant``: the reports written before
            the disk and control variants, whose rows are all ``full``).
        source: what the lines are, for error messages (a file name).

    Returns:
        one dict per line: ``angle`` a float or ``None`` (flips and cube rotations), ``acc``/``auc`` floats (an
        undefined AUC is NaN), ``n`` an int, the rest strings (``axis`` ``""`` in 2D, as in the rows evaluated).

    Raises:
        ValueError: when the header is not :data:`CSV_FIELDS` or a cell is not a number where one belongs.
    """
    reader = csv.DictReader(lines)
    if tuple(reader.fieldnames or ()) not in (CSV_FIELDS, CSV_FIELDS[:-1]):
        raise ValueError(f"{source}: header must be {list(CSV_FIELDS)} (a rotation report), got {reader.fieldnames}")
    try:
        return [
            {"variant": "full", **r, "angle": float(r["angle"]) if r["angle"] else None,
             "acc": float(r["acc"]), "auc": float(r["auc"] or "nan"), "n": int(r["n"])}
            for r in reader
        ]  # fmt: skip
    except ValueError as e:
        raise ValueError(f"{source}, line {reader.line_num}: {e}; expected numbers in angle, acc, auc, n") from e


def _json_ready(obj: Any) -> Any:
    """Replace NaN/inf by ``None`` (strict JSON has neither) and numpy scalars by Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as strict JSON (NaN becomes ``null``), atomically.

    Args:
        obj: dicts/lists of numbers and strings, e.g. :func:`summarize` outputs.
        path: target file; its folder is created if needed.

    Returns:
        the path written.
    """
    return files.write_json(path, _json_ready(obj))


_PANEL_TITLES = {
    "full": "rotated test set",
    "disk": "inscribed disk (upright and rotated masked)",
    "control": "control: turned by the angle and back",
}


def plot_robustness(
    results: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike | None = None, title: str | None = None
) -> Figure:
    """Plot ACC and AUC against rotation angle for every model: one curve per model (per axis in 3D), one row of
    panels per variant present (``full``, then ``disk`` and ``control``; see :mod:`~monai_sre.evaluation.rotated_sets`).

    Colours tell models apart (matplotlib's 10 default colours, or ``tab20``'s 20 for more models, so that no two
    share one), line styles tell 3D axes apart; one legend below the panels names them, so it hides no curve (with
    a legend in each panel, 11 models of the MedMNIST summary covered half of every AUC panel). The 0° value is
    repeated at 360° to close the turn. Flip and cube rows are not drawn (they are in the CSV and the summary).

    Args:
        results: ``{model name: rows of evaluate_rotations}`` (rows without ``variant`` count as ``full``).
        path: PNG file to write (atomically); ``None`` only returns the figure.
        title: figure title.

    Returns:
        the matplotlib figure (not attached to pyplot, so nothing global is left open); each row of two axes holds
        the ACC and AUC curves of one variant.

    Raises:
        ValueError: when ``results`` is empty or a model has no angle rows.
    """
    if not results:
        raise ValueError("results is empty: give {model name: rows} for at least one model")
    for model_name, rows in results.items():
        if not any(r["kind"] == "angle" for r in rows):
            raise ValueError(f"model {model_name!r} has no 'angle' rows to plot")
    present = [
        v for v in VARIANTS if any(r["kind"] == "angle" and r.get("variant", "full") == v for rs in results.values()
                                   for r in rs)
    ]  # fmt: skip
    fig = Figure(figsize=(11, 0.6 + 3.8 * len(present)), layout="constrained")
    panels = fig.subplots(len(present), 2, squeeze=False)
    styles = {"": "-", "x": "-", "y": "--", "z": ":"}
    colors = [f"C{i}" for i in range(10)] if len(results) <= 10 else [colormaps["tab20"](i) for i in range(20)]
    for (ax_acc, ax_auc), variant in zip(panels, present, strict=True):
        for i, (model_name, rows) in enumerate(results.items()):
            rot = [r for r in rows if r["kind"] == "angle" and r.get("variant", "full") == variant]
            for axis in sorted({r["axis"] for r in rot}):
                curve = sorted((r for r in rot if r["axis"] == axis), key=lambda r: r["angle"])
                if curve[0]["angle"] == 0:
                    curve = curve + [{**curve[0], "angle": 360.0}]
                angles = [r["angle"] for r in curve]
                label = model_name if not axis else f"{model_name}, about {axis}"
                for ax, key in ((ax_acc, "acc"), (ax_auc, "auc")):
                    values = [np.nan if r[key] is None else r[key] for r in curve]
                    ax.plot(angles, values, styles.get(axis, "-"), color=colors[i % len(colors)], marker=".",
                            label=label)
        for ax, name in ((ax_acc, "ACC"), (ax_auc, "AUC")):
            ax.set_xlim(0, 360)
            ax.set_ylim(0, 1)
            ax.set_xticks(range(0, 361, 45))
            ax.set_xlabel("rotation angle (degrees)")
            ax.set_ylabel(name)
            ax.set_title(f"{name}: {_PANEL_TITLES[variant]}")
            ax.grid(True, alpha=0.3)
    handles, labels = panels[0][1].get_legend_handles_labels()
    # two columns of labels fit the 11-inch figure up to about 60 characters each; longer ones get a column each
    # (the MedMNIST summary's 95-character labels ran past both edges of the figure in two columns)
    columns = 1 if max(map(len, labels), default=0) > 60 else 2
    fig.legend(handles, labels, loc="outside lower center", ncols=columns if len(labels) > 4 else len(labels),
               fontsize="small")
    if title:
        fig.suptitle(title)
    if path is not None:
        files.save_figure(fig, path, dpi=120, format="png")
    return fig


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def run_rotation_evaluation(
    models: Mapping[str, nn.Module] | nn.Module,
    data: Any,
    task: str,
    spatial_dims: int,
    out_dir: str | os.PathLike,
    interpolation: str = "bilinear",
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    progress: bool = True,
    title: str | None = None,
    angles: Sequence[float] | None = None,
    variants: Sequence[str] = VARIANTS,
) -> dict[str, dict]:
    """Evaluate every model on the rotated test sets and write the report.

    Writes into ``out_dir``: ``rotation_<model>.csv`` per model, ``rotation_summary.json`` (``{model: summary}``
    plus the settings) and ``rotation_robustness.png`` (all models overlaid, one row of panels per variant). Meant to
    be called from a bundle's ``evaluate.json`` through a ``$`` expression.

    Cost: the model runs once per transform and image, and each of ``disk`` and ``control`` adds one transform per
    angle (and axis): with all three variants the default set is 110 transforms in 2D (38 alone) and 135 in 3D (63
    alone); the control also interpolates twice. Pass ``variants=("full",)`` to skip them.

    Args:
        models: ``{name: network}``; a single network is named ``"model"``. Names become file names:
            letters, digits, ``_``, ``.``, ``-``.
        data: as for :func:`evaluate_rotations` (an ``(images, labels)`` pair or a loader).
        task: MedMNIST task name.
        spatial_dims: 2 or 3.
        out_dir: report folder, created if needed.
        interpolation: ``"bilinear"`` or ``"nearest"``.
        device: where the models run.
        batch_size: batch size when ``data`` is a pair of tensors.
        progress: show progress bars.
        title: plot title; default names the task and interpolation.
        angles: rotation angles in degrees; ``None`` gives the defaults of :func:`rotation_transforms`.
        variants: which of :data:`~monai_sre.evaluation.rotated_sets.VARIANTS` to evaluate, ``"full"`` among them;
            default all three: the rotated test set, the inscribed disk and the turn-and-back control.

    Returns:
        ``{model name: summarize(rows)}``.

    Raises:
        ValueError: for no models, a model name unfit for a file name, unknown variants, or the errors of
            :func:`evaluate_rotations`.
    """
    if isinstance(models, nn.Module):
        models = {"model": models}
    if not models:
        raise ValueError("models is empty: give {name: network} for at least one model")
    bad = [n for n in models if not _NAME.match(n)]
    if bad:
        raise ValueError(f"model names must be letters, digits, '_', '.', '-' (they name files), got {bad}")
    transforms = rotation_transforms(spatial_dims, angles=angles, interpolation=interpolation, variants=variants)
    out_dir = Path(out_dir)
    results, summaries = {}, {}
    for name, model in models.items():
        try:
            rows = evaluate_rotations(
                model, data, task, spatial_dims, transforms, device=device, progress=progress, batch_size=batch_size
            )
        except ValueError as e:
            raise ValueError(f"model {name!r}: {e}") from e
        results[name], summaries[name] = rows, summarize(rows)
    # Written only once every model is evaluated, so a failure never leaves a report mixing old and new files.
    for name, rows in results.items():
        write_csv(rows, out_dir / f"rotation_{name}.csv")
    write_json(
        {
            "task": task,
            "spatial_dims": spatial_dims,
            "interpolation": interpolation,
            "variants": [v for v in VARIANTS if v in variants],
            "models": summaries,
        },
        out_dir / "rotation_summary.json",
    )
    plot_robustness(
        results, out_dir / "rotation_robustness.png", title=title or f"Rotation robustness ({task}, {interpolation})"
    )
    return summaries
