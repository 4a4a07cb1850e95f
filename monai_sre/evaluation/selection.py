# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Checkpoint selection: the validation images it scores (``val_angles``) and the measure it ranks (``val_metric``).

The bundles keep the checkpoint with the best validation AUC (the MedMNIST protocol's rule). That rule can keep an
early checkpoint that has not learnt to ignore resampling: on BreastMNIST 64 the kept checkpoint of one seed (epoch 21
of 100) lost 14.6 points of test ACC when its images were turned and turned back (interpolation only, no change of
orientation), while the same run's epoch-100 model lost none. On the validation images the same checkpoint shows it
too, in ACC only: 14.1 points lost under the control, while its AUC rose under rotation (0.903 upright, 0.919 averaged
over 35 angles). The scores move across the decision threshold without changing their order, so AUC cannot see it.

- :class:`RotatedCopies` (``val_angles``) is a MONAI ``prepare_batch`` for the validation evaluator that scores every
  validation image upright and turned by each angle, with the resampling of the rotation report
  (:func:`~monai_sre.evaluation.rotated_sets.rotate`: bilinear, zero fill, exact quarter turns); the metrics are
  computed over the pooled copies (ACC is then the mean ACC over the angles).
- :func:`validation_metrics` (``val_metric``) builds the validator's metrics with ``auc`` (the default) or
  ``auc_acc`` (the mean of AUC and ACC, which sees the threshold too) as the key metric that keeps the checkpoint.

Measured in five runs (BreastMNIST 28 seeds 0-2, BreastMNIST 64 seed 2, RetinaMNIST 28 seed 0; every epoch scored
offline, ``benchmarks/checkpoint_selection.py``): ``auc_acc`` never lowered the rotated mean test ACC (+0 to +7.1
points) but moved the upright test AUC both ways (-0.057 to +0.049, mean -0.001), so ``auc`` stays the default; the
pooled AUC over turned copies did not help.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines import PrepareBatch, default_prepare_batch
from monai.handlers import from_engine

from monai_sre.evaluation.metrics import MedMNISTACC, MedMNISTAUC
from monai_sre.evaluation.rotated_sets import RotationSpec, rotation_transforms

__all__ = ["VAL_METRICS", "RotatedCopies", "validation_metrics"]

#: Key metrics a bundle can select its checkpoint on (``--val_metric``): AUC, or the mean of AUC and ACC.
VAL_METRICS: tuple[str, ...] = ("auc", "auc_acc")


def validation_metrics(task: str, key: str = "auc", prefix: str = "val") -> tuple[dict, dict]:
    """The validator's ``key_val_metric`` and ``additional_metrics`` for a MedMNIST task.

    Args:
        task: MedMNIST task name (see :data:`monai_sre.evaluation.metrics.TASKS`).
        key: ``"auc"``: the key metric is ``<prefix>_auc`` and ``<prefix>_acc`` is logged beside it;
            ``"auc_acc"``: the key metric is ``<prefix>_auc_acc``, the mean of AUC and ACC, with both logged beside it.
        prefix: start of the metric names.

    Returns:
        ``({key name: metric}, {name: metric, ...})``, each metric reading ``pred`` and ``label`` from the engine's
        output; every metric is its own instance, so none is updated twice in an iteration.

    Raises:
        ValueError: for a key not in :data:`VAL_METRICS` or an unknown task.
    """
    if key not in VAL_METRICS:
        raise ValueError(f"key must be one of {list(VAL_METRICS)} (the measure that picks the checkpoint), got {key!r}")

    def auc() -> MedMNISTAUC:
        return MedMNISTAUC(task, output_transform=from_engine(["pred", "label"]))

    def acc() -> MedMNISTACC:
        return MedMNISTACC(task, output_transform=from_engine(["pred", "label"]))

    if key == "auc":
        return {f"{prefix}_auc": auc()}, {f"{prefix}_acc": acc()}
    return {f"{prefix}_auc_acc": (auc() + acc()) / 2}, {f"{prefix}_auc": auc(), f"{prefix}_acc": acc()}


class RotatedCopies(PrepareBatch):
    """``prepare_batch`` that returns each image upright and turned by every angle, labels repeated to match.

    Args:
        angles: rotation angles in degrees, distinct; ``[0]`` gives the batch as MONAI's ``default_prepare_batch``
            does (no copies). An angle that is a multiple of 360 is the upright image and is scored once.
        spatial_dims: 2 or 3. In 3D every angle other than 0 is applied about each of ``axes`` in turn.
        axes: 3D rotation axes, a subset of ``("x", "y", "z")``; ignored in 2D.
        interpolation: ``"bilinear"`` (trilinear in 3D) or ``"nearest"``, as in the rotation report.

    Example (2D, 78 validation images scored at 0°, 10° and 45°: 234 predictions per validation epoch)::

        SupervisedEvaluator(..., prepare_batch=RotatedCopies([0, 10, 45], spatial_dims=2))

    Raises:
        ValueError: for ``spatial_dims`` other than 2/3, no angles, repeated angles, an unknown axis or
            interpolation; when called, for a batch without labels or with the wrong number of spatial dims.
    """

    def __init__(
        self,
        angles: Sequence[float],
        spatial_dims: int,
        axes: Sequence[str] = ("x", "y", "z"),
        interpolation: str = "bilinear",
    ) -> None:
        angles = [float(a) for a in angles]
        if not angles:
            raise ValueError("angles must name at least one angle in degrees (0 is the upright image), got []")
        specs = rotation_transforms(
            spatial_dims, angles, interpolation, axes, include_cube=False, include_flips=False
        )
        # only rotations by an angle here (no cube rotations, no flips), so every spec has an angle
        upright = [s for s in specs if s.angle % 360 == 0]
        turned = [s for s in specs if s.angle % 360 != 0]
        self.spatial_dims = spatial_dims
        #: the transforms applied, the upright image first when 0 is among the angles.
        self.specs: list[RotationSpec] = upright[:1] + turned
        #: only the upright image is scored: batches pass through as ``default_prepare_batch`` gives them.
        self.upright_only = not turned

    def __len__(self) -> int:
        """How many copies of each image are scored."""
        return len(self.specs)

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        if label is None:
            raise ValueError("validation on turned copies needs labelled batches ('label' key), got none")
        if image.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"validation on turned copies expects (B, C, *spatial) batches with {self.spatial_dims} spatial "
                f"dims, got shape {tuple(image.shape)}"
            )
        if self.upright_only:
            return image, label
        # Plain tensors: the copies carry no per-image metadata that would still be true after a rotation.
        x = image.as_tensor() if isinstance(image, MetaTensor) else image
        y = label.as_tensor() if isinstance(label, MetaTensor) else label
        copies = [spec(x) for spec in self.specs]
        return torch.cat(copies), y.repeat(len(copies), *([1] * (y.ndim - 1)))
