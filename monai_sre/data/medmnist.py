# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""MedMNIST data files: where they are, what they hold, and loading a split as arrays.

Data root. :func:`resolve_data_root` picks the folder holding the ``.npz`` files. It takes the explicit
``root`` argument if given, else the ``MONAI_SRE_DATA_ROOT`` environment variable, else medmnist's own default
cache (``~/.medmnist``). File names follow medmnist 3.x: ``{flag}.npz`` for size 28 and ``{flag}_{size}.npz``
otherwise. Every flag and size that ``medmnist.INFO`` lists is known: 28/64/128/224 for 2D, 28/64 for 3D.
Every file is checked against the MD5 in ``medmnist.INFO`` before use (``verify=True``; nothing is cached between
calls, so a caller reading several splits checks once and passes ``verify=False`` after that). A missing file is
downloaded from its URL in ``medmnist.INFO`` (the one medmnist's own downloader uses) when ``download=True`` and the
network allows, with a timeout on that connection (:data:`DOWNLOAD_TIMEOUT_S`). When the download fails (offline),
the error names the file, its expected MD5, its URL and the folder to put it in.

Orientation convention (one convention for npz, NIfTI and DICOM; rotation results depend on it): the array MONAI
gives back equals the npz array, axes in the same order. ``LoadImage`` + ``EnsureChannelFirst`` of an exported
sample gives ``image[None]`` for grayscale 2D ``(H, W)`` and 3D ``(D0, D1, D2)`` samples. For RGB 2D ``(H, W, 3)``
it gives ``image.transpose(2, 0, 1)``, with ``EnsureChannelFirst(channel_dim=-1)`` because MONAI reads a 2D RGB
NIfTI or DICOM file with no channel dimension marked. npz axis ``i`` is MONAI spatial axis ``i``. The affine is
``diag(spacing)`` (1 mm) in RAS for NIfTI and DICOM alike, so ``Orientation(axcodes="RAS")`` changes nothing.
See :mod:`monai_sre.data.dicom` for how DICOM stores this and what SimpleITK reads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "ENV_DATA_ROOT",
    "SPLITS",
    "MedMNISTError",
    "MedMNISTMissingError",
    "MedMNISTChecksumError",
    "MedMNISTCorruptError",
    "MedMNISTInfo",
    "available_flags",
    "available_sizes",
    "resolve_data_root",
    "dataset_info",
    "bundle_dataset_info",
    "file_md5",
    "locate",
    "load_split",
    "load_labels",
    "iter_images",
]

#: Environment variable naming the folder that holds the MedMNIST ``.npz`` files.
ENV_DATA_ROOT = "MONAI_SRE_DATA_ROOT"
#: The MedMNIST splits, in order.
SPLITS = ("train", "val", "test")
#: Seconds a download may stall before it counts as failed (offline machines often just hang).
DOWNLOAD_TIMEOUT_S = 60.0


class MedMNISTError(RuntimeError):
    """Base class of the errors about MedMNIST data files."""


class MedMNISTMissingError(MedMNISTError, FileNotFoundError):
    """The ``.npz`` file is not in the data root and could not be downloaded."""


class MedMNISTChecksumError(MedMNISTError):
    """The ``.npz`` file's MD5 differs from ``medmnist.INFO``: corrupt, truncated or another release."""


class MedMNISTCorruptError(MedMNISTError):
    """The ``.npz`` file cannot be read, or its arrays do not have the layout ``medmnist.INFO`` describes."""


def _info_table() -> dict:
    from medmnist.info import INFO

    return INFO


def _medmnist_version() -> str:
    from medmnist.info import __version__

    return __version__


def available_flags() -> tuple[str, ...]:
    """All MedMNIST flags that the installed ``medmnist`` knows, e.g. ``"breastmnist"``, ``"adrenalmnist3d"``."""
    return tuple(_info_table())


