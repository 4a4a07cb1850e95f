# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The input contract: its fields, its checkpoint round trip, and the intensity rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_sre.transforms import ContractIntensityd, InputContract, medmnist_contract, training_transforms


def _mapped(values, contract=None, **meta):
    img = MetaTensor(torch.as_tensor(values), meta={"filename_or_obj": "img.nii", **meta})
    out = ContractIntensityd("image", contract or medmnist_contract(2, 28))({"image": img})["image"]
    return out, out.meta["intensity_scaling"]


def test_contract_fields_and_round_trip():
    contract = medmnist_contract(3, 28)
    assert (contract.axcodes, contract.spacing, contract.channel_dim) == ("RAS", (1.0, 1.0, 1.0), "no_channel")
    assert medmnist_contract(2, 64, 3).channel_dim == -1 and medmnist_contract(2, 64, 3).spacing is None
    assert InputContract.from_dict(contract.to_dict()) == contract
    contract.load_state_dict(contract.state_dict())  # a resumed run with the same contract
    with pytest.raises(ValueError, match="written with input contract .*'image_size': 64.* this run's input contract"):
        contract.load_state_dict({**contract.to_dict(), "image_size": 64})
    for bad, message in (({"intensity": "zscore"}, "intensity"), ({"spacing": (1.0, -1.0, 1.0)}, "spacing"),
                         ({"percentiles": (5, 500)}, "percentiles"), ({"channel_dim": 2}, "channel_dim")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            InputContract(spatial_dims=3, image_size=28, **bad)
    with pytest.raises(ValueError, match="unknown field"):
        InputContract.from_dict({**contract.to_dict(), "window": 1})


def test_8bit_images_get_exactly_the_training_mapping():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)[None]
    out, record = _mapped(values)
    assert record["rule"] == "8bit_range" and out.dtype == torch.float32
    torch.testing.assert_close(out.as_tensor(), torch.as_tensor(values, dtype=torch.float32) / 255, atol=0, rtol=0)
    # the same 8-bit values stored as 16-bit are not of the training kind: percentiles of the non-zero voxels
    _, record16 = _mapped(values.astype(np.int16))
    assert record16["rule"] == "foreground_percentiles" and record16["foreground_range"][0] > 0


def test_ct_is_windowed_and_the_modality_wins_over_the_stored_type():
    hu = np.array([[[-2000, -1000, 0, 1000, 3000]]], dtype=np.int16)
    out, record = _mapped(hu, modality="CT")
    assert record == {"rule": "hu_window", "method": "hu_window", "modality": "CT", "hu_window": [-1000.0, 1000.0],
                      "target_range": [0.0, 1.0]}  # fmt: skip
    assert out.flatten().tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    _, raw_tag = _mapped(hu.astype(np.uint8), **{"00080060": {"vr": "CS", "Value": ["CT"]}})
    assert raw_tag["rule"] == "hu_window"  # PydicomReader's raw Modality tag is read too


def test_percentile_rule_is_unchanged_by_zero_padding_and_quarter_turns():
    rng = np.random.default_rng(0)
    volume = rng.integers(100, 4000, size=(12, 10, 8)).astype(np.int16)
    _, upright = _mapped(volume[None])
    padded = np.pad(volume, ((6, 6), (3, 9), (0, 5)))
    out, record = _mapped(padded[None])
    turned = np.rot90(np.flip(volume, 2), 1, axes=(0, 1)).copy()
    _, turned_record = _mapped(turned[None])
    assert upright["foreground_range"] == record["foreground_range"] == turned_record["foreground_range"]
    assert float(out[0, 0, 0, 0]) == 0.0  # padding maps to the bottom of the range, as the training background
    low, high = np.percentile(volume, (1, 99))
    assert upright["foreground_range"] == pytest.approx([low, high])


def test_images_without_contrast_are_refused_by_name():
    with pytest.raises(ValueError, match="img.nii: every voxel is 0"):
        _mapped(np.zeros((1, 8, 8), dtype=np.int16))
    with pytest.raises(ValueError, match="img.nii: .*no contrast"):
        _mapped(np.full((1, 8, 8), 7.0, dtype=np.float32))


def test_training_transforms_read_the_exported_files(tmp_path):
    from monai_sre.data import write_nifti

    rgb = np.random.default_rng(1).integers(0, 256, size=(28, 28, 3)).astype(np.uint8)
    path = write_nifti(rgb, tmp_path / "rgb.nii.gz")
    transforms = training_transforms(medmnist_contract(2, 28, 3))
    out = transforms[0]({"image": str(path), "label": 2})
    for t in transforms[1:]:
        out = t(out)
    assert out["image"].shape == (3, 28, 28) and out["label"].dtype == torch.long
    torch.testing.assert_close(out["image"], torch.as_tensor(rgb).permute(2, 0, 1).float() / 255, atol=0, rtol=0)
