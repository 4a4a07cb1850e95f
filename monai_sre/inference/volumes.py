# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Former home of the clinical preprocessing; its public names stay importable from here.

The transforms and their builders live in :mod:`monai_sre.transforms.clinical`, beside the input contract they are
configured by. Import from there, or from :mod:`monai_sre.transforms`.
"""

from __future__ import annotations

from monai_sre.transforms.clinical import (
    MAX_MATERIALISED_VOXELS,
    MAX_RESAMPLED_VOXELS,
    ClinicalPreprocessingConfig,
    ConformImaged,
    CropRoid,
    GridSpacingd,
    ModalityIntensityd,
    ResizeToGridd,
    SpacingGuardd,
    clinical_loader,
    clinical_transforms,
)

__all__ = [
    "ClinicalPreprocessingConfig",
    "clinical_loader",
    "clinical_transforms",
    "ConformImaged",
    "ModalityIntensityd",
    "CropRoid",
    "ResizeToGridd",
    "SpacingGuardd",
    "GridSpacingd",
    "MAX_RESAMPLED_VOXELS",
    "MAX_MATERIALISED_VOXELS",
]
