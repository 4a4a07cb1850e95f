# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The input contract of a model: what it was trained on, so that every pipeline feeds it the same.

A bundle states its :class:`InputContract` once (``"input_contract"`` in its configs, built by
:func:`medmnist_contract`); training, validation, the bundle evaluation, ``monai-sre evaluate-rotation`` (the
:func:`training_transforms` of this module), ``run inferring`` and ``monai-sre predict`` (the clinical pipeline of
:mod:`monai_sre.transforms.clinical`, configured by the same contract) build their transforms from it. The contract
is saved in every checkpoint the bundle writes and stated in ``metadata.json``; a checkpoint trained with another
contract is refused (:mod:`monai_sre.io.checkpoints`).

How an image's values reach the model's range (``target_range``, [0, 1]) is one of three documented rules, chosen
per image by :class:`ContractIntensityd` and recorded in ``meta["intensity_scaling"]``:

* ``"8bit_range"``: images stored as unsigned 8-bit (the exported MedMNIST NIfTI and DICOM files, ultrasound,
  fundus photos, screenshots, any image stored 0-255) get exactly the training mapping, ``source_range`` (0-255)
  linearly to ``target_range``.
* ``"hu_window"``: CT (DICOM ``Modality`` CT, or ``modality="CT"``) maps the HU window linearly and clips.
* ``"foreground_percentiles"``: every other image (MR, 16-bit and float data) maps its ``percentiles`` (1st, 99th)
  computed over the non-zero voxels linearly and clips. Zero voxels (background, the padding of a crop or of a
  rotated copy) take no part in the statistics, and quarter turns and flips only reorder the voxels, so neither can
  change the mapping.

All three are per-voxel maps with statistics that a rotation, flip or zero padding cannot change: a rotated copy of
an image gets the same mapping as the upright one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelReader
from monai.transforms import EnsureChannelFirstd, EnsureTyped, LoadImaged, MapTransform

__all__ = [
    "INTENSITY_RULES",
    "InputContract",
    "ContractIntensityd",
    "StoredTypeNibabelReader",
    "contract_loader",
    "medmnist_contract",
    "training_transforms",
    "image_modality",
]

#: Intensity rules; ``"auto"`` chooses per image (see the module docstring).
INTENSITY_RULES = ("auto", "8bit_range", "hu_window", "foreground_percentiles")
_CHANNEL_DIMS = ("no_channel", -1, 0)


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"input contract: {name} must be two numbers (low, high), got {value!r}") from e
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"input contract: {name} must be finite with low < high, got {value!r}")
    return low, high


