# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Export of real MedMNIST files to NIfTI and DICOM: exact round trip, datalist, resume, bad input, CLI."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest
from medmnist.info import INFO
from monai.data import load_decathlon_datalist

import monai_sre.data.dicom as dicom_module
import monai_sre.data.export as export_module
from monai_sre.cli import main
from monai_sre.data.export import ExportError, export_medmnist
from monai_sre.data.medmnist import MedMNISTChecksumError, MedMNISTMissingError, dataset_info, load_split
from tests.data.conftest import channel_first, monai_load, sitk_array

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader", "ignore:nvImageCodec")

EYE = np.eye(4)


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _check_round_trip(datalist_path: Path, datalist: dict, data_root: Path, split: str, sitk_every: int = 0):
    """Every exported sample of ``split`` loads back as the npz sample, with the same affine for both formats."""
    info = dataset_info(datalist["flag"], datalist["size"])
    images, labels = load_split(info.flag, split, info.size, data_root)
    items = load_decathlon_datalist(str(datalist_path), False, export_module.DATALIST_KEYS[split])
    assert len(items) == datalist["export"]["counts"][split]
    for item in items:
        index = item["index"]
        expected = channel_first(images[index], info.n_channels)
        img = monai_load(item["image"], datalist["channel_dim"])
        array = img.numpy()
        assert array.dtype == np.uint8 and array.shape == expected.shape, item["image"]
        np.testing.assert_array_equal(array, expected, err_msg=item["image"])
        np.testing.assert_array_equal(img.affine.numpy(), EYE)
        assert item["label"] == int(labels[index]) and type(item["label"]) is int
        if info.n_channels == 1:  # grayscale needs no channel hint: the readers' metadata suffices
            np.testing.assert_array_equal(monai_load(item["image"]).numpy(), expected)
        if sitk_every and index % sitk_every == 0:
            array, direction = sitk_array(Path(item["image"]))
            if info.spatial_dims == 3:
                np.testing.assert_array_equal(array, images[index].transpose(2, 1, 0))
            elif datalist["format"] == "dicom":  # one-slice 3D image; RGB as a vector pixel
                np.testing.assert_array_equal(array[0], images[index].swapaxes(0, 1))
            elif info.n_channels == 1:
                np.testing.assert_array_equal(array, images[index].T)
            assert direction in ((-1, 0, 0, 0, -1, 0, 0, 0, 1), (-1, 0, 0, -1))


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
@pytest.mark.parametrize(
    "flag, size, split, limit",
    [
        ("breastmnist", 28, "val", None),  # 2D gray, every sample of the split
        ("retinamnist", 28, "val", None),  # 2D RGB
        ("adrenalmnist3d", 28, "val", None),  # 3D
        ("adrenalmnist3d", 64, "val", 6),  # 3D 64³ (every sample: the slow test below)
    ],
)
def test_exact_round_trip_of_every_exported_sample(exported, data_root, fmt, flag, size, split, limit):
    path, datalist = exported(flag, size, fmt, (split,), limit)
    _check_round_trip(path, datalist, data_root, split, sitk_every=10)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_exact_round_trip_adrenal_64_every_val_sample_and_simpleitk(exported, data_root, fmt):
    path, datalist = exported("adrenalmnist3d", 64, fmt, ("val",), None)
    _check_round_trip(path, datalist, data_root, "val", sitk_every=1)


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["breastmnist", "retinamnist", "adrenalmnist3d"])
def test_exact_round_trip_all_splits_with_simpleitk(exported, data_root, flag):
    for fmt in ("nifti", "dicom"):
        path, datalist = exported(flag, 28, fmt, ("train", "val", "test"), None)
        for split in ("train", "val", "test"):  # MONAI: every sample; SimpleITK: every (3D: every 4th)
            _check_round_trip(path, datalist, data_root, split, sitk_every=4 if flag.endswith("3d") else 1)


def test_datalist_content(exported):
    path, datalist = exported("breastmnist", 28, "nifti", ("val",), None)
    assert path.name == "datalist.json" and datalist["complete"] is True
    assert datalist["flag"] == "breastmnist" and datalist["size"] == 28 and datalist["task"] == "binary-class"
    assert datalist["labels"] == {"0": "malignant", "1": "normal, benign"} and datalist["num_classes"] == 2
    assert datalist["channel_dim"] == "no_channel" and datalist["spatial_dims"] == 2 and datalist["format"] == "nifti"
    assert datalist["source"]["md5"] == INFO["breastmnist"]["MD5"] and datalist["source"]["file"] == "breastmnist.npz"
    assert "training" not in datalist and "test" not in datalist and len(datalist["validation"]) == 78
    first = datalist["validation"][0]
    assert first == {"image": "val/breastmnist_val_000000.nii.gz", "label": first["label"], "index": 0}
    items = load_decathlon_datalist(str(path), False, "validation")
    assert items[0]["image"] == str(path.parent / "val" / "breastmnist_val_000000.nii.gz")

    _, rgb = exported("retinamnist", 28, "dicom", ("val",), None)
    assert rgb["channel_dim"] == -1 and rgb["image_shape"] == [3, 28, 28] and rgb["task"] == "ordinal-regression"
    assert rgb["validation"][5]["image"] == "val/retinamnist_val_000005.dcm"
    vol_path, vol = exported("adrenalmnist3d", 28, "dicom", ("val",), None)
    assert vol["validation"][0]["image"] == "val/adrenalmnist3d_val_000000"
    assert sorted(os.listdir(vol_path.parent / "val" / "adrenalmnist3d_val_000000"))[:2] == [
        "slice_0000.dcm",
        "slice_0001.dcm",
    ]


