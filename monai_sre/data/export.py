# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Export MedMNIST splits as NIfTI or DICOM files with a MONAI datalist (``monai-sre prepare-data``).

Layout of ``out_dir`` (one export per folder):

* ``datalist.json``: a MONAI/Decathlon datalist (``load_decathlon_datalist`` reads it). It has ``training``,
  ``validation`` and ``test`` lists of ``{"image": <path relative to out_dir>, "label": int | [int, ...],
  "index": <npz index>}``, and it records the flag, size, task, label names, channels, ``channel_dim``, format,
  orientation convention, source file, source MD5 and ``"complete": true``. It is written last, atomically.
* ``{split}/{flag}_{split}_{index:06d}.nii.gz``: NIfTI, one file per sample (2D gray ``(H, W)``, 2D RGB
  ``(H, W, 3)``, or 3D), uint8, affine ``diag(1 mm)``.
* ``{split}/{flag}_{split}_{index:06d}.dcm``: DICOM, one file per 2D sample (MONOCHROME2 or RGB).
* ``{split}/{flag}_{split}_{index:06d}/slice_{k:04d}.dcm``: DICOM series folder, one per 3D sample.
* ``.medmnist_export.json``: marks the folder as an export of this flag, size and format. It is written first,
  so files from another export are never mixed in.

Round trip (see :mod:`monai_sre.data.medmnist` for the convention): ``LoadImage`` + ``EnsureChannelFirst``
(``channel_dim=-1`` for RGB, as the datalist's ``channel_dim`` says) gives exactly the npz sample, as uint8 with
``LoadImage(dtype=None)``, and the same values with the default float32.

Idempotent and resumable. Every file (and every DICOM series folder) is written under a temporary name and
renamed when complete, so an interrupted run never leaves a file under its final name that a later run would
trust. A re-run skips the files that exist, writes the rest, and gives byte-identical results (DICOM UIDs are
derived from flag/size/split/index). When the datalist says the export is complete with the same parameters, a
re-run returns after one ``stat`` per sample, without reading the source file. Exports into the same folder at the
same time (e.g. every DDP rank of a bundle) take turns through an ``flock`` on the folder: the later ones find the
work done.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monai_sre.data.dicom import write_dicom_image, write_dicom_series
from monai_sre.data.medmnist import (
    SPLITS,
    MedMNISTInfo,
    _medmnist_version,
    _Split,
    _splits_arg,
    dataset_info,
    locate,
)
from monai_sre.io.files import atomic_path, folder_lock, is_temporary, write_json

__all__ = [
    "FORMATS",
    "DATALIST_NAME",
    "DATALIST_KEYS",
    "ExportError",
    "export_medmnist",
    "load_datalist",
    "sample_relpath",
    "write_nifti",
]

#: Output formats of :func:`export_medmnist`.
FORMATS = ("nifti", "dicom")
#: Name of the datalist written into the export folder.
DATALIST_NAME = "datalist.json"
#: Datalist key of each MedMNIST split (MONAI/Decathlon names).
DATALIST_KEYS = {"train": "training", "val": "validation", "test": "test"}
#: Voxel spacing (mm) written on every axis.
SPACING_MM = 1.0

_STATE_NAME = ".medmnist_export.json"
_FORMAT_VERSION = 1
ORIENTATION_NOTE = (
    "MONAI LoadImage + EnsureChannelFirst(channel_dim) returns the npz sample with its axes in the same order "
    "(npz axis i = MONAI spatial axis i; RGB channels moved first). Affine diag(1 mm) in RAS, identical for "
    "NIfTI and DICOM. DICOM: axis 0 = Columns, axis 1 = Rows, axis 2 = InstanceNumber-1, "
    "ImageOrientationPatient [-1,0,0,0,-1,0]."
)


class ExportError(RuntimeError):
    """The export cannot proceed: bad output folder, or a folder holding another export."""


def _check_format(image_format: str) -> str:
    fmt = str(image_format).strip().lower()
    aliases = {"nii": "nifti", "nii.gz": "nifti", "dcm": "dicom"}
    fmt = aliases.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"unknown image format {image_format!r}; valid formats: {', '.join(FORMATS)}")
    return fmt


