# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Property-based tests (hypothesis): random header and byte corruptions of the files the project reads.

Whatever the corruption, the readers and the preprocessing either give a valid result or fail with the project's own
clear error: a result row naming the file (clinical inputs), ``MedMNISTCorruptError`` (MedMNIST ``.npz``), or
``ValueError``/``FileNotFoundError`` naming the datalist. No other exception escapes, nothing hangs, no error is an
internal one (``IndexError``, ``TypeError``, an allocation failure, ...) and no probability is NaN.

The fast runs use a fixed seed (``derandomize``) so the suite gives the same answer twice; the slow ones explore.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.bundle import ConfigParser

from monai_sre.data import MedMNISTCorruptError, export_medmnist, load_datalist, load_split
from monai_sre.inference import predict_with_model
from tests.inference.clinical_data import tiny_network_def
from tests.reliability.bad_inputs import CT_SMALL

FAST = settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
# Exceptions that mean a bug or an unguarded library call, not a diagnosis of the file. A row names the exception's
# type after the path when it is not a ValueError/OSError (see monai_sre.inference.predict).
INTERNAL = re.compile(
    r"^(IndexError|KeyError|TypeError|AttributeError|ZeroDivisionError|UnboundLocalError|AssertionError|"
    r"RecursionError|NameError|OverflowError|MemoryError|error|RuntimeError|NotImplementedError)\b"
)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose files each example overwrites (hypothesis runs many examples per test call)."""
    return tmp_path_factory.mktemp("fuzz")


class _Models(dict):
    """``{spatial_dims: network}``, shown briefly in hypothesis' reports."""

    def __repr__(self) -> str:
        return "tiny ResNets {2: ..., 3: ...}"


@pytest.fixture(scope="module")
def models() -> dict[int, torch.nn.Module]:
    torch.manual_seed(0)
    return _Models({d: ConfigParser({"n": tiny_network_def(d, 1)}).get_parsed_content("n").eval() for d in (2, 3)})


def _check_row(rows: list[dict], path: Path) -> None:
    assert len(rows) == 1
    row = rows[0]
    if row["status"] == "ok":
        probs = [v for k, v in row.items() if k.startswith("prob_")]
        assert all(np.isfinite(probs)) and abs(sum(probs) - 1) < 1e-4, row
        return
    assert row["status"] == "error"
    error = row["error"]
    assert isinstance(error, str) and "\n" not in error and str(path) in error, error
    assert not INTERNAL.match(error.removeprefix(f"{path}: ")) and "allocate" not in error, error


# --------------------------------------------------------------------------------------------------------------
# NIfTI: header fields and bytes
# --------------------------------------------------------------------------------------------------------------

HEADER_FIELDS = {
    "dim": st.lists(st.integers(-3, 40), min_size=8, max_size=8),
    "datatype": st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 2304, 9999]),
    "bitpix": st.sampled_from([0, 1, 8, 16, 32, 64, 128, 13]),
    "pixdim": st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=8, max_size=8),
    "vox_offset": st.floats(-1000, 1e6, width=32),
    "scl_slope": st.floats(allow_nan=True, allow_infinity=True, width=32),
    "scl_inter": st.floats(allow_nan=True, allow_infinity=True, width=32),
    "qform_code": st.integers(-5, 5),
    "sform_code": st.integers(-5, 5),
    "srow_x": st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=4, max_size=4),
    "quatern_b": st.floats(allow_nan=True, allow_infinity=True, width=32),
}


def _nifti_bytes(spatial_dims: int) -> bytes:
    shape = (12, 10, 8) if spatial_dims == 3 else (12, 10)
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    image = nib.Nifti1Image(data, np.diag([1.5, 1.0, 2.0, 1.0]))
    return image.to_bytes()


def _with_header(raw: bytes, fields: dict) -> bytes:
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    array = header.binaryblock
    block = np.frombuffer(array, dtype=header.structarr.dtype).copy()
    for name, value in fields.items():
        try:
            block[name] = value
        except (ValueError, OverflowError, TypeError):
            continue  # a value the field cannot hold is not a corruption a file can carry
    return block.tobytes() + raw[len(array) :]


corruptions = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8)


@st.composite
def nifti_files(draw) -> tuple[int, bytes]:
    dims = draw(st.sampled_from([2, 3]))
    raw = _nifti_bytes(dims)
    chosen = draw(st.lists(st.sampled_from(sorted(HEADER_FIELDS)), unique=True, max_size=3))
    fields = {name: draw(HEADER_FIELDS[name]) for name in chosen}
    data = bytearray(_with_header(raw, fields))
    for offset, value in draw(corruptions):
        data[offset % len(data)] = value
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return dims, bytes(data if cut is None else data[:cut])


def _predict_nifti(work: Path, models, case: tuple[int, bytes], gz: bool) -> None:
    dims, data = case
    path = work / ("image.nii.gz" if gz else "image.nii")
    if gz:
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    rows = predict_with_model([path], models[dims], {"spatial_dims": dims, "image_size": 16})
    _check_row(rows, path)


@FAST
@given(case=nifti_files(), gz=st.booleans())
def test_corrupt_nifti_gives_a_row_naming_the_file(work, models, case, gz):
    _predict_nifti(work, models, case, gz)


