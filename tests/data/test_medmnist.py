# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""MedMNIST files: metadata from medmnist.INFO, root resolution, MD5 checks, download/offline, split loading."""

from __future__ import annotations

import io
import shutil
import socket
import urllib.error
import zipfile
from pathlib import Path

import medmnist
import numpy as np
import pytest
from medmnist.info import INFO

import monai_sre.data.medmnist as mm
from monai_sre.data.medmnist import (
    MedMNISTChecksumError,
    MedMNISTCorruptError,
    MedMNISTMissingError,
    available_flags,
    available_sizes,
    dataset_info,
    file_md5,
    load_labels,
    load_split,
    locate,
    resolve_data_root,
)


def test_every_flag_and_size_medmnist_knows():
    assert set(available_flags()) == set(INFO) and len(available_flags()) == 18
    for flag in available_flags():
        three_d = flag.endswith("3d")
        assert available_sizes(flag) == ((28, 64) if three_d else (28, 64, 128, 224))
        for size in available_sizes(flag):
            info = dataset_info(flag, size)
            assert info.spatial_dims == (3 if three_d else 2)
            assert info.md5 == INFO[flag]["MD5" if size == 28 else f"MD5_{size}"]
            assert info.filename == (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
            assert info.n_samples == INFO[flag]["n_samples"] and info.n_channels == INFO[flag]["n_channels"]


def test_metadata_of_the_test_datasets():
    breast = dataset_info("BreastMNIST")
    assert (breast.task, breast.n_channels, breast.labels) == ("binary-class", 1, {0: "malignant", 1: "normal, benign"})
    assert breast.n_samples == {"train": 546, "val": 78, "test": 156} and breast.image_shape == (28, 28)
    assert breast.channel_dim == "no_channel" and not breast.multi_label
    retina = dataset_info("retinamnist")
    assert retina.task == "ordinal-regression" and retina.n_classes == 5 and retina.image_shape == (28, 28, 3)
    assert retina.channel_dim == -1
    adrenal = dataset_info("adrenalmnist3d", 64)
    assert adrenal.image_shape == (64, 64, 64) and adrenal.filename == "adrenalmnist3d_64.npz"
    assert adrenal.md5 == "17721accfe9fb005146a47d33bc54b2f"
    chest = dataset_info("chestmnist", 224)
    assert chest.multi_label and chest.n_classes == 14 and chest.labels[13] == "hernia"


def test_unknown_flag_and_unsupported_size_are_clear_errors():
    with pytest.raises(
        ValueError,
        match=r"unknown MedMNIST flag 'brestmnist'; valid flags: pathmnist, chestmnist.*"
        r"breastmnist.*adrenalmnist3d",
    ):
        dataset_info("brestmnist")
    with pytest.raises(ValueError, match=r"MedMNIST adrenalmnist3d has no size 128; available sizes: 28, 64$"):
        dataset_info("adrenalmnist3d", 128)
    with pytest.raises(ValueError, match=r"no size 32; available sizes: 28, 64, 128, 224"):
        load_split("breastmnist", "val", size=32)
    with pytest.raises(ValueError, match=r"unknown split 'valid'; valid splits: train, val, test"):
        load_split("breastmnist", "valid")


def test_data_root_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("MONAI_SRE_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("MONAI_SRE_DATA_ROOT")
    assert resolve_data_root() == Path(medmnist.info.DEFAULT_ROOT)
    monkeypatch.setenv("MONAI_SRE_DATA_ROOT", "")
    assert resolve_data_root() == Path(medmnist.info.DEFAULT_ROOT)


@pytest.mark.parametrize(
    "flag, size, split, shape, counts",
    [
        ("breastmnist", 28, "val", (78, 28, 28), [21, 57]),
        ("retinamnist", 28, "val", (120, 28, 28, 3), [54, 12, 28, 20, 6]),
        ("adrenalmnist3d", 28, "test", (298, 28, 28, 28), [229, 69]),
        ("adrenalmnist3d", 64, "val", (98, 64, 64, 64), [76, 22]),
    ],
)
def test_load_split_matches_the_npz(data_root, flag, size, split, shape, counts):
    images, labels = load_split(flag, split, size, data_root)
    with np.load(data_root / dataset_info(flag, size).filename) as npz:
        np.testing.assert_array_equal(images, npz[f"{split}_images"])
        np.testing.assert_array_equal(labels, npz[f"{split}_labels"][:, 0])
    assert images.shape == shape and images.dtype == np.uint8
    assert labels.shape == (shape[0],) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == counts
    np.testing.assert_array_equal(load_labels(flag, split, size, data_root), labels)


def _fake_npz(path: Path, n: dict, shape: tuple, label_width: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in n.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (count,) + shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (count, label_width), dtype=np.uint8)
    np.savez_compressed(path, **arrays)


@pytest.fixture
def fake_chestmnist(monkeypatch, tmp_path):
    """A small ChestMNIST-shaped file (14 binary labels) registered in INFO with its own MD5 and split sizes."""
    n = {"train": 5, "val": 3, "test": 4}
    _fake_npz(tmp_path / "chestmnist.npz", n, (28, 28), 14)
    entry = {**INFO["chestmnist"], "n_samples": n, "MD5": file_md5(tmp_path / "chestmnist.npz")}
    monkeypatch.setitem(INFO, "chestmnist", entry)
    return tmp_path


def test_multi_label_tasks_keep_all_labels(fake_chestmnist):
    images, labels = load_split("chestmnist", "val", root=fake_chestmnist)
    with np.load(fake_chestmnist / "chestmnist.npz") as npz:
        np.testing.assert_array_equal(labels, npz["val_labels"])
    assert images.shape == (3, 28, 28) and labels.shape == (3, 14) and labels.dtype == np.int64


def test_md5_is_checked_unless_verify_is_false(data_root, monkeypatch):
    path = locate("breastmnist", root=data_root, download=False)
    assert path == data_root / "breastmnist.npz" and file_md5(path) == INFO["breastmnist"]["MD5"]

    def no_hash(*args, **kwargs):
        raise AssertionError("hashed")

    monkeypatch.setattr(mm.hashlib, "md5", no_hash)
    assert locate("breastmnist", root=data_root, download=False, verify=False) == path
    load_labels("breastmnist", "val", root=data_root, verify=False)
    with pytest.raises(AssertionError, match="hashed"):  # no cache: every check reads the file
        locate("breastmnist", root=data_root, download=False)


def test_md5_mismatch_names_the_expected_md5(data_root, tmp_path):
    shutil.copyfile(data_root / "breastmnist.npz", tmp_path / "breastmnist.npz")
    with open(tmp_path / "breastmnist.npz", "ab") as f:
        f.write(b"\0")
    with pytest.raises(
        MedMNISTChecksumError,
        match=r"breastmnist.npz has MD5 [0-9a-f]{32}, but medmnist 3\.\d+\.\d+ "
        r"expects 750601b1f35ba3300ea97c75c52ff8f6 .*a readable zip.*Delete it",
    ):
        load_split("breastmnist", "val", root=tmp_path)


def test_corrupt_npz_is_reported(data_root, tmp_path):
    truncated = (data_root / "retinamnist.npz").read_bytes()[:100_000]
    (tmp_path / "retinamnist.npz").write_bytes(truncated)
    with pytest.raises(
        MedMNISTChecksumError,
        match=r"expects bd4c0672f1bba3e3a89f0e4e876791e4 .*not even a readable " r"npz/zip archive.*corrupt, truncated",
    ):
        load_split("retinamnist", "val", root=tmp_path)
    # Without the MD5 check the reader itself refuses the file.
    with pytest.raises(MedMNISTCorruptError, match=r"retinamnist.npz is not a readable npz file"):
        load_split("retinamnist", "val", root=tmp_path, verify=False)
    # A readable zip whose arrays do not have the MedMNIST layout.
    _fake_npz(tmp_path / "breastmnist.npz", {"train": 2, "val": 2, "test": 2}, (28, 28), 1)
    with pytest.raises(MedMNISTCorruptError, match=r"val_labels is uint8 \(2, 1\), expected uint8 \(78, 1\)"):
        load_split("breastmnist", "val", root=tmp_path, verify=False)
    with zipfile.ZipFile(tmp_path / "breastmnist.npz", "w") as z:
        z.writestr("nothing.npy", b"")
    with pytest.raises(MedMNISTCorruptError, match=r"has no array 'val_labels': not a MedMNIST file"):
        load_split("breastmnist", "val", root=tmp_path, verify=False)


def test_missing_file_offline_names_file_md5_and_place(tmp_path, monkeypatch):
    def offline(url, timeout=None):  # what urllib raises without a network
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(mm.urllib.request, "urlopen", offline)
    root = tmp_path / "data"
    with pytest.raises(MedMNISTMissingError) as err:
        locate("adrenalmnist3d", 64, root=root)
    message = str(err.value)
    assert "adrenalmnist3d_64.npz" in message and "17721accfe9fb005146a47d33bc54b2f" in message
    assert str(root / "adrenalmnist3d_64.npz") in message and "downloading it failed (offline?" in message
    assert "https://zenodo.org/records/10519652/files/adrenalmnist3d_64.npz" in message
    assert isinstance(err.value, FileNotFoundError) and list(root.iterdir()) == []  # no download leftovers
    with pytest.raises(
        MedMNISTMissingError,
        match=r"breastmnist.npz .* is not in .* and downloading is disabled; "
        r"download .* check that its MD5 is 750601b1f35ba3300ea97c75c52ff8f6",
    ):
        load_split("breastmnist", "val", root=tmp_path / "empty", download=False)


def test_download_uses_the_medmnist_url_with_a_timeout_and_is_verified(tmp_path, monkeypatch, data_root):
    calls = []

    def fake_urlopen(url, timeout=None):  # the network, replaced by the verified local file
        calls.append((url, timeout))
        return open(data_root / "breastmnist.npz", "rb")

    monkeypatch.setattr(mm.urllib.request, "urlopen", fake_urlopen)
    default_timeout = socket.getdefaulttimeout()
    root = tmp_path / "new" / "root"
    images, _ = load_split("breastmnist", "val", root=root)
    assert images.shape == (78, 28, 28) and calls == [(INFO["breastmnist"]["url"], mm.DOWNLOAD_TIMEOUT_S)]
    assert socket.getdefaulttimeout() == default_timeout  # the process-wide default is left alone
    assert sorted(p.name for p in root.iterdir()) == ["breastmnist.npz"]
    load_split("breastmnist", "test", root=root)
    assert len(calls) == 1  # present now: no second download

    # A download with the wrong content is rejected and not kept.
    monkeypatch.setattr(mm.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"not the data"))
    with pytest.raises(MedMNISTChecksumError, match="expects 0744692d530f8e62ec473284d019b0c7"):
        locate("dermamnist", root=root)
    assert sorted(p.name for p in root.iterdir()) == ["breastmnist.npz"]
