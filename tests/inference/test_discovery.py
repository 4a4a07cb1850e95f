# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Finding inputs: one per NIfTI file and per DICOM series, errors for paths that hold no image."""

from __future__ import annotations

import logging
import shutil

import pydicom

from monai_sre.inference.discovery import discover_inputs
from tests.inference.clinical_data import CT_SERIES, DICOMDIR_TESTS, MR_SINGLE_SLICES, NIBABEL_DATA, PYDICOM_DATA


def test_dicomdir_tree_gives_one_input_per_series(caplog):
    with caplog.at_level(logging.WARNING):
        inputs = discover_inputs([DICOMDIR_TESTS])
    expected: dict[str, int] = {}
    for f in DICOMDIR_TESTS.rglob("*"):
        if f.is_file() and f.name != "README.txt" and "TINY_ALPHA" not in f.parts and "DICOMDIR" not in f.name:
            uid = str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID)
            expected[uid] = expected.get(uid, 0) + 1
    assert {i.series_uid: len(i.files) for i in inputs} == expected
    assert len(inputs) == 13 and all(i.kind == "dicom" and i.error is None for i in inputs)
    ct = next(i for i in inputs if i.path == str(CT_SERIES))
    assert ct.modality == "CT" and len(ct.files) == 5
    # README files, DICOMDIR indexes and TINY_ALPHA's image-less stubs are skipped, and said so.
    assert "skipped 2 file(s) that are neither NIfTI nor DICOM" in caplog.text
    assert "58 DICOM file(s) without an image" in caplog.text


def test_folder_mixing_series_is_split_never_merged(tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(MR_SINGLE_SLICES, mixed)
    for f in CT_SERIES.iterdir():
        shutil.copy(f, mixed / f"ct_{f.name}")
    inputs = discover_inputs([mixed])
    assert sorted(len(i.files) for i in inputs) == [1, 1, 1, 5]
    assert len({i.series_uid for i in inputs}) == 4
    ct = next(i for i in inputs if len(i.files) == 5)
    assert ct.path == str(mixed) and ct.image == sorted(str(mixed / f"ct_{f.name}") for f in CT_SERIES.iterdir())


def test_explicit_files_keep_the_callers_order_and_bad_paths_get_reasons(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "a.txt").write_text("x")
    paths = [
        NIBABEL_DATA / "anatomical.nii",
        tmp_path / "empty",
        tmp_path / "notes.txt",
        PYDICOM_DATA / "CT_small.dcm",
        DICOMDIR_TESTS / "DICOMDIR",
        tmp_path / "missing.nii.gz",
        tmp_path / "only_text",
    ]
    inputs = discover_inputs(paths)
    assert [i.kind for i in inputs] == ["nifti", "invalid", "invalid", "dicom", "invalid", "invalid", "invalid"]
    assert [i.path for i in inputs] == [str(p) for p in paths]
    errors = [i.error for i in inputs]
    assert errors[1] == f"{tmp_path / 'empty'}: no NIfTI or DICOM image found (the folder is empty)"
    assert errors[2] == f"{tmp_path / 'notes.txt'}: not a NIfTI (.nii, .nii.gz) or DICOM file (no DICM preamble)"
    assert errors[4].endswith("DICOMDIR: a DICOM file without an image (e.g. a DICOMDIR, report or structure set)")
    assert errors[5] == f"{tmp_path / 'missing.nii.gz'}: no such file or folder"
    assert "no NIfTI or DICOM image found (1 other file(s)" in errors[6]
    assert inputs[3].files == (str(PYDICOM_DATA / "CT_small.dcm"),) and inputs[3].modality == "CT"


def test_damaged_header_element_is_the_files_error_in_a_file_and_in_a_folder(tmp_path):
    # pydicom decodes an element when it is first read: a corrupted VR of Modality (found by the slow DICOM fuzz test)
    # raised NotImplementedError out of discovery instead of an error naming the file
    data = (PYDICOM_DATA / "CT_small.dcm").read_bytes()
    tag = b"\x08\x00\x60\x00CS"  # (0008,0060) Modality, explicit VR little endian
    assert data.count(tag) == 1
    folder = tmp_path / "study"
    folder.mkdir()
    damaged = folder / "damaged.dcm"
    damaged.write_bytes(data.replace(tag, b"\x08\x00\x60\x00C\x00"))
    shutil.copy(PYDICOM_DATA / "CT_small.dcm", folder / "good.dcm")
    single = discover_inputs([damaged])
    assert [i.kind for i in single] == ["invalid"]
    assert single[0].error.startswith(f"{damaged}: unreadable DICOM header (Unknown Value Representation")
    from_folder = discover_inputs([folder])
    assert sorted(i.kind for i in from_folder) == ["dicom", "invalid"]
    assert [i.error for i in from_folder if i.kind == "invalid"] == [single[0].error]
