# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Slice-geometry checks and the one-series DICOM reader, on pydicom's real series and on written series."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage

from monai_sre.data.dicom import write_dicom_series
from monai_sre.data.dicom_series import (
    DicomSeriesReader,
    is_image_header,
    order_series_slices,
    read_dicom_header,
)
from tests.inference.clinical_data import CT_SERIES, CT_SERIES_GAP, DICOMDIR_TESTS, MR_RADIAL, PYDICOM_DATA


def _headers(folder: Path) -> tuple[list[pydicom.Dataset], list[Path]]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files], files


def test_real_ct_series_is_ordered_along_the_slice_normal():
    headers, files = _headers(CT_SERIES)
    order = order_series_slices(headers, files)
    normal = np.cross(*np.reshape(np.asarray(headers[0].ImageOrientationPatient, dtype=float), (2, 3)))
    along = [float(np.dot(headers[i].ImagePositionPatient, normal)) for i in order]
    assert sorted(order) == list(range(5))
    np.testing.assert_allclose(np.diff(along), 2.5, atol=1e-4)


@pytest.mark.parametrize(
    "folder, expected",
    [
        (CT_SERIES_GAP, r"uneven slice spacing: 202\.500 mm between 17106 and 17136 .* 1\.250 mm \(about 161 missing"),
        (MR_RADIAL, r"different orientations .*localizer, multi-planar or radial"),
    ],
)
def test_real_irregular_series_are_rejected_with_the_files_named(folder, expected):
    headers, files = _headers(folder)
    with pytest.raises(ValueError, match=expected):
        order_series_slices(headers, files)


def test_duplicated_and_missing_slices_are_named(tmp_path):
    headers, files = _headers(CT_SERIES)
    with pytest.raises(ValueError, match=rf"duplicated slice positions: {files[2].name} and copy"):
        order_series_slices(headers + [headers[2]], files + [tmp_path / "copy"])
    with pytest.raises(ValueError, match=r"uneven slice spacing: 5\.000 mm .*about 1 missing slice;"):
        order_series_slices(headers[:2] + headers[3:], files[:2] + files[3:])


def test_slices_of_different_sizes_or_without_position_are_rejected():
    headers, files = _headers(CT_SERIES)
    small = pydicom.Dataset()
    small.update(headers[1])
    small.Rows = 8
    with pytest.raises(ValueError, match=r"slices differ in size: 2062 is 16x16 .*2392 is 8x16"):
        order_series_slices([headers[0], small], files[:2])
    unplaced = pydicom.Dataset()
    unplaced.update(headers[1])
    del unplaced.ImagePositionPatient
    with pytest.raises(ValueError, match=r"2392 has no ImagePositionPatient"):
        order_series_slices([headers[0], unplaced], files[:2])


def test_header_reading_tells_dicom_images_from_other_files():
    assert read_dicom_header(DICOMDIR_TESTS / "README.txt") is None
    assert not is_image_header(read_dicom_header(DICOMDIR_TESTS / "DICOMDIR"))
    header = read_dicom_header(PYDICOM_DATA / "CT_small.dcm")
    assert is_image_header(header) and "PixelData" not in header and header.Modality == "CT"


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")
def test_reader_gives_back_a_written_volume_whatever_the_numbering(tmp_path):
    volume = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4) - 60
    files = write_dicom_series(volume, tmp_path / "s", spacing=(0.5, 0.7, 2.0), modality="CT", uid_seed="x")
    # Scanners do not always number slices in position order: scramble InstanceNumber on disk.
    for f, number in zip(files, (3, 1, 4, 2)):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = number
        ds.save_as(f)
    img = LoadImage(reader=DicomSeriesReader(), image_only=True)([str(f) for f in reversed(files)])
    np.testing.assert_array_equal(img.numpy(), volume)
    np.testing.assert_allclose(np.diag(img.affine.numpy()), [0.5, 0.7, 2.0, 1.0])
    assert img.meta["modality"] == "CT" and img.meta["series_uid"] == str(pydicom.dcmread(files[0]).SeriesInstanceUID)


def test_reader_rejects_a_folder_mixing_series_and_multi_frame_files(tmp_path):
    write_dicom_series(np.zeros((4, 4, 3), np.int16), tmp_path / "mixed" / "a", uid_seed="a")
    write_dicom_series(np.ones((4, 4, 3), np.int16), tmp_path / "b", uid_seed="b")
    shutil.copy(tmp_path / "b" / "slice_0000.dcm", tmp_path / "mixed" / "a" / "other.dcm")
    with pytest.raises(ValueError, match=r"the files belong to 2 series"):
        DicomSeriesReader().read(tmp_path / "mixed" / "a")
    multi = pydicom.dcmread(tmp_path / "b" / "slice_0001.dcm")
    multi.NumberOfFrames = 2
    multi.save_as(tmp_path / "multi.dcm")
    with pytest.raises(ValueError, match=r"multi.dcm: multi-frame DICOM \(2 frames"):
        DicomSeriesReader().read(tmp_path / "multi.dcm")


def test_reader_leaves_nifti_to_other_readers():
    reader = DicomSeriesReader()
    assert reader.verify_suffix(["a/1.2.840.10008", "b.dcm"]) and not reader.verify_suffix(["x.nii.gz"])


def test_pixel_data_length_allows_even_padding_and_counts_packed_bits():
    from pydicom.dataset import Dataset

    from monai_sre.data.dicom_series import check_pixel_data_length

    ds = Dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 3, 3, 8, 1
    ds.PixelData = bytes(10)  # 9 bytes padded to an even length
    check_pixel_data_length(ds, "odd.dcm")
    ds.PixelData = bytes(12)
    with pytest.raises(ValueError, match=r"odd.dcm: the pixel data holds 12 bytes, more than the 9 that"):
        check_pixel_data_length(ds, "odd.dcm")
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 4, 4, 1, 1  # 16 one-bit values: 2 bytes
    ds.PixelData = bytes(2)
    check_pixel_data_length(ds, "mask.dcm")
    ds.SamplesPerPixel, ds.BitsAllocated = 3, 8  # RGB: 48 bytes
    ds.PixelData = bytes(16)
    with pytest.raises(ValueError, match=r"less than the 48 .*\(4 x 4 x 1 x 3 x 8 bits\)"):
        check_pixel_data_length(ds, "rgb.dcm")