def _check_flag(flag: str) -> str:
    if not isinstance(flag, str):
        raise TypeError(f"a MedMNIST flag is a string, got {type(flag).__name__}")
    key = flag.strip().lower()
    if key not in _info_table():
        raise ValueError(f"unknown MedMNIST flag {flag!r}; valid flags: {', '.join(available_flags())}")
    return key


def available_sizes(flag: str) -> tuple[int, ...]:
    """Image sizes released for ``flag``: those with an MD5 in ``medmnist.INFO`` (28 plus e.g. 64, 128, 224)."""
    entry = _info_table()[_check_flag(flag)]
    sizes = [28] if "MD5" in entry else []
    sizes += sorted(int(k[4:]) for k in entry if k.startswith("MD5_") and k[4:].isdigit())
    return tuple(sizes)


@dataclass(frozen=True)
class MedMNISTInfo:
    """Metadata of one MedMNIST file, from ``medmnist.INFO``.

    Attributes:
        flag: the medmnist flag, e.g. ``"breastmnist"``.
        size: image size (28, 64, 128 or 224).
        task: medmnist's task string, e.g. ``"binary-class"``, ``"multi-label, binary-class"``.
        n_channels: 1 (grayscale) or 3 (RGB).
        labels: label names, keyed by class index (the label's index for multi-label tasks).
        n_samples: number of samples per split.
        spatial_dims: 2 or 3.
        md5: expected MD5 of the ``.npz`` file.
        filename: ``{flag}.npz`` (size 28) or ``{flag}_{size}.npz``.
        url: where medmnist downloads the file from.
        license: the data's license.
        python_class: medmnist's dataset class name, e.g. ``"BreastMNIST"``.
        description: medmnist's description of the dataset.
    """

    flag: str
    size: int
    task: str
    n_channels: int
    labels: dict[int, str]
    n_samples: dict[str, int]
    spatial_dims: int
    md5: str
    filename: str
    url: str
    license: str
    python_class: str
    description: str = field(default="", repr=False)

    @property
    def multi_label(self) -> bool:
        """Whether a sample has several binary labels (ChestMNIST): labels come as ``(N, L)``."""
        return "multi-label" in self.task

    @property
    def n_classes(self) -> int:
        """Number of classes (number of binary labels for multi-label tasks)."""
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one sample in the npz: ``(S, S)``, ``(S, S, 3)`` or ``(S, S, S)``."""
        shape = (self.size,) * self.spatial_dims
        return shape + (3,) if self.n_channels == 3 else shape

    @property
    def channel_dim(self) -> str | int:
        """``EnsureChannelFirst(channel_dim=...)`` for exported files: ``"no_channel"`` (gray) or ``-1`` (RGB)."""
        return -1 if self.n_channels > 1 else "no_channel"


def dataset_info(flag: str, size: int = 28) -> MedMNISTInfo:
    """Metadata of MedMNIST ``flag`` at ``size``.

    Raises:
        ValueError: for an unknown flag (the message lists the valid ones) or a size not released for ``flag``.
    """
    key = _check_flag(flag)
    sizes = available_sizes(key)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) not in sizes:
        raise ValueError(f"MedMNIST {key} has no size {size!r}; available sizes: {', '.join(str(s) for s in sizes)}")
    size = int(size)
    entry = _info_table()[key]
    suffix = "" if size == 28 else f"_{size}"
    import medmnist.dataset as mds

    cls = getattr(mds, entry["python_class"], None)
    spatial_dims = 3 if (cls is not None and issubclass(cls, mds.MedMNIST3D)) or key.endswith("3d") else 2
    return MedMNISTInfo(
        flag=key,
        size=size,
        task=entry["task"],
        n_channels=int(entry["n_channels"]),
        labels={int(k): v for k, v in entry["label"].items()},
        n_samples={s: int(entry["n_samples"][s]) for s in SPLITS},
        spatial_dims=spatial_dims,
        md5=entry[f"MD5{suffix}"],
        filename=f"{key}{suffix}.npz",
        url=entry.get(f"url{suffix}", ""),
        license=entry.get("license", ""),
        python_class=entry["python_class"],
        description=entry.get("description", ""),
    )


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the MedMNIST ``.npz`` files (not created here).

    Order: ``root`` if given; else ``$MONAI_SRE_DATA_ROOT`` if set and non-empty; else medmnist's default cache
    (``medmnist.info.DEFAULT_ROOT``, normally ``~/.medmnist``).
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_DATA_ROOT, "").strip()
    if env:
        return Path(env).expanduser()
    try:
        from medmnist.info import DEFAULT_ROOT
    except Exception:  # medmnist creates the folder on import and may fail; fall back to its documented place
        DEFAULT_ROOT = None
    return Path(DEFAULT_ROOT) if DEFAULT_ROOT else Path("~/.medmnist").expanduser()


def file_md5(path: str | os.PathLike) -> str:
    """MD5 hex digest of a file (read in 1 MiB blocks).

    Every call reads the file: nothing is cached between calls. Code that reads several splits of one file checks
    it once (:func:`locate`) and passes ``verify=False`` to the readers after that, as :func:`export_medmnist
    <monai_sre.data.export.export_medmnist>` does.
    """
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _where_to_put(info: MedMNISTInfo, root: Path) -> str:
    return (
        f"download {info.url or info.filename} , check that its MD5 is {info.md5}, and save it as "
        f"{root / info.filename} (or point ${ENV_DATA_ROOT} / --data-root at the folder that holds it)"
    )


def _missing_error(info: MedMNISTInfo, root: Path, reason: str) -> MedMNISTMissingError:
    return MedMNISTMissingError(
        f"MedMNIST file {info.filename} ({info.flag}, size {info.size}) is not in {root} and {reason}; "
        + _where_to_put(info, root)
    )


def _verify(path: Path, info: MedMNISTInfo) -> None:
    actual = file_md5(path)
    if actual != info.md5:
        what = "a readable zip" if zipfile.is_zipfile(path) else "not even a readable npz/zip archive"
        raise MedMNISTChecksumError(
            f"{path} has MD5 {actual}, but medmnist {_medmnist_version()} expects {info.md5} for {info.filename} "
            f"({what}): the file is corrupt, truncated or from another release. Delete it and "
            + _where_to_put(info, path.parent)
        )


def _download(info: MedMNISTInfo, root: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download ``info.filename`` from ``info.url`` into ``root``, via a temporary folder, an MD5 check and a rename."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _missing_error(info, root, f"the folder cannot be created to download it into ({e})") from e
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    except OSError as e:
        raise _missing_error(info, root, f"the folder is not writable to download it into ({e})") from e
    try:
        if not info.url:
            raise _missing_error(info, root, "medmnist.INFO gives no URL to download it from")
        # The URL medmnist's own downloader uses (medmnist.INFO); a timeout on this connection only, so a stalled
        # download fails instead of hanging, without touching the process-wide socket default. The MD5 is checked
        # below, before the file takes its final name.
        try:
            with urllib.request.urlopen(info.url, timeout=timeout) as response, open(tmp / info.filename, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
        except OSError as e:  # URLError, HTTPError, timeouts and connection errors are all OSErrors
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise _missing_error(info, root, f"downloading it failed (offline? {type(e).__name__}: {first})") from e
        got = tmp / info.filename
        _verify(got, info)
        os.replace(got, root / info.filename)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def locate(
    flag: str, size: int = 28, root: str | os.PathLike | None = None, download: bool = True, verify: bool = True
) -> Path:
    """Path of the MedMNIST ``.npz`` file for ``flag`` at ``size``, downloaded if missing, MD5-checked.

    Args:
        flag: medmnist flag, e.g. ``"breastmnist"`` (case-insensitive).
        size: 28, 64, 128 or 224 (28 or 64 for 3D flags).
        root: data root; see :func:`resolve_data_root`.
        download: download a missing file through medmnist. If False, a missing file raises at once.
        verify: check the MD5 against ``medmnist.INFO`` (reads the whole file on every call).

    Raises:
        ValueError: unknown flag or size.
        MedMNISTMissingError: the file is missing and could not be downloaded (offline, or ``download=False``).
        MedMNISTChecksumError: the MD5 differs from ``medmnist.INFO``.
    """
    info = dataset_info(flag, size)
    root = resolve_data_root(root)
    path = root / info.filename
    if not path.is_file():
        if not download:
            raise _missing_error(info, root, "downloading is disabled")
        _download(info, root)
    if verify:
        _verify(path, info)
    return path


def _npy_header(fp, name: str, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    raise MedMNISTCorruptError(f"{path}: member {name} has unsupported npy version {version}")


class _Split:
    """Reader of one split of an npz file: header checks, labels, and images streamed in chunks."""

    def __init__(self, path: Path, info: MedMNISTInfo, split: str):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        self.path, self.info, self.split = path, info, split
        self.n = info.n_samples[split]

    def _open(self, key: str):
        name = f"{self.split}_{key}.npy"
        try:
            archive = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as e:
            raise MedMNISTCorruptError(
                f"{self.path} is not a readable npz file ({e}); delete it and fetch it " "again"
            ) from e
        try:
            fp = archive.open(name)
        except KeyError as e:
            archive.close()
            raise MedMNISTCorruptError(f"{self.path} has no array {name[:-4]!r}: not a MedMNIST file") from e
        return archive, fp

    def _check(self, name: str, shape, fortran: bool, dtype: np.dtype, expected: tuple[int, ...]) -> None:
        if tuple(shape) != expected or dtype != np.uint8 or fortran:
            raise MedMNISTCorruptError(
                f"{self.path}: {self.split}_{name} is {dtype} {tuple(shape)}{' (Fortran order)' if fortran else ''}, "
                f"expected uint8 {expected} for {self.info.flag} size {self.info.size}"
            )

    def labels(self) -> np.ndarray:
        archive, fp = self._open("labels")
        try:
            with archive, fp:
                shape, fortran, dtype = _npy_header(fp, "labels", self.path)
                width = self.info.n_classes if self.info.multi_label else 1
                self._check("labels", shape, fortran, dtype, (self.n, width))
                raw = np.frombuffer(_read_exact(fp, self.n * width, self.path), dtype=np.uint8)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            if isinstance(e, MedMNISTError):
                raise
            raise MedMNISTCorruptError(f"{self.path}: cannot read {self.split}_labels ({e})") from e
        labels = raw.reshape(self.n, width).astype(np.int64)
        return labels if self.info.multi_label else labels[:, 0]

    def images(self, start: int = 0, stop: int | None = None, chunk: int = 64) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, image)`` for ``start <= index < stop``, decompressing ``chunk`` samples at a time."""
        stop = self.n if stop is None else min(stop, self.n)
        shape_one = self.info.image_shape
        per = int(np.prod(shape_one))
        archive, fp = self._open("images")
        try:
            with archive, fp:
                shape, fortran, dtype = _npy_header(fp, "images", self.path)
                self._check("images", shape, fortran, dtype, (self.n,) + shape_one)
                if start:
                    _skip(fp, start * per, self.path)
                index = start
                while index < stop:
                    count = min(chunk, stop - index)
                    block = np.frombuffer(_read_exact(fp, count * per, self.path), dtype=np.uint8)
                    block = block.reshape((count,) + shape_one)
                    for offset in range(count):
                        yield index + offset, block[offset]
                    index += count
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            if isinstance(e, MedMNISTError):
                raise
            raise MedMNISTCorruptError(f"{self.path}: cannot read {self.split}_images ({e})") from e


