# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Former home of the rotation-robustness evaluation; its public names stay importable from here.

The code lives in :mod:`monai_sre.evaluation.rotated_sets` (rotated and flipped test sets),
:mod:`monai_sre.evaluation.robustness` (evaluation and summary) and :mod:`monai_sre.evaluation.report` (CSV, JSON,
plot); the cube group in :mod:`monai_sre.transforms.symmetry`. Import from those, or from
:mod:`monai_sre.evaluation`.
"""

from __future__ import annotations

from monai_sre.evaluation.report import CSV_FIELDS, plot_robustness, run_rotation_evaluation, write_csv, write_json
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

__all__ = [
    "AXIS_PLANES",
    "CSV_FIELDS",
    "VARIANTS",
    "inscribed_mask",
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
