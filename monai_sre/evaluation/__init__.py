# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Evaluation: MedMNIST ACC/AUC (functions and ignite metrics) and rotation-robustness reports.

Modules: :mod:`.metrics` (ACC/AUC), :mod:`.rotated_sets` (rotated and flipped test sets), :mod:`.robustness`
(evaluation and summary), :mod:`.report` (CSV, JSON, plot), :mod:`.bundle_evaluation` (trained checkpoints of a bundle,
read through its datalist and validation transforms), :mod:`.selection` (checkpoint selection: turned validation
images, the key metric). The exact cube and square symmetries come from
:mod:`monai_sre.transforms.symmetry`, the group the rotation check of :mod:`monai_sre.inference` uses too.
"""

from __future__ import annotations

from monai_sre.evaluation.bundle_evaluation import evaluate_bundle_checkpoints
from monai_sre.evaluation.metrics import (
    TASKS,
    MedMNISTACC,
    MedMNISTAUC,
    check_task,
    medmnist_acc,
    medmnist_auc,
    scores_from_logits,
)
from monai_sre.evaluation.report import (
    CSV_FIELDS,
    plot_robustness,
    read_csv,
    read_metrics,
    rows_from_csv,
    run_rotation_evaluation,
    write_csv,
    write_json,
)
from monai_sre.evaluation.robustness import evaluate_rotations, summarize
from monai_sre.evaluation.rotated_sets import (
    AXIS_PLANES,
    VARIANTS,
    RotationSpec,
    cube_rotations,
    inscribed_mask,
    rotate,
    rotation_transforms,
)
from monai_sre.evaluation.selection import VAL_METRICS, RotatedCopies, validation_metrics

__all__ = [
    "TASKS",
    "MedMNISTACC",
    "MedMNISTAUC",
    "check_task",
    "medmnist_acc",
    "medmnist_auc",
    "scores_from_logits",
    "AXIS_PLANES",
    "CSV_FIELDS",
    "VARIANTS",
    "inscribed_mask",
    "RotatedCopies",
    "VAL_METRICS",
    "RotationSpec",
    "cube_rotations",
    "evaluate_bundle_checkpoints",
    "evaluate_rotations",
    "plot_robustness",
    "read_csv",
    "read_metrics",
    "rotate",
    "rows_from_csv",
    "rotation_transforms",
    "run_rotation_evaluation",
    "summarize",
    "validation_metrics",
    "write_csv",
    "write_json",
]