def sample_relpath(info: MedMNISTInfo, split: str, index: int, image_format: str) -> str:
    """Path of one exported sample relative to the export folder (a folder for 3D DICOM)."""
    stem = f"{split}/{info.flag}_{split}_{index:06d}"
    fmt = _check_format(image_format)
    if fmt == "nifti":
        return stem + ".nii.gz"
    return stem if info.spatial_dims == 3 else stem + ".dcm"


def write_nifti(
    array: np.ndarray,
    path: str | os.PathLike,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    description: str = "",
) -> Path:
    """Write an array as NIfTI-1 (``.nii`` or ``.nii.gz``), atomically, dtype and values unchanged.

    The array is stored as it is: ``(H, W)``, ``(H, W, 3)`` (RGB, channel last; load it with
    ``EnsureChannelFirst(channel_dim=-1)``) or ``(X, Y, Z)``. The affine is ``diag(spacing)`` with
    ``origin`` as translation (RAS, sform and qform code 1, units mm), the affine that
    :mod:`monai_sre.data.dicom` gives DICOM files. The output is deterministic: the same array gives the same bytes.

    Args:
        array: the data (no scaling is applied; ``scl_slope`` stays unset).
        path: the file to write; a ``.nii.gz`` name gives gzip compression.
        spacing: voxel size in mm for the first up to 3 axes; default 1 mm.
        origin: RAS position in mm of voxel 0.
        description: the header's ``descrip`` (at most 80 characters).

    Returns:
        the path written.
    """
    import nibabel as nib

    array = np.asarray(array)
    path = Path(path)
    spatial = min(array.ndim, 3)
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (SPACING_MM,) * spatial))
    affine = np.eye(4)
    for axis, s in enumerate(spacing[:3]):
        affine[axis, axis] = s
    affine[:3, 3] = [float(o) for o in origin]
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    if description:
        image.header["descrip"] = description[:80].encode("ascii", "replace")
    with atomic_path(path, durable=False) as tmp:  # a re-run checks every file: no fsync per sample
        nib.save(image, tmp)
    return path


def _write_sample(info: MedMNISTInfo, image_format: str, image: np.ndarray, path: Path, split: str, index: int):
    """Write one sample to ``path`` (atomically). Tests patch this to interrupt an export."""
    ident = f"{info.flag}_{info.size}_{split}_{index:06d}"
    if image_format == "nifti":
        write_nifti(image, path, description=f"MedMNIST {info.python_class} {info.size} {split} {index}")
        return
    common = dict(
        uid_seed=f"monai_sre/medmnist/{ident}",
        patient_id=ident,
        patient_name=ident,
        study_description=f"MedMNIST {info.python_class} size {info.size}",
        series_description=f"{split} {index}",
    )
    if info.spatial_dims == 3:
        write_dicom_series(image, path, spacing=(SPACING_MM,) * 3, overwrite=True, **common)
    else:
        write_dicom_image(image, path, spacing=(SPACING_MM,) * 2, overwrite=True, **common)


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: dict) -> None:
    write_json(path, value, indent=1)


def _identity(info: MedMNISTInfo, fmt: str) -> dict:
    """What an export folder holds: two exports with different identities must not share a folder."""
    return {"flag": info.flag, "size": info.size, "format": fmt, "source_md5": info.md5, "version": _FORMAT_VERSION}


def _items(info: MedMNISTInfo, fmt: str, split: str, labels: np.ndarray) -> list[dict]:
    items = []
    for index, label in enumerate(labels):
        value = [int(v) for v in label] if info.multi_label else int(label)
        items.append({"image": sample_relpath(info, split, index, fmt), "label": value, "index": index})
    return items