@dataclass(frozen=True)
class InputContract:
    """What a model was trained on: the one definition every pipeline of a bundle builds its transforms from.

    Args:
        spatial_dims: 2 (images) or 3 (volumes).
        image_size: the model grid edge in voxels (28 or 64 for MedMNIST).
        in_channels: channels the model takes (1 grey, 3 RGB).
        channel_dim: where the training files store the channels: ``"no_channel"`` (grey) or ``-1`` (colour last,
            as the exported RGB MedMNIST files), as ``EnsureChannelFirst(channel_dim=...)`` takes it.
        intensity: ``"auto"`` chooses a rule per image; any other rule of :data:`INTENSITY_RULES` is used for all.
        source_range: stored values mapped to ``target_range`` by the 8-bit rule (the training mapping).
        target_range: the value range the model was trained on.
        hu_window: CT values (HU) mapped to ``target_range``, values outside clipped.
        percentiles: lower and upper percentile of the non-zero voxels mapped to ``target_range`` (MR, 16-bit).
        axcodes: orientation volumes are turned to (``"RAS"``); ``None`` keeps the stored axes (2D images).
        spacing: voxel spacing in mm volumes are resampled to; ``None`` keeps the grid (2D images).

    Raises:
        ValueError: naming the field whose value is out of range.
    """

    spatial_dims: int
    image_size: int
    in_channels: int = 1
    channel_dim: int | str = "no_channel"
    intensity: str = "auto"
    source_range: tuple[float, float] = (0.0, 255.0)
    target_range: tuple[float, float] = (0.0, 1.0)
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    percentiles: tuple[float, float] = (1.0, 99.0)
    axcodes: str | None = None
    spacing: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.spatial_dims not in (2, 3):
            raise ValueError(f"input contract: spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        for name in ("image_size", "in_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"input contract: {name} must be a positive integer, got {value!r}")
            put(name, int(value))
        if self.channel_dim not in _CHANNEL_DIMS:
            raise ValueError(f"input contract: channel_dim must be one of {_CHANNEL_DIMS}, got {self.channel_dim!r}")
        if self.intensity not in INTENSITY_RULES:
            raise ValueError(f"input contract: intensity must be one of {INTENSITY_RULES}, got {self.intensity!r}")
        for name in ("source_range", "target_range", "hu_window"):
            put(name, _pair(getattr(self, name), name))
        pct = _pair(self.percentiles, "percentiles")
        if not 0.0 <= pct[0] < pct[1] <= 100.0:
            raise ValueError(f"input contract: percentiles must lie in [0, 100], got {self.percentiles!r}")
        put("percentiles", pct)
        if self.axcodes is not None:
            put("axcodes", str(self.axcodes).upper())
        if self.spacing is not None:
            spacing = tuple(float(s) for s in np.atleast_1d(np.asarray(self.spacing, dtype=float)))
            spacing = spacing * self.spatial_dims if len(spacing) == 1 else spacing
            if len(spacing) != self.spatial_dims or not all(math.isfinite(s) and s > 0 for s in spacing):
                raise ValueError(
                    f"input contract: spacing must be {self.spatial_dims} positive numbers (mm), got {self.spacing!r}"
                )
            put("spacing", spacing)

    def to_dict(self) -> dict[str, Any]:
        """The contract as JSON-ready values (tuples as lists): what checkpoints and ``metadata.json`` hold.

        Returns:
            one entry per field.
        """
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InputContract:
        """Build a contract from :meth:`to_dict`'s output (e.g. read from a checkpoint or ``metadata.json``).

        Args:
            values: field names and values.

        Returns:
            the contract.

        Raises:
            ValueError: for an unknown field or a value out of range.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"input contract: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    def state_dict(self) -> dict[str, Any]:
        """The contract for ``ignite.handlers.Checkpoint``: saved inside every checkpoint the bundle writes.

        Returns:
            :meth:`to_dict`.
        """
        return self.to_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Check a contract read from a checkpoint (a resumed run): the contract itself never changes.

        Args:
            state: the saved contract.

        Raises:
            ValueError: when ``state`` differs from this contract, naming both.
        """
        if dict(state) != self.to_dict():
            raise ValueError(
                f"the checkpoint was written with input contract {dict(state)}, but this run's input contract is "
                f"{self.to_dict()}; resume with the settings the checkpoint was trained with"
            )


def medmnist_contract(spatial_dims: int, image_size: int, in_channels: int = 1) -> InputContract:
    """The input contract of the MedMNIST bundles: exported 8-bit files scaled 0-255 to 0-1.

    2D images keep their pixel grid (photos and single slices have no reliable patient geometry); volumes are
    turned to RAS and resampled to 1 mm, the geometry of the exported files (:mod:`monai_sre.data.export`), so
    the exported files pass unchanged. RGB files store the colour last.

    Args:
        spatial_dims: 2 or 3.
        image_size: the model grid edge (28, 64, ...).
        in_channels: 1 (grey) or 3 (RGB).

    Returns:
        the contract.

    Raises:
        ValueError: for values out of range.
    """
    volume = spatial_dims == 3
    return InputContract(
        spatial_dims=spatial_dims,
        image_size=image_size,
        in_channels=in_channels,
        channel_dim=-1 if in_channels > 1 else "no_channel",
        axcodes="RAS" if volume else None,
        spacing=(1.0,) * 3 if volume else None,
    )


def image_modality(img: Any) -> str:
    """The DICOM modality of a loaded image (``meta["modality"]`` or the raw Modality tag), ``""`` if unknown.

    Args:
        img: a loaded image.

    Returns:
        the modality in upper case.
    """
    meta = img.meta if isinstance(img, MetaTensor) else {}
    value = meta.get("modality")
    if not value and isinstance(meta.get("00080060"), Mapping):  # PydicomReader keeps raw tags
        value = (meta["00080060"].get("Value") or [""])[0]
    return str(value or "").strip().upper()


