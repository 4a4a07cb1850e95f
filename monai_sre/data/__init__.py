# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""MedMNIST data: checksum-verified loading (:mod:`.medmnist`) and export to NIfTI / DICOM with a MONAI datalist
(:mod:`.export`, general DICOM writers in :mod:`.dicom`), and the reader of one clinical DICOM series with its
header and slice-geometry checks (:mod:`.dicom_series`).

One orientation convention holds for npz, NIfTI and DICOM: ``LoadImage`` + ``EnsureChannelFirst`` of an exported
sample gives the npz array with its axes in the same order (see :mod:`monai_sre.data.medmnist`).
"""

from monai_sre.data.dicom import write_dicom_image, write_dicom_series
from monai_sre.data.dicom_series import DicomSeriesReader, order_series_slices
from monai_sre.data.export import (
    DATALIST_NAME,
    FORMATS,
    ExportError,
    export_medmnist,
    load_datalist,
    sample_relpath,
    write_nifti,
)
from monai_sre.data.medmnist import (
    ENV_DATA_ROOT,
    SPLITS,
    MedMNISTChecksumError,
    MedMNISTCorruptError,
    MedMNISTError,
    MedMNISTInfo,
    MedMNISTMissingError,
    available_flags,
    available_sizes,
    bundle_dataset_info,
    dataset_info,
    file_md5,
    iter_images,
    load_labels,
    load_split,
    locate,
    resolve_data_root,
)

__all__ = [
    "DATALIST_NAME",
    "DicomSeriesReader",
    "ENV_DATA_ROOT",
    "FORMATS",
    "SPLITS",
    "ExportError",
    "MedMNISTChecksumError",
    "MedMNISTCorruptError",
    "MedMNISTError",
    "MedMNISTInfo",
    "MedMNISTMissingError",
    "available_flags",
    "available_sizes",
    "bundle_dataset_info",
    "dataset_info",
    "export_medmnist",
    "file_md5",
    "iter_images",
    "load_datalist",
    "load_labels",
    "load_split",
    "locate",
    "order_series_slices",
    "resolve_data_root",
    "sample_relpath",
    "write_dicom_image",
    "write_dicom_series",
    "write_nifti",
]
