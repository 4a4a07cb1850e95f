# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Evaluation: MedMNIST ACC/AUC (functions and ignite metrics) and rotation-robustness reports."""

from __future__ import annotations

from monai_sre.evaluation.metrics import (
    TASKS,
    MedMNISTACC,
    MedMNISTAUC,
    check_task,
    medmnist_acc,
    medmnist_auc,
    scores_from_logits,
)
from monai_sre.evaluation.rotation import (
    AXIS_PLANES,
    CSV_FIELDS,
    RotationSpec,
    cube_rotations,
    evaluate_rotations,
    plot_robustness,
    rotate,
    rotation_transforms,
    run_rotation_evaluation,
    summarize,
    write_csv,
    write_json,
)

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
    "RotationSpec",
    "cube_rotations",
    "evaluate_rotations",
    "plot_robustness",
    "rotate",
    "rotation_transforms",
    "run_rotation_evaluation",
    "summarize",
    "write_csv",
    "write_json",
]