class ContractIntensityd(MapTransform):
    """Map intensities to the contract's range by the rule that fits each image (see the module docstring).

    Float32 images are mapped in place (one copy of a large volume, not two); others are converted to float32 once.
    Place it right after loading, before anything converts the stored type: the 8-bit rule recognises 8-bit images
    by their stored type (``meta["stored_dtype"]`` when an earlier transform recorded it, else the tensor's
    dtype, as ``LoadImage(dtype=None)`` keeps it). The rule and its values are recorded in
    ``meta["intensity_scaling"]`` (``rule``, ``modality`` and the parameters).

    Args:
        keys: keys of the images.
        contract: the input contract.
        modality: ``"auto"`` reads each image's DICOM modality; any other value (``"CT"``, ``"MR"``) is used for
            every image.
        rule: ``None`` uses the contract's ``intensity``; else a rule of :data:`INTENSITY_RULES` for every image.
        allow_missing_keys: do not raise for a missing key.

    Raises:
        ValueError: for an unknown rule.
    """

    def __init__(
        self,
        keys: KeysCollection,
        contract: InputContract,
        modality: str = "auto",
        rule: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.contract = contract
        self.modality = str(modality or "auto")
        self.rule = contract.intensity if rule is None else rule
        if self.rule not in INTENSITY_RULES:
            raise ValueError(f"intensity rule must be one of {INTENSITY_RULES}, got {self.rule!r}")

    def choose(self, img: torch.Tensor) -> tuple[str, str]:
        """The rule for ``img`` and the modality it was chosen by.

        Args:
            img: a loaded image.

        Returns:
            ``(rule, modality)``; the modality is ``"unknown"`` when neither the image nor the caller gives one.
        """
        modality = image_modality(img) if self.modality.lower() == "auto" else self.modality.upper()
        if self.rule != "auto":
            return self.rule, modality or "unknown"
        meta = img.meta if isinstance(img, MetaTensor) else {}
        stored = str(meta.get("stored_dtype", img.dtype)).replace("torch.", "")
        if modality == "CT":
            return "hu_window", modality
        if stored == "uint8":
            return "8bit_range", modality or "unknown"
        return "foreground_percentiles", modality or "unknown"

    @staticmethod
    def _linear(img: torch.Tensor, low: float, high: float, target: tuple[float, float], clip: bool) -> torch.Tensor:
        """``ScaleIntensityRange``'s arithmetic, in order, on a float32 tensor: in place when it already is one.

        A clinical volume (512x512x600 float32 is 0.6 GB) is then mapped without a second copy; an 8-bit image is
        converted once, as ``ScaleIntensityRange`` converts it.
        """
        out = img if img.dtype == torch.float32 else img.to(torch.float32)
        out.sub_(low).div_(high - low).mul_(target[1] - target[0]).add_(target[0])
        return out.clamp_(target[0], target[1]) if clip else out

    def _map(self, img: torch.Tensor) -> torch.Tensor:
        c = self.contract
        rule, modality = self.choose(img)
        img = img if isinstance(img, torch.Tensor) else torch.as_tensor(img)
        (t_low, t_high), record = c.target_range, {"rule": rule, "method": rule, "modality": modality}
        if rule == "8bit_range":
            low, high = c.source_range
            out = self._linear(img, low, high, c.target_range, clip=False)
            record["source_range"] = [low, high]
        elif rule == "hu_window":
            low, high = c.hu_window
            out = self._linear(img, low, high, c.target_range, clip=True)
            record["hu_window"] = [low, high]
        else:
            values = img.as_tensor() if isinstance(img, MetaTensor) else img
            foreground = values[values != 0].detach().cpu().numpy()  # one copy, of the non-zero voxels only
            name = str(img.meta.get("filename_or_obj", "image")) if isinstance(img, MetaTensor) else "image"
            if foreground.size == 0:
                raise ValueError(f"{name}: every voxel is 0; expected an image with a non-zero foreground")
            low, high = (float(v) for v in np.percentile(foreground, c.percentiles))
            del foreground
            if not high > low:
                raise ValueError(
                    f"{name}: the {c.percentiles[0]:g}th and {c.percentiles[1]:g}th percentiles of the non-zero voxels "
                    f"are both {low:g}: the image has no contrast to map; expected an image with varying values"
                )
            out = self._linear(img, low, high, c.target_range, clip=True)
            record.update({"percentiles": list(c.percentiles), "foreground_range": [low, high]})
        record["target_range"] = [t_low, t_high]
        if isinstance(out, MetaTensor):
            out.meta["intensity_scaling"] = record
        return out

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self._map(d[key])
        return d


class StoredTypeNibabelReader(NibabelReader):
    """``NibabelReader`` that records the stored voxel type and converts numeric voxels to float32 in one copy.

    The stored type (``meta["stored_dtype"]``, e.g. ``"uint8"``) chooses the intensity rule of
    :class:`ContractIntensityd`. MONAI's reader hands the stored array (F-ordered int16, say) to ``LoadImage``, which
    makes a C-ordered copy and then a float32 one: for a 512x512x600 CT 0.3 GB more at the peak than converting once.
    The values are those ``LoadImage(dtype=float32)`` gives, in the machine's byte order whatever the file's. Other
    voxel types (RGB records) go the reader's usual way.
    """

    def _get_array_data(self, img, filename):
        data = np.asanyarray(img.dataobj)
        if self.to_gpu or data.dtype.kind not in "biuf":
            return super()._get_array_data(img, filename)
        out = np.empty(data.shape, dtype=np.float32)
        np.copyto(out, data, casting="unsafe")
        return out

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The image array (float32) and its metadata with ``stored_dtype``, as ``NibabelReader.get_data``.

        Args:
            img: what :meth:`read` returned.

        Returns:
            the array and its metadata.
        """
        array, meta = super().get_data(img)
        first = img[0] if isinstance(img, (list, tuple)) else img
        meta["stored_dtype"] = str(np.dtype(first.get_data_dtype()).newbyteorder("="))
        return array, meta


def contract_loader(keys: KeysCollection = "image") -> LoadImaged:
    """``LoadImaged`` that lets :class:`ContractIntensityd` know each image's stored type.

    NIfTI files go through :class:`StoredTypeNibabelReader` (float32, ``meta["stored_dtype"]``); other formats keep
    their stored type (``dtype=None``: an 8-bit DICOM image stays uint8 until the intensity rule maps it).

    Args:
        keys: keys of the image paths.

    Returns:
        the loader.
    """
    loader = LoadImaged(keys, image_only=True, dtype=None)
    loader.register(StoredTypeNibabelReader())
    return loader


def training_transforms(
    contract: InputContract,
    keys: KeysCollection = "image",
    label_key: str | None = "label",
    multi_label: bool = False,
) -> list:
    """The deterministic transforms of training, validation, the bundle evaluation and ``evaluate-rotation``.

    :func:`contract_loader` (stored type kept) -> ``EnsureChannelFirstd`` (the contract's channel layout) ->
    :class:`ContractIntensityd` -> ``EnsureTyped`` (float32 images; labels long, or float for multi-label).
    Files of the contract's geometry (the exports of :mod:`monai_sre.data.export`) need no orientation, spacing or
    size change; ``monai-sre predict`` applies those to clinical images with the same intensity rules, so an
    exported file gives the same model input through both.

    Args:
        contract: the input contract.
        keys: keys of the images.
        label_key: key of the labels; ``None`` for data without labels.
        multi_label: labels are 0/1 flags (float) rather than class indices (long).

    Returns:
        the list of transforms (a bundle composes it with its augmentation).
    """
    transforms: list = [
        contract_loader(keys),
        EnsureChannelFirstd(keys, channel_dim=contract.channel_dim),
        ContractIntensityd(keys, contract),
        EnsureTyped(keys, dtype=torch.float32, track_meta=False),
    ]
    if label_key is not None:
        transforms.append(EnsureTyped(label_key, dtype=torch.float32 if multi_label else torch.long, track_meta=False))
    return transforms