def test_dicom_series_headers_are_consistent(exported):
    path, datalist = exported("adrenalmnist3d", 28, "dicom", ("val",), None)
    folder = path.parent / datalist["validation"][3]["image"]
    headers = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    assert len(headers) == 28
    assert len({h.StudyInstanceUID for h in headers}) == 1 and len({h.SeriesInstanceUID for h in headers}) == 1
    assert len({h.SOPInstanceUID for h in headers}) == 28
    assert all(h.file_meta.MediaStorageSOPInstanceUID == h.SOPInstanceUID for h in headers)
    assert all(h.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian for h in headers)
    assert [int(h.InstanceNumber) for h in headers] == list(range(1, 29))
    assert [float(h.ImagePositionPatient[2]) for h in headers] == [float(k) for k in range(28)]
    h = headers[0]
    assert [float(v) for v in h.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
    assert [float(v) for v in h.PixelSpacing] == [1, 1] and float(h.SliceThickness) == 1
    assert (h.Modality, h.PhotometricInterpretation, h.BitsAllocated, h.Rows, h.Columns) == (
        "OT",
        "MONOCHROME2",
        8,
        28,
        28,
    )
    assert h.PatientID == "adrenalmnist3d_28_val_000003"
    other = pydicom.dcmread(next((path.parent / datalist["validation"][4]["image"]).iterdir()))
    assert other.StudyInstanceUID != h.StudyInstanceUID and other.SeriesInstanceUID != h.SeriesInstanceUID


def test_rgb_dicom_header(exported):
    path, datalist = exported("retinamnist", 28, "dicom", ("val",), None)
    ds = pydicom.dcmread(path.parent / datalist["validation"][0]["image"])
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration) == ("RGB", 3, 0)
    assert ds.pixel_array.shape == (28, 28, 3)


def test_multi_label_datalist(tmp_path, monkeypatch):
    from tests.data.test_medmnist import _fake_npz

    n = {"train": 4, "val": 3, "test": 2}
    _fake_npz(tmp_path / "chestmnist.npz", n, (28, 28), 14)
    from monai_sre.data.medmnist import file_md5

    monkeypatch.setitem(
        INFO, "chestmnist", {**INFO["chestmnist"], "n_samples": n, "MD5": file_md5(tmp_path / "chestmnist.npz")}
    )
    path = export_medmnist("chestmnist", tmp_path / "out", root=tmp_path, progress=False)
    datalist = json.loads(path.read_text())
    with np.load(tmp_path / "chestmnist.npz") as npz:
        assert [it["label"] for it in datalist["training"]] == npz["train_labels"].tolist()
        assert all(type(v) is int for it in datalist["test"] for v in it["label"])
    assert datalist["multi_label"] is True and datalist["num_classes"] == 14 and datalist["numTraining"] == 4


@pytest.mark.parametrize(
    "flag, fmt, limit, interrupt_after",
    [("breastmnist", "dicom", None, 25), ("breastmnist", "nifti", 30, 7), ("adrenalmnist3d", "dicom", 12, 5)],
)
def test_interrupted_export_resumes_to_the_same_result(
    tmp_path, data_root, monkeypatch, flag, fmt, limit, interrupt_after
):
    splits = ("val", "test")
    reference = export_medmnist(
        flag, tmp_path / "ref", image_format=fmt, splits=splits, root=data_root, progress=False, limit=limit
    ).parent
    write = export_module._write_sample
    calls = []

    def failing(*args, **kwargs):
        if len(calls) == interrupt_after:
            raise KeyboardInterrupt("injected")
        calls.append(args)
        return write(*args, **kwargs)

    monkeypatch.setattr(export_module, "_write_sample", failing)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export_medmnist(flag, out, image_format=fmt, splits=splits, root=data_root, progress=False, limit=limit)
    assert not (out / "datalist.json").exists()
    finished = [p for p in (out / "val").iterdir()]
    assert len(finished) == interrupt_after and not any(p.name.startswith(".") for p in finished)
    monkeypatch.setattr(export_module, "_write_sample", write)
    export_medmnist(flag, out, image_format=fmt, splits=splits, root=data_root, progress=False, limit=limit)
    assert _tree(out) == _tree(reference)


