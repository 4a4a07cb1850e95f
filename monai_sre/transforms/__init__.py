# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Transforms shared by training, evaluation and inference: the input contract of a model and the MONAI transforms
built from it (:mod:`.contract`), the clinical preprocessing of NIfTI files and DICOM series configured by it
(:mod:`.clinical`), the symmetry groups of the grid (:mod:`.symmetry`), the bundles' training-time augmentation
(:mod:`.augmentation`) and the float64 class probabilities of a classifier's logits (:mod:`.probabilities`)."""

from __future__ import annotations

from monai_sre.transforms.augmentation import AUGMENTATIONS, RandCornerMaskd, training_augmentation
from monai_sre.transforms.clinical import (
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
from monai_sre.transforms.contract import (
    INTENSITY_RULES,
    ContractIntensityd,
    InputContract,
    StoredTypeNibabelReader,
    contract_loader,
    image_modality,
    medmnist_contract,
    training_transforms,
)
from monai_sre.transforms.probabilities import ClassProbabilitiesd, class_probabilities
from monai_sre.transforms.symmetry import (
    AXIS_PLANES,
    GridSymmetry,
    axis_flip,
    cube_rotations,
    full_grid_group,
    grid_group,
    grid_symmetries,
    rotation_matrix,
    square_symmetries,
)

__all__ = [
    "AUGMENTATIONS",
    "AXIS_PLANES",
    "INTENSITY_RULES",
    "ClassProbabilitiesd",
    "ClinicalPreprocessingConfig",
    "ConformImaged",
    "ContractIntensityd",
    "CropRoid",
    "GridSpacingd",
    "GridSymmetry",
    "InputContract",
    "ModalityIntensityd",
    "RandCornerMaskd",
    "ResizeToGridd",
    "SpacingGuardd",
    "StoredTypeNibabelReader",
    "axis_flip",
    "class_probabilities",
    "clinical_loader",
    "clinical_transforms",
    "contract_loader",
    "cube_rotations",
    "full_grid_group",
    "grid_group",
    "grid_symmetries",
    "image_modality",
    "medmnist_contract",
    "rotation_matrix",
    "square_symmetries",
    "training_augmentation",
    "training_transforms",
]