def _read_exact(fp, nbytes: int, path: Path) -> bytes:
    data = fp.read(nbytes)
    if len(data) != nbytes:
        raise MedMNISTCorruptError(f"{path} is truncated: an array ends early")
    return data


def _skip(fp, nbytes: int, path: Path) -> None:
    while nbytes > 0:
        got = len(fp.read(min(nbytes, 1 << 24)))
        if not got:
            raise MedMNISTCorruptError(f"{path} is truncated: an array ends early")
        nbytes -= got


def _split_reader(flag, split, size, root, download, verify) -> _Split:
    path = locate(flag, size, root=root, download=download, verify=verify)
    return _Split(path, dataset_info(flag, size), split)


def load_labels(
    flag: str,
    split: str,
    size: int = 28,
    root: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
) -> np.ndarray:
    """Labels of one split, without reading the images: int64 ``(N,)``, or ``(N, L)`` for multi-label tasks."""
    return _split_reader(flag, split, size, root, download, verify).labels()


def iter_images(
    flag: str,
    split: str,
    size: int = 28,
    root: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, uint8 image)`` of one split with bounded memory (e.g. for 224-px or 64³ files)."""
    return _split_reader(flag, split, size, root, download, verify).images(start, stop)


def load_split(
    flag: str,
    split: str,
    size: int = 28,
    root: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split as arrays.

    Args:
        flag: medmnist flag, e.g. ``"breastmnist"``, ``"chestmnist"``, ``"adrenalmnist3d"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: 28, 64, 128 or 224 (28 or 64 for 3D flags).
        root: data root; see :func:`resolve_data_root`.
        download: download the file through medmnist if it is missing.
        verify: check the file's MD5 against ``medmnist.INFO`` first.

    Returns:
        ``(images, labels)``. ``images`` is uint8 ``(N, S, S)``, ``(N, S, S, 3)`` or ``(N, S, S, S)``, exactly as
        stored. ``labels`` is int64 ``(N,)``, or ``(N, L)`` with every label kept for multi-label tasks
        (ChestMNIST: L = 14).

    Raises:
        ValueError: unknown flag, size or split.
        MedMNISTMissingError, MedMNISTChecksumError, MedMNISTCorruptError: see :func:`locate`.
    """
    reader = _split_reader(flag, split, size, root, download, verify)
    labels = reader.labels()
    images = np.empty((reader.n,) + reader.info.image_shape, dtype=np.uint8)
    for index, image in reader.images(chunk=256):
        images[index] = image
    return images, labels


