# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Former home of the MedMNIST recipe, kept so that old imports work: see :mod:`monai_sre.recipes` and
:mod:`monai_sre.io.checkpoints`."""

from __future__ import annotations

from monai_sre.io.checkpoints import check_checkpoint
from monai_sre.recipes import ARCHS, MODEL_TYPES, checkpoint_name, load_trained_classifiers, medmnist_classifier

__all__ = [
    "MODEL_TYPES",
    "ARCHS",
    "medmnist_classifier",
    "checkpoint_name",
    "check_checkpoint",
    "load_trained_classifiers",
]
