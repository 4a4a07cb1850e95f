# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Clinical inference: NIfTI files and DICOM series of any size, spacing and orientation to predictions."""

from __future__ import annotations

from monai_sre.data.dicom_series import DicomSeriesReader, order_series_slices
from monai_sre.inference.discovery import ClinicalInput, discover_inputs
from monai_sre.inference.engine import ClinicalDataset, InputsFailedError, PredictionWriter
from monai_sre.inference.predict import LoadedBundle, file_sha256, load_bundle, predict, predict_with_model
from monai_sre.inference.results import write_predictions
from monai_sre.inference.rotation_check import grid_symmetries, symmetry_spread
from monai_sre.transforms.clinical import (
    ClinicalPreprocessingConfig,
    ConformImaged,
    CropRoid,
    ModalityIntensityd,
    ResizeToGridd,
    clinical_loader,
    clinical_transforms,
)

__all__ = [
    "ClinicalDataset",
    "ClinicalInput",
    "ClinicalPreprocessingConfig",
    "ConformImaged",
    "CropRoid",
    "DicomSeriesReader",
    "InputsFailedError",
    "LoadedBundle",
    "ModalityIntensityd",
    "PredictionWriter",
    "ResizeToGridd",
    "clinical_loader",
    "clinical_transforms",
    "discover_inputs",
    "file_sha256",
    "grid_symmetries",
    "load_bundle",
    "order_series_slices",
    "predict",
    "predict_with_model",
    "symmetry_spread",
    "write_predictions",
]
