# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Rotation-robustness evaluation: rotated and flipped test sets, per-transform ACC/AUC, CSV, JSON and a plot.

Conventions (all transforms act on the batch tensor ``(B, C, *spatial)`` the network sees):

- **Axes.** Spatial axes are named as in MONAI: ``x``, ``y``, ``z`` are spatial dims 0, 1, 2 (tensor dims 2, 3, 4).
- **Angle sign.** A rotation by ``+angle`` degrees in the plane ``(a, b)`` turns axis ``a`` towards axis ``b``, as
  ``np.rot90(x, 1, axes=(a, b))`` / ``torch.rot90`` do: counter-clockwise on screen for a 2D image shown with
  ``imshow`` (plane ``(0, 1)``). In 3D, rotation about ``x`` uses plane ``(1, 2)``, about ``y`` plane ``(2, 0)`` and
  about ``z`` plane ``(0, 1)``: right-handed rotations. MONAI's ``Rotate`` turns the other way:
  ``rotate(x, angle)`` here equals ``monai.transforms.Rotate(-radians(angle), padding_mode="zeros")`` per image.
- **Resampling.** Zero fill outside the image, output size kept, ``align_corners=False`` (MONAI's default),
  ``bilinear`` (trilinear in 3D) by default or ``nearest``. Multiples of 90° in a square plane are exact
  ``torch.rot90`` calls, so their rows measure the network, not the interpolation.
- **Flips.** 2D: ``flip_vertical`` reverses spatial axis 0 (rows: upside down on screen), ``flip_horizontal``
  reverses spatial axis 1 (columns: mirrored left-right). 3D: ``flip_x``, ``flip_y``, ``flip_z``.
- **Cube rotations (3D).** The 24 proper rotations of the cube, exact compositions of ``torch.rot90``.

Every spec carries ``matrix``: the forward map of centred voxel coordinates (a voxel at offset ``p`` from the
centre moves to ``matrix @ p``), so a test or a report can check what each transform is.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from monai.networks import eval_mode
from torch import nn

from monai_sre.evaluation.metrics import check_task, medmnist_acc, medmnist_auc, scores_from_logits
from monai_sre.io import files

__all__ = [
    "AXIS_PLANES",
    "CSV_FIELDS",
    "RotationSpec",
    "rotate",
    "rotation_transforms",
    "cube_rotations",
    "evaluate_rotations",
    "summarize",
    "write_csv",
    "write_json",
    "plot_robustness",
    "run_rotation_evaluation",
]

# Plane (from-axis, to-axis) in spatial dims for a right-handed rotation about each 3D axis.
AXIS_PLANES: dict[str, tuple[int, int]] = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}
_AXIS_INDEX = {"x": 0, "y": 1, "z": 2}
_MODES = ("bilinear", "nearest")
CSV_FIELDS: tuple[str, ...] = ("name", "kind", "axis", "angle", "acc", "auc", "n")


@dataclass(frozen=True)
class RotationSpec:
    """One transform of the robustness evaluation.

    Attributes:
        name: unique row name, e.g. ``"rot_030"``, ``"rot_x_090"``, ``"cube_y90_x180"``, ``"flip_horizontal"``.
        kind: ``"angle"`` (rotation by an arbitrary angle), ``"cube"`` (exact cube rotation) or ``"flip"``.
        axis: ``"x"``/``"y"``/``"z"``: the rotation axis (3D angles) or the reversed axis (flips); ``""`` for
            in-plane 2D rotations and cube rotations.
        angle: rotation angle in degrees: the requested angle, or for a cube rotation the angle of the composite
            rotation (0, 90, 120 or 180); ``None`` for flips.
        matrix: forward map of centred voxel coordinates, ``(spatial_dims, spatial_dims)``.
        apply: function mapping a batch ``(B, C, *spatial)`` to the transformed batch of the same shape.
    """

    name: str
    kind: str
    axis: str
    angle: float | None
    matrix: np.ndarray = field(repr=False, compare=False)
    apply: Callable[[torch.Tensor], torch.Tensor] = field(repr=False, compare=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x)


def _check_mode(mode: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"interpolation must be one of {list(_MODES)}, got {mode!r}")
    return mode