def _datalist(info: MedMNISTInfo, fmt: str, splits: tuple[str, ...], limit: int | None, labels: dict) -> dict:
    counts = {s: len(labels[s]) for s in splits}
    datalist = {
        "name": f"{info.python_class} ({info.size}px) as {fmt.upper()}",
        "description": info.description,
        "licence": info.license,
        "reference": "MedMNIST v2, Yang et al., Scientific Data 10, 41 (2023), doi:10.1038/s41597-022-01721-8",
        "tensorImageSize": f"{info.spatial_dims}D",
        "flag": info.flag,
        "size": info.size,
        "task": info.task,
        "multi_label": info.multi_label,
        "num_classes": info.n_classes,
        "labels": {str(k): v for k, v in sorted(info.labels.items())},
        "n_channels": info.n_channels,
        "channel_dim": info.channel_dim,
        "spatial_dims": info.spatial_dims,
        "image_shape": [info.n_channels] + [info.size] * info.spatial_dims,
        "spacing": [SPACING_MM] * info.spatial_dims,
        "format": fmt,
        "orientation": ORIENTATION_NOTE,
        "source": {
            "file": info.filename,
            "md5": info.md5,
            "url": info.url,
            "medmnist_version": _medmnist_version(),
            "n_samples": dict(info.n_samples),
        },
        "export": {**_identity(info, fmt), "splits": list(splits), "limit": limit, "counts": counts},
        "complete": True,
    }
    if "train" in splits:
        datalist["numTraining"] = counts["train"]
    if "test" in splits:
        datalist["numTest"] = counts["test"]
    for split in splits:
        datalist[DATALIST_KEYS[split]] = _items(info, fmt, split, labels[split])
    return datalist


def _already_done(datalist_path: Path, expected_export: dict) -> bool:
    """True when ``datalist_path`` records a complete export with these parameters and every file is there."""
    existing = _read_json(datalist_path)
    if not existing or existing.get("complete") is not True or existing.get("export") != expected_export:
        return False
    root = datalist_path.parent
    for split in expected_export["splits"]:
        items = existing.get(DATALIST_KEYS[split])
        if not isinstance(items, list) or len(items) != expected_export["counts"][split]:
            return False
        if not all(isinstance(it, dict) and os.path.exists(root / it.get("image", "\0")) for it in items):
            return False
    return True