def test_interrupt_inside_a_file_leaves_nothing_trusted(tmp_path, data_root, monkeypatch):
    """A series interrupted after some slices, and a hard kill's leftovers, are never taken as finished."""
    write = dicom_module._Template.write
    slices = []

    def failing(self, path, values, pixels):
        if len(slices) == 28 * 3 + 10:  # inside the 4th series
            raise OSError("disk full (injected)")
        slices.append(path)
        return write(self, path, values, pixels)

    monkeypatch.setattr(dicom_module._Template, "write", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        export_medmnist(
            "adrenalmnist3d", out, image_format="dicom", splits="val", root=data_root, progress=False, limit=6
        )
    assert sorted(p.name for p in (out / "val").iterdir()) == [f"adrenalmnist3d_val_00000{i}" for i in range(3)]
    monkeypatch.setattr(dicom_module._Template, "write", write)
    # What a killed process leaves: a temporary series folder and a temporary file.
    (out / "val" / ".adrenalmnist3d_val_000003.tmp-deadbeef").mkdir()
    (out / "val" / ".adrenalmnist3d_val_000003.tmp-deadbeef" / "slice_0000.dcm").write_bytes(b"partial")
    (out / ".datalist.json.tmp-0123").write_text("{")
    export_medmnist("adrenalmnist3d", out, image_format="dicom", splits="val", root=data_root, progress=False, limit=6)
    names = sorted(p.name for p in (out / "val").iterdir())
    assert names == [f"adrenalmnist3d_val_00000{i}" for i in range(6)]
    assert sorted(p.name for p in out.iterdir()) == [".medmnist_export.json", "datalist.json", "val"]
    reference = export_medmnist(
        "adrenalmnist3d", tmp_path / "ref", image_format="dicom", splits="val", root=data_root, progress=False, limit=6
    ).parent
    assert _tree(out) == _tree(reference)


def test_rerun_is_cheap_and_does_not_read_the_source(tmp_path, data_root, monkeypatch):
    out = tmp_path / "out"
    path = export_medmnist("breastmnist", out, root=data_root, progress=True)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    def no_source(*args, **kwargs):
        raise AssertionError("a finished export looked at the source file")

    monkeypatch.setattr(export_module, "locate", no_source)
    assert export_medmnist("breastmnist", out, root=data_root, progress=False) == path
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # A deleted file is noticed and written again; the rest is kept.
    monkeypatch.undo()
    victim = out / "train" / "breastmnist_train_000100.nii.gz"
    victim.unlink()
    export_medmnist("breastmnist", out, root=data_root, progress=False)
    assert victim.exists()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p not in (victim, path, victim.parent)} == {
        p: t for p, t in before.items() if p not in (victim, path, victim.parent)
    }
    datalist = json.loads(path.read_text())
    assert datalist["numTraining"] == 546 and datalist["numTest"] == 156 and len(datalist["validation"]) == 78


def _nothing_written(out: Path):
    assert not out.exists(), sorted(str(p) for p in out.rglob("*"))


def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, data_root, monkeypatch):
    out = tmp_path / "new" / "out"
    with pytest.raises(ValueError, match=r"unknown MedMNIST flag 'nosuchmnist'; valid flags: .*breastmnist"):
        export_medmnist("nosuchmnist", out, root=data_root)
    with pytest.raises(ValueError, match=r"breastmnist has no size 100; available sizes: 28, 64, 128, 224"):
        export_medmnist("breastmnist", out, size=100, root=data_root)
    with pytest.raises(ValueError, match=r"unknown image format 'png'; valid formats: nifti, dicom"):
        export_medmnist("breastmnist", out, image_format="png", root=data_root)
    with pytest.raises(ValueError, match=r"unknown split"):
        export_medmnist("breastmnist", out, splits=["training"], root=data_root)
    with pytest.raises(ValueError, match=r"limit must be a positive integer"):
        export_medmnist("breastmnist", out, limit=0, root=data_root)
    _nothing_written(tmp_path / "new")

    bad_root = tmp_path / "bad"
    bad_root.mkdir()
    (bad_root / "breastmnist.npz").write_bytes(b"PK\x03\x04 garbage")  # corrupt npz
    with pytest.raises(MedMNISTChecksumError, match=r"expects 750601b1f35ba3300ea97c75c52ff8f6 .*not even a readable"):
        export_medmnist("breastmnist", out, root=bad_root, progress=False)
    shutil.copyfile(data_root / "retinamnist.npz", bad_root / "retinamnist.npz")
    with open(bad_root / "retinamnist.npz", "r+b") as f:  # a flipped byte: MD5 mismatch
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(MedMNISTChecksumError, match=r"expects bd4c0672f1bba3e3a89f0e4e876791e4"):
        export_medmnist("retinamnist", out, root=bad_root, progress=False)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(MedMNISTMissingError, match=r"adrenalmnist3d_64.npz .*17721accfe9fb005146a47d33bc54b2f"):
        export_medmnist("adrenalmnist3d", out, size=64, root=bad_root, progress=False)
    _nothing_written(tmp_path / "new")
    assert sorted(p.name for p in bad_root.iterdir()) == ["breastmnist.npz", "retinamnist.npz"]

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match=r"cannot write to output folder .*a_file/out"):
        export_medmnist("breastmnist", blocker / "out", root=data_root, progress=False)
    with pytest.raises(ExportError, match=r"cannot write to output folder .*a_file: .*not a folder"):
        export_medmnist("breastmnist", blocker, root=data_root, progress=False)
    assert blocker.read_text() == "not a folder"
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ExportError, match=r"cannot write to output folder .*locked/sub"):
            export_medmnist("breastmnist", locked / "sub", root=data_root, progress=False)
        locked.chmod(0o700)
        assert list(locked.iterdir()) == []


