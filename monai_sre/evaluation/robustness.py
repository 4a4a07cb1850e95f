# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Rotation-robustness evaluation and its summary: ACC/AUC of a model on every rotated test set, mean, worst, drop.

The test sets are those of :mod:`monai_sre.evaluation.rotated_sets`; :mod:`monai_sre.evaluation.report` writes the
rows and summaries as CSV, JSON and a plot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.networks import eval_mode
from torch import nn

from monai_sre.evaluation.metrics import check_task, medmnist_acc, medmnist_auc, scores_from_logits
from monai_sre.evaluation.rotated_sets import VARIANTS, RotationSpec, rotation_transforms

__all__ = ["evaluate_rotations", "summarize"]


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
    the rotation acts on the tensor the network sees, with zero fill. A transform that returns the batch unchanged,
    bit for bit (0°, a quarter turn and back), reuses the model's predictions on the first such transform.

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
        ``auc`` may be ``nan``, see :func:`~monai_sre.evaluation.metrics.medmnist_auc`), ``n`` (samples) and
        ``variant`` (see :data:`~monai_sre.evaluation.rotated_sets.VARIANTS`).

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
            upright = None  # the logits of the unchanged batch, shared by every transform that gives it exactly
            for out, spec in zip(logits, transforms, strict=True):
                try:
                    turned = spec(images)
                    identity = turned.shape == images.shape and torch.equal(turned, images)
                    if not (identity and upright is not None):
                        result = model(turned).detach().float().cpu()
                        upright = result if identity else upright
                    out.append(upright if identity else result)
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
                "variant": spec.variant,
            }
        )
    return rows


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _turned(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of images actually turned: a 0° row (one per axis in 3D, all the same images) is the upright set."""
    return [r for r in rows if r["angle"] is not None and r["angle"] % 360 != 0]


def _angle_summary(rot: Sequence[Mapping[str, Any]]) -> dict:
    """Mean and worst over the turned copies, drops from this variant's own 0° and the smallest non-zero angle of one
    variant's rows (mean and worst are the 0° row's when nothing was turned)."""
    ref = next((r for r in rot if r["angle"] is not None and r["angle"] % 360 == 0), None)
    acc_0 = _num(ref["acc"]) if ref else None
    auc_0 = _num(ref["auc"]) if ref else None
    turned = _turned(rot)
    worst = min(turned or rot, key=lambda r: r["acc"])
    mean_acc, mean_auc = _mean([r["acc"] for r in turned or rot]), _mean([r["auc"] for r in turned or rot])
    first = min(turned, key=lambda r: (min(r["angle"] % 360, 360 - r["angle"] % 360), r["axis"]), default=None)
    return {
        "n": len(rot),
        "acc_0": acc_0,
        "auc_0": auc_0,
        "mean_acc": mean_acc,
        "mean_auc": mean_auc,
        "worst": {"name": worst["name"], "axis": worst["axis"], **{k: _num(worst[k]) for k in ("angle", "acc", "auc")}},
        "drop_acc": _diff(acc_0, mean_acc),
        "drop_auc": _diff(auc_0, mean_auc),
        "worst_drop_acc": _diff(acc_0, _num(worst["acc"])),
        "first_angle": None
        if first is None
        else {
            "name": first["name"],
            "axis": first["axis"],
            **{k: _num(first[k]) for k in ("angle", "acc", "auc")},
            "drop_acc": _diff(acc_0, _num(first["acc"])),
        },
    }


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict:
    """Summarise evaluation rows: mean over rotations, worst angle, drop from 0°, cube and flip means, and the same
    for the ``disk`` and ``control`` variants where evaluated.

    Args:
        rows: output of :func:`evaluate_rotations` (rows without ``variant`` count as ``"full"``).

    Returns:
        a JSON-ready dict: ``n_transforms``; ``acc_0``/``auc_0`` (the first 0° rotation, i.e. the unrotated
        test set); ``rotation`` (the ``full`` rotated test sets) with ``n``, ``acc_0``/``auc_0``, ``mean_acc``,
        ``mean_auc`` (over the turned copies: every 0° row is left out, as in 3D each axis has one and all are the
        upright set; the 0° values when nothing else was evaluated), ``worst`` (``name``, ``axis``, ``angle``,
        ``acc``, ``auc`` of the lowest-ACC turned copy), ``drop_acc``/``drop_auc`` (0° minus the mean),
        ``worst_drop_acc`` (0° minus the worst; negative when every turned copy scores above upright) and
        ``first_angle`` (the smallest non-zero angle: ``name``, ``axis``, ``angle``, ``acc``, ``auc``,
        ``drop_acc``); ``disk`` and ``control``, where evaluated, with the same keys, every drop taken from the
        variant's own 0° row (for ``disk`` the masked upright images; for ``control`` the upright images, exactly);
        ``per_axis`` means over the turned copies in 3D; ``cube`` and ``flip`` means where evaluated. Undefined
        values (no such rows, AUC undefined) are ``None``.

    Raises:
        ValueError: when ``rows`` is empty or holds no rotation by an angle.
    """
    if not rows:
        raise ValueError("rows is empty: nothing to summarise")
    angle_rows = [r for r in rows if r["kind"] == "angle"]
    rot = [r for r in angle_rows if r.get("variant", "full") == "full"]
    if not rot:
        raise ValueError("rows hold no 'angle' rotations: summarize needs the per-angle rows of evaluate_rotations")
    full = _angle_summary(rot)
    summary: dict[str, Any] = {
        "n_transforms": len(rows),
        "n_samples": int(rows[0]["n"]),
        "acc_0": full["acc_0"],
        "auc_0": full["auc_0"],
        "rotation": full,
    }
    for variant in VARIANTS[1:]:
        group = [r for r in angle_rows if r.get("variant", "full") == variant]
        if group:
            summary[variant] = _angle_summary(group)
    axes = sorted({r["axis"] for r in rot if r["axis"]})
    if axes:
        summary["per_axis"] = {
            ax: {
                "mean_acc": _mean([r["acc"] for r in _turned(rot) if r["axis"] == ax]),
                "mean_auc": _mean([r["auc"] for r in _turned(rot) if r["axis"] == ax]),
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