def _splits_arg(splits: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise a split or sequence of splits, in canonical order, without duplicates."""
    items = (splits,) if isinstance(splits, str) else tuple(splits)
    bad = [s for s in items if s not in SPLITS]
    if bad or not items:
        raise ValueError(f"unknown split(s) {bad or items!r}; valid splits: {', '.join(SPLITS)}")
    return tuple(s for s in SPLITS if s in items)


def bundle_dataset_info(flag: str, size: int, spatial_dims: int) -> MedMNISTInfo:
    """Metadata of ``flag`` at ``size`` for a bundle that handles ``spatial_dims``-D images only.

    The bundles call this first, so that a wrong dataset override fails before any data is written or trained on.

    Raises:
        ValueError: for an unknown flag or size (see :func:`dataset_info`), or a dataset of the other dimensionality
            (the message lists the flags that fit).
    """
    info = dataset_info(flag, size)
    if info.spatial_dims != spatial_dims:
        fitting = [f for f in available_flags() if (f.endswith("3d") or "3d" in f) == (spatial_dims == 3)]
        raise ValueError(
            f"MedMNIST {info.flag} is a {info.spatial_dims}D dataset but this bundle is {spatial_dims}D; "
            f"use a {spatial_dims}D flag: {', '.join(fitting)}"
        )
    return info