def _plane_matrix(spatial_dims: int, plane: tuple[int, int], angle: float) -> np.ndarray:
    """Forward rotation matrix turning axis ``plane[0]`` towards ``plane[1]`` by ``angle`` degrees."""
    a, b = plane
    rad = math.radians(angle)
    c, s = math.cos(rad), math.sin(rad)
    if angle % 90 == 0:  # exact integers for quarter turns, so matrices of exact transforms compare exactly
        c, s = round(c), round(s)
    m = np.eye(spatial_dims)
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return m


def rotate(
    x: torch.Tensor,
    angle: float,
    plane: tuple[int, int] = (0, 1),
    mode: str = "bilinear",
    exact_quarter_turns: bool = True,
) -> torch.Tensor:
    """Rotate a batch about the centre of its spatial grid, zero fill outside, size kept.

    One ``F.affine_grid`` + ``F.grid_sample`` for the whole batch; it matches
    ``monai.transforms.Rotate(-math.radians(angle), padding_mode="zeros", mode=mode)`` image by image.

    Args:
        x: ``(B, C, *spatial)`` batch with 2 or 3 spatial dims.
        angle: degrees; positive turns spatial axis ``plane[0]`` towards ``plane[1]`` (as ``torch.rot90``).
        plane: the two spatial axes (0-based, not counting batch and channel) spanning the rotation plane.
        mode: ``"bilinear"`` (trilinear for 3D) or ``"nearest"``.
        exact_quarter_turns: multiples of 90° (in a square plane for odd multiples) use ``torch.rot90``, exact.

    Returns:
        the rotated batch, same shape; floating dtype (integer input is converted to float32).

    Raises:
        ValueError: for a batch without 2 or 3 spatial dims, an invalid plane or an unknown mode.
    """
    _check_mode(mode)
    spatial_dims = x.ndim - 2
    if spatial_dims not in (2, 3):
        raise ValueError(f"rotate expects a (B, C, *spatial) batch, 2 or 3 spatial dims; got shape {tuple(x.shape)}")
    a, b = plane
    if not (0 <= a < spatial_dims and 0 <= b < spatial_dims and a != b):
        raise ValueError(f"plane must be two different spatial axes in [0, {spatial_dims - 1}], got {plane}")
    if not x.is_floating_point():
        x = x.float()
    k = angle / 90
    if exact_quarter_turns and k == int(k) and (int(k) % 2 == 0 or x.shape[2 + a] == x.shape[2 + b]):
        return torch.rot90(x, int(k) % 4, dims=(2 + a, 2 + b))

    sizes = torch.tensor(x.shape[2:], dtype=torch.float64)
    # grid_sample needs, for each output point, the input point: the inverse (= transpose) rotation, expressed in
    # normalised coordinates where unit length is half the axis size (align_corners=False), in reversed axis order.
    inverse = torch.from_numpy(_plane_matrix(spatial_dims, plane, angle).T)
    scale = sizes / 2
    theta = (inverse * scale[None, :] / scale[:, None]).flip(0, 1)
    theta = torch.cat([theta, torch.zeros(spatial_dims, 1, dtype=theta.dtype)], dim=1)
    theta = theta.to(device=x.device, dtype=x.dtype)[None]
    grid = F.affine_grid(theta, [1, 1, *x.shape[2:]], align_corners=False)
    grid = grid.expand(x.shape[0], *grid.shape[1:])
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def _angle_spec(spatial_dims: int, angle: float, axis: str, mode: str, exact: bool) -> RotationSpec:
    plane = (0, 1) if spatial_dims == 2 else AXIS_PLANES[axis]
    degrees = f"{round(angle):03d}" if angle == round(angle) else f"{angle:g}"
    name = f"rot_{degrees}" if spatial_dims == 2 else f"rot_{axis}_{degrees}"

    def apply(x: torch.Tensor) -> torch.Tensor:
        return rotate(x, angle, plane, mode=mode, exact_quarter_turns=exact)

    return RotationSpec(name, "angle", axis, float(angle), _plane_matrix(spatial_dims, plane, angle), apply)


def _flip_spec(spatial_dims: int, axis_index: int, name: str, axis: str) -> RotationSpec:
    matrix = np.eye(spatial_dims)
    matrix[axis_index, axis_index] = -1

    def apply(x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, dims=(2 + axis_index,))

    return RotationSpec(name, "flip", axis, None, matrix, apply)