def test_a_folder_holds_one_export(tmp_path, data_root):
    out = tmp_path / "out"
    export_medmnist("breastmnist", out, splits="val", root=data_root, progress=False, limit=3)
    with pytest.raises(
        ExportError,
        match=r"already holds a MedMNIST export of breastmnist size 28 as nifti .*export "
        r"breastmnist size 28 as dicom into another folder",
    ):
        export_medmnist("breastmnist", out, image_format="dicom", splits="val", root=data_root, progress=False)
    with pytest.raises(ExportError, match=r"holds no MedMNIST export; choose a new or empty folder"):
        export_medmnist("breastmnist", tmp_path, splits="val", root=data_root, progress=False)
    # The same data with other splits or limits shares the folder; the datalist follows the last call.
    path = export_medmnist("breastmnist", out, splits=["val", "test"], root=data_root, progress=False)
    datalist = json.loads(path.read_text())
    assert len(datalist["validation"]) == 78 and len(datalist["test"]) == 156 and datalist["export"]["limit"] is None


def test_cli_prepare_data(tmp_path, data_root, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "prepare-data",
            "--flag",
            "RetinaMNIST",
            "--size",
            "28",
            "--format",
            "dicom",
            "--out",
            str(out),
            "--splits",
            "val",
            "--data-root",
            str(data_root),
            "--limit",
            "4",
            "--no-progress",
        ]
    )
    assert code == 0 and capsys.readouterr().out.strip() == str(out / "datalist.json")
    datalist = json.loads((out / "datalist.json").read_text())
    assert len(datalist["validation"]) == 4 and datalist["format"] == "dicom"
    code = main(["prepare-data", "--flag", "retina", "--out", str(tmp_path / "x"), "--data-root", str(data_root)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("monai-sre prepare-data: error: unknown MedMNIST flag 'retina'; valid flags:")
    assert len(err.strip().splitlines()) == 1 and "retinamnist" in err
    code = main(["prepare-data", "--flag", "adrenalmnist3d", "--size", "224", "--out", str(tmp_path / "x")])
    assert code == 2 and "available sizes: 28, 64" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_concurrent_exports_into_one_folder_take_turns(tmp_path, data_root):
    """As when every DDP rank of a bundle runs the export: all succeed, and the folder equals a single export."""
    from concurrent.futures import ThreadPoolExecutor

    def run(_):
        return export_medmnist(
            "adrenalmnist3d",
            tmp_path / "out",
            image_format="dicom",
            splits=("val", "test"),
            root=data_root,
            progress=False,
            limit=10,
        )

    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(run, range(4)))
    assert len(set(paths)) == 1
    reference = export_medmnist(
        "adrenalmnist3d",
        tmp_path / "ref",
        image_format="dicom",
        splits=("val", "test"),
        root=data_root,
        progress=False,
        limit=10,
    ).parent
    assert _tree(tmp_path / "out") == _tree(reference)


def test_a_killed_first_run_or_a_lost_marker_does_not_block_the_folder(tmp_path, data_root):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".medmnist_export.json.tmp-0123456789ab").write_text("{")  # killed while writing the marker
    export_medmnist("breastmnist", out, splits="val", root=data_root, progress=False, limit=5)
    (out / ".medmnist_export.json").unlink()  # marker lost; the datalist still says whose folder this is
    path = export_medmnist("breastmnist", out, splits="val", root=data_root, progress=False, limit=8)
    assert len(json.loads(path.read_text())["validation"]) == 8 and (out / ".medmnist_export.json").exists()
    assert sorted(p.name for p in out.iterdir()) == [".medmnist_export.json", "datalist.json", "val"]