@pytest.mark.slow
@SLOW
@given(case=nifti_files(), gz=st.booleans())
def test_corrupt_nifti_explored(work, models, case, gz):
    _predict_nifti(work, models, case, gz)


# --------------------------------------------------------------------------------------------------------------
# DICOM: a real CT slice with damaged header values and bytes, for 2D and 3D models
# --------------------------------------------------------------------------------------------------------------

DICOM_VALUES = {
    "Rows": st.integers(0, 70000),
    "Columns": st.integers(0, 70000),
    "BitsAllocated": st.sampled_from([0, 1, 7, 8, 12, 16, 32, 64]),
    "BitsStored": st.integers(0, 40),
    "HighBit": st.integers(0, 40),
    "PixelRepresentation": st.integers(0, 3),
    "SamplesPerPixel": st.integers(0, 5),
    "PhotometricInterpretation": st.sampled_from(["MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "XYZ", ""]),
    "NumberOfFrames": st.integers(-1, 5),
    "PixelSpacing": st.lists(st.floats(-10, 1e6, allow_nan=False), min_size=0, max_size=3),
    "RescaleSlope": st.floats(allow_nan=True, allow_infinity=True),
    "RescaleIntercept": st.floats(-1e30, 1e30),
    "ImageOrientationPatient": st.lists(st.floats(-2, 2), min_size=0, max_size=7),
    "ImagePositionPatient": st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=4),
    "Modality": st.sampled_from(["CT", "MR", "", "XX"]),
}


@st.composite
def dicom_files(draw) -> bytes:
    ds = pydicom.dcmread(CT_SMALL)
    for keyword in draw(st.lists(st.sampled_from(sorted(DICOM_VALUES)), unique=True, max_size=3)):
        value = draw(DICOM_VALUES[keyword])
        try:
            setattr(ds, keyword, value)
        except (ValueError, TypeError, OverflowError):
            continue
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=False)
    except Exception:  # pydicom refuses to write this value (struct.error, OSError, ...): mutate bytes only
        buffer = io.BytesIO(CT_SMALL.read_bytes())
    data = bytearray(buffer.getvalue())
    for offset, value in draw(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6)):
        data[offset % len(data)] = value
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return bytes(data if cut is None else data[:cut])


def _predict_dicom(work: Path, models, data: bytes, dims: int) -> None:
    path = work / "slice.dcm"
    path.write_bytes(data)
    rows = predict_with_model([path], models[dims], {"spatial_dims": dims, "image_size": 16, "spacing": None})
    _check_row(rows, path)


@FAST
@given(data=dicom_files(), dims=st.sampled_from([2, 3]))
def test_corrupt_dicom_gives_a_row_naming_the_file(work, models, data, dims):
    _predict_dicom(work, models, data, dims)


@pytest.mark.slow
@SLOW
@given(data=dicom_files(), dims=st.sampled_from([2, 3]))
def test_corrupt_dicom_explored(work, models, data, dims):
    _predict_dicom(work, models, data, dims)


# --------------------------------------------------------------------------------------------------------------
# MedMNIST npz: byte corruptions past the MD5 check (verify=False exercises the reader's own checks)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def npz_bytes(data_root: Path) -> bytes:
    return (data_root / "breastmnist.npz").read_bytes()


@FAST
@given(
    changes=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_corrupt_npz_raises_only_medmnist_errors(work, npz_bytes, changes, cut):
    data = bytearray(npz_bytes)
    for where, value in changes:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    root = work / "npz"
    root.mkdir(exist_ok=True)
    (root / "breastmnist.npz").write_bytes(bytes(data))
    try:
        images, labels = load_split("breastmnist", "val", root=root, verify=False)
    except MedMNISTCorruptError as e:
        assert str(root / "breastmnist.npz") in str(e) and "\n" not in str(e)
        return
    # a change the format cannot see (only the MD5 check, skipped here, would): the layout is still right
    assert images.shape == (78, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (78,) and labels.dtype == np.int64


# --------------------------------------------------------------------------------------------------------------
# Datalists: any JSON a user may hand a bundle
# --------------------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def export(tmp_path_factory, data_root) -> Path:
    return Path(export_medmnist("breastmnist", tmp_path_factory.mktemp("export"), root=data_root, progress=False,
                                limit=3, splits="train")).parent  # fmt: skip


@FAST
@given(
    item=st.fixed_dictionaries(
        {}, optional={"image": st.sampled_from(["train/breastmnist_train_000000.nii.gz", "nope.nii", ""]) | json_values,
                      "label": json_values}),  # fmt: skip
    top=json_values,
    shape=st.sampled_from(["list", "top"]),
)
def test_any_datalist_json_is_read_or_refused_with_a_clear_error(export, item, top, shape):
    content = {"training": [item]} if shape == "list" else top
    path = export / "fuzzed.json"
    path.write_text(json.dumps(content))
    try:
        items = load_datalist(path, "training", num_classes=2)
    except (ValueError, FileNotFoundError) as e:
        assert str(path) in str(e) and "\n" not in str(e), str(e)
        return
    assert [i["label"] for i in items] in ([0], [1]) and Path(items[0]["image"]).exists()