def cube_rotations() -> list[RotationSpec]:
    """The 24 proper rotations of the cube as exact ``torch.rot90`` compositions (3D batches with a cubic grid).

    Built as a quarter turn about ``x`` (4 choices) followed by the turn that sends the ``x`` axis to one of the 6
    face directions (identity, ``y`` 90/180/270, ``z`` 90/270): every rotation of the cube exactly once.

    Returns:
        24 specs of kind ``"cube"``, the identity first, named ``cube_identity`` or as a composition whose rightmost
        turn is applied first: ``cube_z90_x180`` turns 180° about ``x``, then 90° about ``z``.
    """
    faces: list[tuple[str, int]] = [("", 0), ("y", 1), ("y", 2), ("y", 3), ("z", 1), ("z", 3)]
    specs = []
    for face_axis, face_k in faces:
        for x_k in range(4):
            steps = [(ax, k) for ax, k in (("x", x_k), (face_axis, face_k)) if ax and k]
            matrix = np.eye(3)
            for ax, k in steps:  # applied in order: later turns multiply on the left
                matrix = _plane_matrix(3, AXIS_PLANES[ax], 90 * k) @ matrix
            matrix = matrix.round().astype(np.int64)
            # the rotation angle of the composite, from its trace: tr = 1 + 2 cos(angle)
            angle = float(round(math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(matrix) - 1) / 2))))))
            name = "cube_" + ("_".join(f"{ax}{90 * k}" for ax, k in reversed(steps)) or "identity")

            def apply(x: torch.Tensor, steps: list[tuple[str, int]] = steps) -> torch.Tensor:
                if x.ndim != 5:
                    raise ValueError(f"cube rotations need a (B, C, D, H, W) batch, got shape {tuple(x.shape)}")
                for ax, k in steps:
                    a, b = AXIS_PLANES[ax]
                    x = torch.rot90(x, k, dims=(2 + a, 2 + b))
                return x

            specs.append(RotationSpec(name, "cube", "", angle, matrix, apply))
    return specs


def rotation_transforms(
    spatial_dims: int,
    angles: Sequence[float] | None = None,
    interpolation: str = "bilinear",
    axes: Sequence[str] = ("x", "y", "z"),
    include_cube: bool = True,
    include_flips: bool = True,
    exact_quarter_turns: bool = True,
) -> list[RotationSpec]:
    """The transform set of the rotation-robustness evaluation.

    Args:
        spatial_dims: 2 or 3.
        angles: rotation angles in degrees; default 0..350 by 10 (36) in 2D, 0..330 by 30 (12 per axis) in 3D.
        interpolation: ``"bilinear"`` (trilinear in 3D) or ``"nearest"`` for angles off the grid.
        axes: 3D rotation axes, a subset of ``("x", "y", "z")``; ignored in 2D.
        include_cube: add the 24 exact cube rotations (3D only).
        include_flips: add the flips (2D: vertical, horizontal; 3D: along x, y, z).
        exact_quarter_turns: multiples of 90° use exact ``torch.rot90`` (see :func:`rotate`).

    Returns:
        specs in this order: angles (per axis in 3D), cube rotations, flips; names are unique.
        Defaults give 38 specs in 2D (36 + 2) and 63 in 3D (3 × 12 + 24 + 3).

    Raises:
        ValueError: for ``spatial_dims`` other than 2/3, an unknown axis or interpolation, or repeated angles.
    """
    _check_mode(interpolation)
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if angles is None:
        angles = range(0, 360, 10) if spatial_dims == 2 else range(0, 360, 30)
    angles = [float(a) for a in angles]
    if len(set(angles)) != len(angles):
        raise ValueError(f"angles must not repeat, got {angles}")
    specs: list[RotationSpec] = []
    if spatial_dims == 2:
        specs += [_angle_spec(2, a, "", interpolation, exact_quarter_turns) for a in angles]
        if include_flips:
            specs += [_flip_spec(2, 0, "flip_vertical", "x"), _flip_spec(2, 1, "flip_horizontal", "y")]
        return specs
    unknown = [ax for ax in axes if ax not in AXIS_PLANES]
    if unknown or len(set(axes)) != len(axes):
        raise ValueError(f"axes must be distinct names among {list(AXIS_PLANES)}, got {list(axes)}")
    for ax in axes:
        specs += [_angle_spec(3, a, ax, interpolation, exact_quarter_turns) for a in angles]
    if include_cube:
        specs += cube_rotations()
    if include_flips:
        specs += [_flip_spec(3, _AXIS_INDEX[ax], f"flip_{ax}", ax) for ax in ("x", "y", "z")]
    return specs


