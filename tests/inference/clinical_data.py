# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Real clinical test files shipped with pydicom and nibabel, and tiny bundles with a small random network."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel
import torch
from monai.bundle import ConfigParser
from pydicom.data import get_testdata_file

PYDICOM_DATA = Path(get_testdata_file("CT_small.dcm")).parent
DICOMDIR_TESTS = PYDICOM_DATA / "dicomdirtests"
CT_SERIES = DICOMDIR_TESTS / "98892001" / "CT5N"  # 5 axial 16x16 CT slices, 2.5 mm apart
CT_SERIES_GAP = DICOMDIR_TESTS / "77654033" / "CT2"  # 4 CT slices, 161 missing between the first two
MR_SINGLE_SLICES = DICOMDIR_TESTS / "98892003" / "MR1"  # 3 one-slice sagittal MR series in one folder
MR_RADIAL = DICOMDIR_TESTS / "98892003" / "MR700"  # 7 MR slices, each in another plane
NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"
CLASS_NAMES = ("benign", "malignant")


def tiny_network_def(spatial_dims: int, in_channels: int, num_classes: int = 2) -> dict[str, Any]:
    """A MONAI ResNet small enough for CPU tests (57k weights in 3D), no stride, no max-pool."""
    return {
        "_target_": "monai.networks.nets.ResNet",
        "block": "basic",
        "layers": [1, 1, 1, 1],
        "block_inplanes": [4, 8, 16, 32],
        "spatial_dims": spatial_dims,
        "n_input_channels": in_channels,
        "num_classes": num_classes,
        "conv1_t_size": 3,
        "conv1_t_stride": 1,
        "no_max_pool": True,
    }


def make_bundle(
    root: Path,
    spatial_dims: int,
    in_channels: int = 1,
    *,
    class_names: Sequence[str] = CLASS_NAMES,
    clinical_preprocessing: Mapping[str, Any] | None = None,
    extra_config: Mapping[str, Any] | None = None,
    nested_checkpoint: bool = False,
    seed: int = 0,
) -> Path:
    """Write a bundle folder (metadata, inference config, random-init checkpoint) and return it."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    metadata = {
        "name": f"tiny_{spatial_dims}d",
        "version": "0.1.2",
        "network_data_format": {
            "inputs": {"image": {"num_channels": in_channels, "spatial_shape": [28] * spatial_dims}},
            "outputs": {
                "pred": {
                    "num_channels": len(class_names),
                    "channel_def": {str(i): n for i, n in enumerate(class_names)},
                }
            },
        },
    }
    inference: dict[str, Any] = {"network_def": tiny_network_def(spatial_dims, in_channels, len(class_names))}
    if clinical_preprocessing is not None:
        inference["clinical_preprocessing"] = dict(clinical_preprocessing)
    inference.update(extra_config or {})
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    torch.manual_seed(seed)
    state = ConfigParser({"net": inference["network_def"]}).get_parsed_content("net").state_dict()
    torch.save({"model": state} if nested_checkpoint else state, root / "models" / "model.pt")
    return root