def _prepare_out_dir(out_dir: Path) -> list[Path]:
    """Create ``out_dir`` if needed and check it is writable; return the folders created (top first)."""
    created = []
    probe = out_dir
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    created.reverse()
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise NotADirectoryError(f"{out_dir} is not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe_file = tempfile.mkstemp(dir=out_dir, prefix=".write-test-")
        os.close(fd)
        # A concurrent export of the same folder (every DDP rank runs it) may already have swept this probe away as
        # a stale temporary file (CI saw ENOENT from NamedTemporaryFile's own unlink here), so a missing file is fine.
        Path(probe_file).unlink(missing_ok=True)
    except OSError as e:
        _remove_created(created)
        raise ExportError(f"cannot write to output folder {out_dir}: {e.strerror or e}") from e
    return created


def _remove_created(created: list[Path]) -> None:
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            pass


def _claim(out_dir: Path, identity: dict) -> None:
    """Mark ``out_dir`` as an export of ``identity``, or raise if it holds something else."""
    state_path = out_dir / _STATE_NAME
    state = _read_json(state_path)
    if state is not None:
        if state != identity:
            raise ExportError(
                f"{out_dir} already holds a MedMNIST export of {state.get('flag')} size {state.get('size')} as "
                f"{state.get('format')} (source MD5 {state.get('source_md5')}); export {identity['flag']} size "
                f"{identity['size']} as {identity['format']} into another folder"
            )
        return
    datalist = _read_json(out_dir / DATALIST_NAME)
    if datalist and {k: v for k, v in datalist.get("export", {}).items() if k in identity} == identity:
        _write_json(state_path, identity)  # the marker was deleted, but the datalist says whose folder this is
        return
    others = [p.name for p in out_dir.iterdir() if not _is_temporary(p.name)]
    if others:
        raise ExportError(
            f"{out_dir} is not empty ({', '.join(sorted(others)[:5])}{', ...' if len(others) > 5 else ''}) and "
            "holds no MedMNIST export; choose a new or empty folder"
        )
    _write_json(state_path, identity)


def _is_temporary(name: str) -> bool:
    return is_temporary(name) or name.startswith(".write-test-")


def _remove_stale_temps(out_dir: Path, splits: tuple[str, ...]) -> None:
    """Remove temporary files or folders left by a killed run (they never carry a final name)."""
    for folder in [out_dir] + [out_dir / s for s in splits]:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if _is_temporary(entry.name):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def export_medmnist(
    flag: str,
    out_dir: str | os.PathLike,
    size: int = 28,
    image_format: str = "nifti",
    splits: str | Sequence[str] = SPLITS,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    limit: int | None = None,
    download: bool = True,
) -> Path:
    """Export MedMNIST splits as NIfTI or DICOM files plus a MONAI datalist; cheap when already done.

    Args:
        flag: medmnist flag, e.g. ``"breastmnist"``, ``"retinamnist"``, ``"adrenalmnist3d"``.
        out_dir: the export folder (created). It must be new, empty, or an earlier export of the same flag, size
            and format.
        size: 28, 64, 128 or 224 (28 or 64 for 3D flags).
        image_format: ``"nifti"`` (``.nii.gz``) or ``"dicom"`` (a ``.dcm`` file per 2D sample, a series folder
            per 3D sample).
        splits: the splits to export, any of ``"train"``, ``"val"``, ``"test"``.
        root: MedMNIST data root (see :func:`monai_sre.data.medmnist.resolve_data_root`).
        progress: show a tqdm progress bar.
        limit: export only the first ``limit`` samples of each split (for quick checks).
        download: download the source ``.npz`` through medmnist if it is missing.

    Returns:
        the path of ``datalist.json`` in ``out_dir``.

    Raises:
        ValueError: unknown flag (the message lists the valid ones), size, format or split, or a bad ``limit``.
        MedMNISTMissingError, MedMNISTChecksumError, MedMNISTCorruptError: the source file is missing (offline),
            has the wrong MD5, or cannot be read. Nothing is written then.
        ExportError: the output folder cannot be written or holds another export.
    """
    info = dataset_info(flag, size)
    fmt = _check_format(image_format)
    splits = _splits_arg(splits)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    limit = None if limit is None else int(limit)
    counts = {s: info.n_samples[s] if limit is None else min(limit, info.n_samples[s]) for s in splits}
    out_dir = Path(out_dir).expanduser()
    datalist_path = out_dir / DATALIST_NAME
    identity = _identity(info, fmt)
    expected_export = {**identity, "splits": list(splits), "limit": limit, "counts": counts}
    if _already_done(datalist_path, expected_export):
        return datalist_path

    source = locate(info.flag, info.size, root=root, download=download)  # checked before anything is written
    readers = {s: _Split(source, info, s) for s in splits}
    labels = {s: readers[s].labels()[: counts[s]] for s in splits}  # also validates the file's layout

    created = _prepare_out_dir(out_dir)
    with folder_lock(out_dir):  # one export at a time per folder; a waiting one finds the work done
        if _already_done(datalist_path, expected_export):
            return datalist_path
        try:
            _claim(out_dir, identity)
        except BaseException:
            _remove_created(created)
            raise
        _remove_stale_temps(out_dir, splits)
        _export_files(info, fmt, splits, counts, readers, out_dir, progress)
        _write_json(datalist_path, _datalist(info, fmt, splits, limit, labels))
    return datalist_path


def _export_files(info: MedMNISTInfo, fmt: str, splits, counts: dict, readers: dict, out_dir: Path, progress: bool):
    """Write every sample that has no file yet, with a progress bar over all samples."""
    from tqdm import tqdm

    with tqdm(
        total=sum(counts.values()),
        desc=f"{info.flag}_{info.size} -> {fmt}",
        unit="img" if info.spatial_dims == 2 else "vol",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for split in splits:
            paths = [out_dir / sample_relpath(info, split, i, fmt) for i in range(counts[split])]
            todo = [i for i, p in enumerate(paths) if not p.exists()]
            bar.update(counts[split] - len(todo))
            if not todo:
                continue
            pending = set(todo)
            for index, image in readers[split].images(start=todo[0], stop=todo[-1] + 1):
                if index in pending:
                    _write_sample(info, fmt, image, paths[index], split, index)
                    bar.update(1)


def _label_problem(label, num_classes: int | None, multi_label: bool) -> str | None:
    """What is wrong with one datalist label, or ``None``; ``num_classes=None`` checks only the type."""
    if multi_label:
        ok = isinstance(label, list) and all(v in (0, 1) and not isinstance(v, float) for v in label)
        if ok and (num_classes is None or len(label) == num_classes):
            return None
        width = "" if num_classes is None else f"{num_classes} "
        return f"expected a list of {width}0/1 flags (multi-label task)"
    ok = isinstance(label, (int, np.integer)) and not isinstance(label, bool) and label >= 0
    if ok and (num_classes is None or label < num_classes):
        return None
    return "expected a class index" + ("" if num_classes is None else f" in [0, {num_classes - 1}]")


def load_datalist(
    path: str | os.PathLike,
    data_list_key: str = "training",
    num_classes: int | None = None,
    multi_label: bool = False,
    base_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Read one list of a MONAI datalist for classification and check every item before anything trains on it.

    The bundles read their datalists with this instead of ``monai.data.load_decathlon_datalist``, which it wraps,
    so that a missing image or a label out of range stops the run at once with a message naming the datalist and
    the item, not after an epoch inside a loss function.

    Args:
        path: the datalist JSON (e.g. the ``datalist.json`` of :func:`export_medmnist`, or one a user wrote).
        data_list_key: the list to read: ``"training"``, ``"validation"`` or ``"test"``.
        num_classes: the model's classes: labels must be indices in ``[0, num_classes)`` (multi-label: lists of
            ``num_classes`` 0/1 flags). ``None`` checks only the labels' type.
        multi_label: labels are lists of 0/1 flags instead of class indices.
        base_dir: the folder image paths are relative to; default the datalist's folder.

    Returns:
        the items, with image paths joined to ``base_dir`` as ``load_decathlon_datalist`` returns them.

    Raises:
        FileNotFoundError: when the datalist or an image (file or DICOM series folder) it names does not exist.
        ValueError: when the file is not a datalist JSON, lacks the list, or an item lacks its image or label or
            has a label out of range.
    """
    from monai.data import load_decathlon_datalist

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datalist {path} not found")
    try:
        items = load_decathlon_datalist(path, is_segmentation=False, data_list_key=data_list_key, base_dir=base_dir)
    except json.JSONDecodeError as e:
        raise ValueError(f"datalist {path} is not valid JSON ({e}); expected a MONAI datalist") from e
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise ValueError(
            f"datalist {path}: cannot read its '{data_list_key}' list ({' '.join(str(e).split())}); expected "
            f'{{"{data_list_key}": [{{"image": ..., "label": ...}}, ...]}}'
        ) from e
    if not items:
        raise ValueError(f"datalist {path}: the '{data_list_key}' list is empty; expected at least one item")
    for i, item in enumerate(items):
        where = f"datalist {path}: {data_list_key} item {i}"
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise ValueError(f"{where} is {item!r}; expected an object with 'image' and 'label'")
        if not isinstance(item["image"], str) or not item["image"]:
            raise ValueError(f"{where} has image {item['image']!r}; expected the path of an image file or folder")
        if not os.path.exists(item["image"]):
            raise FileNotFoundError(f"{where} names image {item['image']}, which does not exist")
        problem = _label_problem(item["label"], num_classes, multi_label)
        if problem:
            raise ValueError(f"{where} ({item['image']}) has label {item['label']!r}; {problem}")
    return items