def _iter_batches(data: Any, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` from a pair of tensors/arrays or from a loader of dicts or pairs."""
    arrays = isinstance(data, (tuple, list)) and len(data) == 2
    if arrays and all(isinstance(d, (torch.Tensor, np.ndarray)) for d in data):
        images, labels = (torch.as_tensor(d) for d in data)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"data has {images.shape[0]} images but {labels.shape[0]} labels")
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size], labels[start : start + batch_size]
        return
    for i, batch in enumerate(data):
        if isinstance(batch, Mapping):
            if "image" not in batch or "label" not in batch:
                raise ValueError(f"batch {i} of data must have keys 'image' and 'label', got {sorted(batch)}")
            yield batch["image"], batch["label"]
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
            yield batch[0], batch[1]
        else:
            raise TypeError(f"batch {i} of data must be a dict with 'image'/'label' or an (image, label) pair")


def evaluate_rotations(
    model: nn.Module,
    data: Any,
    task: str,
    spatial_dims: int,
    transforms: Sequence[RotationSpec] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    interpolation: str = "bilinear",
    batch_size: int = 64,
) -> list[dict]:
    """ACC and AUC of ``model`` on every rotated / flipped version of a test set.

    The data are read once; each batch is transformed by every spec on the device, so a loader's I/O and
    preprocessing are not repeated per angle. Images are used as the loader gives them (already normalised);
    the rotation acts on the tensor the network sees, with zero fill.

    Args:
        model: classifier returning logits ``(B, K)``; put in eval mode (restored afterwards), run without grad.
        data: an ``(images, labels)`` pair of tensors/arrays (``(N, C, *spatial)``, ``(N,)``/``(N, 1)``/``(N, L)``),
            or an iterable of batches (dicts with ``image`` and ``label``, or ``(image, label)`` pairs), e.g. a
            MONAI ``DataLoader``.
        task: MedMNIST task name (see :data:`monai_sre.evaluation.metrics.TASKS`).
        spatial_dims: 2 or 3; must match the images.
        transforms: specs to evaluate; default :func:`rotation_transforms` with ``interpolation``.
        device: where the model runs.
        progress: show a tqdm bar over batches.
        interpolation: used only when ``transforms`` is ``None``.
        batch_size: batch size when ``data`` is a pair of tensors.

    Returns:
        one dict per spec, in order: ``name, kind, axis, angle`` (degrees or ``None``), ``acc, auc`` (floats;
        ``auc`` may be ``nan``, see :func:`~monai_sre.evaluation.metrics.medmnist_auc`) and ``n`` (samples).

    Raises:
        ValueError: for an unknown task, images whose dimensionality is not ``spatial_dims``, or empty data.
    """
    check_task(task)
    if transforms is None:
        transforms = rotation_transforms(spatial_dims, interpolation=interpolation)
    if not transforms:
        raise ValueError("transforms is empty: nothing to evaluate")
    device = torch.device(device)
    batches = _iter_batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="rotation evaluation", unit="batch")
    logits: list[list[torch.Tensor]] = [[] for _ in transforms]
    labels: list[torch.Tensor] = []
    with eval_mode(model):
        for images, y in batches:
            images = torch.as_tensor(images).as_subclass(torch.Tensor).to(device)
            if images.ndim != spatial_dims + 2:
                raise ValueError(
                    f"images must be (B, C, *spatial) with {spatial_dims} spatial dims, got shape {tuple(images.shape)}"
                )
            if not images.is_floating_point():
                images = images.float()
            if not bool(torch.isfinite(images).all()):
                raise ValueError(
                    f"images of batch {len(labels)} hold {int((~torch.isfinite(images)).sum())} NaN or infinite "
                    "value(s); expected finite intensities"
                )
            labels.append(torch.as_tensor(y).as_subclass(torch.Tensor).detach().cpu().reshape(images.shape[0], -1))
            for out, spec in zip(logits, transforms, strict=True):
                try:
                    out.append(model(spec(images)).detach().float().cpu())
                except RuntimeError as e:  # torch's layer errors do not say which data or model they are about
                    raise ValueError(
                        f"the model failed on images of shape {tuple(images.shape)} ({images.shape[1]} channel(s), "
                        f"{spatial_dims}D): {' '.join(str(e).split())}"
                    ) from e
    if not labels:
        raise ValueError("data yielded no batches: nothing to evaluate")
    y_true = torch.cat(labels).numpy()
    rows = []
    for spec, out in zip(transforms, logits, strict=True):
        scores = scores_from_logits(torch.cat(out), task)
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "axis": spec.axis,
                "angle": spec.angle,
                "acc": medmnist_acc(y_true, scores, task),
                "auc": medmnist_auc(y_true, scores, task),
                "n": int(y_true.shape[0]),
            }
        )
    return rows


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict:
    """Summarise evaluation rows: mean over rotations, worst angle, drop from 0°, cube and flip means.

    Args:
        rows: output of :func:`evaluate_rotations`.

    Returns:
        a JSON-ready dict: ``n_transforms``; ``acc_0``/``auc_0`` (the first 0° rotation, i.e. the unrotated
        test set); ``rotation`` with ``mean_acc``, ``mean_auc``, ``worst`` (``name``, ``axis``, ``angle``, ``acc``,
        ``auc`` of the lowest-ACC rotation), ``drop_acc``/``drop_auc`` (0° minus the mean) and ``worst_drop_acc``
        (0° minus the worst); ``per_axis`` means in 3D; ``cube`` and ``flip`` means where evaluated. Undefined
        values (no such rows, AUC undefined) are ``None``.

    Raises:
        ValueError: when ``rows`` is empty or holds no rotation by an angle.
    """
    if not rows:
        raise ValueError("rows is empty: nothing to summarise")
    rot = [r for r in rows if r["kind"] == "angle"]
    if not rot:
        raise ValueError("rows hold no 'angle' rotations: summarize needs the per-angle rows of evaluate_rotations")
    ref = next((r for r in rot if r["angle"] is not None and r["angle"] % 360 == 0), None)

    def num(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    acc_0 = num(ref["acc"]) if ref else None
    auc_0 = num(ref["auc"]) if ref else None
    worst = min(rot, key=lambda r: r["acc"])
    mean_acc, mean_auc = _mean([r["acc"] for r in rot]), _mean([r["auc"] for r in rot])

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    summary: dict[str, Any] = {
        "n_transforms": len(rows),
        "n_samples": int(rows[0]["n"]),
        "acc_0": acc_0,
        "auc_0": auc_0,
        "rotation": {
            "n": len(rot),
            "mean_acc": mean_acc,
            "mean_auc": mean_auc,
            "worst": {
                "name": worst["name"],
                "axis": worst["axis"],
                **{k: num(worst[k]) for k in ("angle", "acc", "auc")},
            },
            "drop_acc": diff(acc_0, mean_acc),
            "drop_auc": diff(auc_0, mean_auc),
            "worst_drop_acc": diff(acc_0, num(worst["acc"])),
        },
    }
    axes = sorted({r["axis"] for r in rot if r["axis"]})
    if axes:
        summary["per_axis"] = {
            ax: {
                "mean_acc": _mean([r["acc"] for r in rot if r["axis"] == ax]),
                "mean_auc": _mean([r["auc"] for r in rot if r["axis"] == ax]),
            }
            for ax in axes
        }
    for kind in ("cube", "flip"):
        group = [r for r in rows if r["kind"] == kind]
        if group:
            summary[kind] = {
                "n": len(group),
                "mean_acc": _mean([r["acc"] for r in group]),
                "mean_auc": _mean([r["auc"] for r in group]),
                "min_acc": float(min(r["acc"] for r in group)),
            }
    return summary


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write evaluation rows as CSV, atomically, with a header (:data:`CSV_FIELDS`).

    Args:
        rows: output of :func:`evaluate_rotations`.
        path: target file; its folder is created if needed.

    Returns:
        the path written.

    Raises:
        ValueError: when a row lacks one of :data:`CSV_FIELDS`.
    """
    for i, r in enumerate(rows):
        missing = [k for k in CSV_FIELDS if k not in r]
        if missing:
            raise ValueError(f"row {i} lacks {missing}; rows must have {list(CSV_FIELDS)}")

    return files.write_csv(path, CSV_FIELDS, ([r[k] for k in CSV_FIELDS] for r in rows))


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


def plot_robustness(
    results: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike | None = None, title: str | None = None
) -> Figure:
    """Plot ACC and AUC against rotation angle for every model: one curve per model (per axis in 3D).

    Colours tell models apart, line styles tell 3D axes apart. The 0° value is repeated at 360° to close the
    turn. Flip and cube rows are not drawn (they are in the CSV and the summary).

    Args:
        results: ``{model name: rows of evaluate_rotations}``.
        path: PNG file to write (atomically); ``None`` only returns the figure.
        title: figure title.

    Returns:
        the matplotlib figure (not attached to pyplot, so nothing global is left open); its two axes hold the
        ACC and AUC curves.

    Raises:
        ValueError: when ``results`` is empty or a model has no angle rows.
    """
    if not results:
        raise ValueError("results is empty: give {model name: rows} for at least one model")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_acc, ax_auc = fig.subplots(1, 2)
    styles = {"": "-", "x": "-", "y": "--", "z": ":"}
    colors = [f"C{i}" for i in range(10)]
    for i, (model_name, rows) in enumerate(results.items()):
        rot = [r for r in rows if r["kind"] == "angle"]
        if not rot:
            raise ValueError(f"model {model_name!r} has no 'angle' rows to plot")
        for axis in sorted({r["axis"] for r in rot}):
            curve = sorted((r for r in rot if r["axis"] == axis), key=lambda r: r["angle"])
            if curve[0]["angle"] == 0:
                curve = curve + [{**curve[0], "angle": 360.0}]
            angles = [r["angle"] for r in curve]
            label = model_name if not axis else f"{model_name}, about {axis}"
            for ax, key in ((ax_acc, "acc"), (ax_auc, "auc")):
                values = [np.nan if r[key] is None else r[key] for r in curve]
                ax.plot(angles, values, styles.get(axis, "-"), color=colors[i % 10], marker=".", label=label)
    for ax, name in ((ax_acc, "ACC"), (ax_auc, "AUC")):
        ax.set_xlim(0, 360)
        ax.set_ylim(0, 1)
        ax.set_xticks(range(0, 361, 45))
        ax.set_xlabel("rotation angle (degrees)")
        ax.set_ylabel(name)
        ax.set_title(f"{name} on rotated test set")
        ax.grid(True, alpha=0.3)
    ax_auc.legend(loc="best", fontsize="small")
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
) -> dict[str, dict]:
    """Evaluate every model on the rotated test sets and write the report.

    Writes into ``out_dir``: ``rotation_<model>.csv`` per model, ``rotation_summary.json`` (``{model: summary}``
    plus the settings) and ``rotation_robustness.png`` (all models overlaid). Meant to be called from a bundle's
    ``evaluate.json`` through a ``$`` expression.

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

    Returns:
        ``{model name: summarize(rows)}``.

    Raises:
        ValueError: for no models, a model name unfit for a file name, or the errors of :func:`evaluate_rotations`.
    """
    if isinstance(models, nn.Module):
        models = {"model": models}
    if not models:
        raise ValueError("models is empty: give {name: network} for at least one model")
    bad = [n for n in models if not _NAME.match(n)]
    if bad:
        raise ValueError(f"model names must be letters, digits, '_', '.', '-' (they name files), got {bad}")
    transforms = rotation_transforms(spatial_dims, angles=angles, interpolation=interpolation)
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
        {"task": task, "spatial_dims": spatial_dims, "interpolation": interpolation, "models": summaries},
        out_dir / "rotation_summary.json",
    )
    plot_robustness(
        results, out_dir / "rotation_robustness.png", title=title or f"Rotation robustness ({task}, {interpolation})"
    )
    return summaries
