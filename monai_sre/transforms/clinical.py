# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Clinical images of any shape, spacing and orientation to the small, normalised grid a MedMNIST model expects.

The pipeline is a MONAI ``Compose`` of dictionary transforms, used by ``monai-sre predict`` and referenced by the
bundles' ``inference.json``, so both run the same code::

    LoadImaged (NIfTI, or one DICOM series via DicomSeriesReader; stored type kept)
    -> EnsureChannelFirstd -> ConformImaged (finite values, 2D/3D, channels; colour stored last in 2D NIfTI)
    -> Orientationd (3D, RAS) -> CropRoid (optional region of interest in mm or voxels)
    -> ContractIntensityd (the input contract's rules: 8-bit 0-255 as in training, CT HU window, otherwise
       percentiles of the non-zero voxels; to the training range)
    -> GridSpacingd (spacing in mm; large images straight to a coarser one, see there)
    -> ResizeToGridd (fit, resize or crop to image_size per axis) -> EnsureTyped (float32)

Every choice is a field of :class:`ClinicalPreprocessingConfig`, which a bundle derives from its input contract
(:meth:`ClinicalPreprocessingConfig.from_contract`, :mod:`monai_sre.transforms.contract`): an exported training
file gives exactly the model input of the training transforms.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing, to_affine_nd
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    Pad,
    Resize,
    ResizeWithPadOrCrop,
    Spacing,
    SpatialCrop,
    SqueezeDim,
)

from monai_sre.data.dicom_series import DicomSeriesReader, is_nifti_path
from monai_sre.transforms.contract import INTENSITY_RULES, ContractIntensityd, InputContract, contract_loader

__all__ = [
    "ClinicalPreprocessingConfig",
    "clinical_loader",
    "clinical_transforms",
    "ConformImaged",
    "ModalityIntensityd",
    "CropRoid",
    "ResizeToGridd",
    "SpacingGuardd",
    "GridSpacingd",
    "MAX_RESAMPLED_VOXELS",
    "MAX_MATERIALISED_VOXELS",
]

_SIZE_MODES = ("fit", "resize", "crop")
_ROI_UNITS = ("mm", "voxel")
# ITU-R BT.601 luma weights: colour to grey the way displays do.
_LUMA = (0.299, 0.587, 0.114)
#: Most voxels an image may have at the requested spacing (1024³, a cubic metre at 1 mm; a whole-body CT is a third of
#: that): more means a damaged spacing in the header. In ``fit`` and ``resize`` modes that size is never allocated
#: (see :class:`GridSpacingd`).
MAX_RESAMPLED_VOXELS = 1024**3
#: Most voxels resampling may allocate (512³, 0.5 GB as float32, 3 GB of float64 sampling grid): in ``crop`` mode,
#: where the image is resampled at full size, a larger one needs a region of interest.
MAX_MATERIALISED_VOXELS = 512**3
#: In ``fit``/``resize`` modes an image is resampled straight to a coarser spacing, but to at least this many times
#: the grid's voxels per axis, which the final area-averaging step then shrinks to the grid.
_GRID_OVERSAMPLING = 2


def _floats(value: Any, name: str, length: int | None = None) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in np.atleast_1d(np.asarray(value, dtype=float)).ravel())
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numbers, got {value!r}") from e
    if length is not None and len(values) == 1:
        values = values * length
    if (length is not None and len(values) != length) or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be {length or 'some'} finite numbers, got {value!r}")
    return values


@dataclass(frozen=True)
class ClinicalPreprocessingConfig:
    """Every choice the clinical preprocessing makes, as plain values a bundle config can hold.

    Args:
        spatial_dims: 2 for 2D models (single-frame DICOM, 2D NIfTI), 3 for volume models.
        image_size: the model grid edge in voxels (28 or 64 for MedMNIST); the output is ``image_size`` per axis.
        in_channels: channels the model takes; grey images are repeated to 3 channels, colour turned to grey.
        modality: ``"auto"`` uses each DICOM series' ``Modality`` (unknown for NIfTI); any other value (``"CT"``,
            ``"MR"``, ...) is used for every input. CT gets the HU window.
        hu_window: CT intensities (HU) mapped to ``target_range``, values outside clipped.
        percentiles: lower and upper percentile of the non-zero voxels mapped to ``target_range`` for images that
            are neither CT nor 8-bit, values outside clipped.
        intensity: ``"auto"`` chooses the rule per image (CT: HU window; 8-bit: ``source_range``; otherwise
            percentiles); a rule name of :data:`~monai_sre.transforms.contract.INTENSITY_RULES` forces it.
        source_range: stored values of 8-bit images mapped to ``target_range`` (the training mapping).
        target_range: the value range the model was trained on.
        spacing: voxel spacing in mm to resample to (one number for every axis, or one per axis); ``None`` keeps
            the image's grid.
        axcodes: orientation volumes are turned to before resampling (``"RAS"``); ``None`` keeps the stored axes.
            2D images always keep their stored row and column order: photos and single slices have no reliable
            patient axes.
        roi_center: centre of the region of interest; ``None`` uses the whole image. In ``"mm"`` units it is a
            world (RAS, as NIfTI and MONAI use; DICOM's LPS x and y have the opposite sign) position; in
            ``"voxel"`` units a voxel index of the image as loaded (DICOM: column, row, slice in position order).
            2D images measure mm in the image plane from their first pixel.
        roi_size: edge lengths of the region of interest, in ``roi_units``; parts outside the image take its lowest
            value.
        roi_units: ``"mm"`` or ``"voxel"``.
        size_mode: ``"fit"`` scales the longest axis to ``image_size`` keeping proportions and pads the others,
            ``"resize"`` stretches every axis to ``image_size``, ``"crop"`` centre-crops or pads without scaling.

    Raises:
        ValueError: naming the field whose value is out of range.
    """

    spatial_dims: int = 3
    image_size: int = 28
    in_channels: int = 1
    modality: str = "auto"
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    percentiles: tuple[float, float] = (1.0, 99.0)
    intensity: str = "auto"
    source_range: tuple[float, float] = (0.0, 255.0)
    target_range: tuple[float, float] = (0.0, 1.0)
    spacing: float | tuple[float, ...] | None = 1.0
    axcodes: str | None = "RAS"
    roi_center: tuple[float, ...] | None = None
    roi_size: tuple[float, ...] | None = None
    roi_units: str = "mm"
    size_mode: str = "fit"

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if isinstance(self.image_size, bool) or int(self.image_size) != self.image_size or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size!r}")
        put("image_size", int(self.image_size))
        if isinstance(self.in_channels, bool) or int(self.in_channels) != self.in_channels or self.in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {self.in_channels!r}")
        if not isinstance(self.modality, str) or not self.modality.strip():
            raise ValueError(f"modality must be 'auto' or a DICOM modality such as 'CT' or 'MR', got {self.modality!r}")
        put("modality", "auto" if self.modality.strip().lower() == "auto" else self.modality.strip().upper())
        window = _floats(self.hu_window, "hu_window", 2)
        if window[0] >= window[1]:
            raise ValueError(f"hu_window must be (low, high) with low < high, got {self.hu_window!r}")
        put("hu_window", window)
        pct = _floats(self.percentiles, "percentiles", 2)
        if not 0.0 <= pct[0] < pct[1] <= 100.0:
            raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {self.percentiles!r}")
        put("percentiles", pct)
        if self.intensity not in INTENSITY_RULES:
            raise ValueError(f"intensity must be one of {INTENSITY_RULES}, got {self.intensity!r}")
        for name in ("source_range", "target_range"):
            pair = _floats(getattr(self, name), name, 2)
            if pair[0] >= pair[1]:
                raise ValueError(f"{name} must be (low, high) with low < high, got {getattr(self, name)!r}")
            put(name, pair)
        if self.spacing is not None:
            spacing = _floats(self.spacing, "spacing", self.spatial_dims)
            if min(spacing) <= 0:
                raise ValueError(f"spacing must be positive (mm), got {self.spacing!r}")
            put("spacing", spacing)
        if self.axcodes is not None:
            codes = str(self.axcodes).upper()
            axes = sorted({"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}.get(c, -1) for c in codes)
            if axes != [0, 1, 2]:
                raise ValueError(f"axcodes must be three of L/R, P/A, I/S such as 'RAS', got {self.axcodes!r}")
            put("axcodes", codes)
        if (self.roi_center is None) != (self.roi_size is None):
            raise ValueError("roi_center and roi_size must be given together (or neither)")
        if self.roi_center is not None:
            put("roi_center", _floats(self.roi_center, "roi_center", self.spatial_dims))
            size = _floats(self.roi_size, "roi_size", self.spatial_dims)
            if min(size) <= 0:
                raise ValueError(f"roi_size must be positive, got {self.roi_size!r}")
            put("roi_size", size)
        if self.roi_units not in _ROI_UNITS:
            raise ValueError(f"roi_units must be one of {_ROI_UNITS}, got {self.roi_units!r}")
        if self.size_mode not in _SIZE_MODES:
            raise ValueError(f"size_mode must be one of {_SIZE_MODES}, got {self.size_mode!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ClinicalPreprocessingConfig:
        """Build a config from a mapping such as a bundle's ``clinical_preprocessing`` section.

        Args:
            values: field names and values; JSON lists are accepted for tuples.

        Returns:
            the config.

        Raises:
            ValueError: for an unknown field name or a value out of range.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    @classmethod
    def from_contract(cls, contract: InputContract, **settings: Any) -> ClinicalPreprocessingConfig:
        """The settings that feed clinical images to a model the way its input contract says.

        Args:
            contract: the model's input contract.
            settings: run options (``modality``, ``roi_center``, ``roi_size``, ``roi_units``, ``size_mode``) and
                deliberate departures from the contract (e.g. another ``hu_window``).

        Returns:
            the config.

        Raises:
            ValueError: for an unknown setting or a value out of range.
        """
        values = {k: v for k, v in contract.to_dict().items() if k != "channel_dim"}
        return cls.from_dict({**values, **settings})

    def contract(self) -> InputContract:
        """The input contract these settings feed (its intensity rules, grid, orientation and spacing).

        Returns:
            the contract.
        """
        return InputContract(
            spatial_dims=self.spatial_dims,
            image_size=self.image_size,
            in_channels=self.in_channels,
            intensity=self.intensity,
            source_range=self.source_range,
            target_range=self.target_range,
            hu_window=self.hu_window,
            percentiles=self.percentiles,
            axcodes=self.axcodes,
            spacing=self.spacing,
        )

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values (tuples as lists).

        Returns:
            a dict with one entry per field.
        """
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _in_plane_affine(affine: Any) -> torch.Tensor:
    """A 2D image's geometry without its place in the patient: pixel spacing along axes 0 and 1 only.

    A single slice may lie in any plane (sagittal, oblique) or have no patient geometry at all (photos); its
    3D affine then has no invertible 2D part, and 2D models ignore orientation anyway.
    """
    affine = torch.as_tensor(affine, dtype=torch.float64)
    spacing = torch.linalg.norm(affine[:-1, :2], dim=0)
    spacing = torch.where(spacing > 0, spacing, torch.ones_like(spacing))
    plane = torch.eye(affine.shape[0], dtype=torch.float64)
    plane[0, 0], plane[1, 1] = spacing[0], spacing[1]
    return plane


def _filename(img: torch.Tensor) -> str:
    meta = img.meta if isinstance(img, MetaTensor) else {}
    return str(meta.get("filename_or_obj", "image"))


class ConformImaged(MapTransform):
    """Check a channel-first image against the model and give it the model's dimensionality and channels.

    Rejects non-finite values, constant images (all zeros, say: nothing to classify), 4D NIfTI files (several
    volumes), 2D images for 3D models and volumes for 2D models; a 3D image with a single slice becomes 2D for 2D
    models, and a 2D model reads a NIfTI image of shape ``(H, W, 3)`` or ``(H, W, 4)`` as colour stored last (as the
    exported RGB MedMNIST files). Grey images are repeated to ``in_channels``, colour images turned to grey (BT.601
    luma) for one-channel models. The stored type is recorded in ``meta["stored_dtype"]`` (the 8-bit intensity rule
    reads it) unless the reader recorded it already.

    Args:
        keys: keys of the images.
        spatial_dims: 2 or 3, what the model takes.
        in_channels: channels the model takes.
        allow_missing_keys: do not raise for a missing key.
    """

    def __init__(
        self, keys: KeysCollection, spatial_dims: int, in_channels: int = 1, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels

    def _conform(self, img: torch.Tensor) -> torch.Tensor:
        name = _filename(img)
        if img.numel() == 0:  # readers squeeze a zero-length axis away, so no later shape check would say why
            raise ValueError(f"{name}: the image has no voxels (a zero-length axis); expected a non-empty image")
        values = img.as_tensor() if isinstance(img, MetaTensor) else img
        # min and max in one pass and without a voxel-sized mask: NaN propagates to both, infinity shows in one
        low, high = torch.aminmax(values)
        if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
            bad = int((~torch.isfinite(values)).sum())
            raise ValueError(f"{name}: {bad} voxel value(s) are NaN or infinite; the image is corrupt or unfinished")
        if isinstance(img, MetaTensor):
            img.meta.setdefault("stored_dtype", str(img.dtype).replace("torch.", ""))
        channels, spatial = int(img.shape[0]), tuple(int(s) for s in img.shape[1:])
        colour_last = len(spatial) == 3 and spatial[2] in (3, 4) and min(spatial[:2]) > 4
        if self.spatial_dims == 2 and is_nifti_path(name) and channels == 1 and colour_last:
            img = img[0].permute(2, 0, 1)
            channels, spatial = int(img.shape[0]), tuple(int(s) for s in img.shape[1:])
        elif is_nifti_path(name) and channels > 1:
            raise ValueError(
                f"{name}: a {len(spatial) + 1}D NIfTI image (shape {spatial + (channels,)}) holding {channels} "
                f"volumes; the model takes one {self.spatial_dims}D image"
            )
        if self.spatial_dims == 2 and len(spatial) == 3 and 1 in spatial:
            img = SqueezeDim(dim=1 + spatial.index(1))(img)
            spatial = tuple(int(s) for s in img.shape[1:])
        if self.spatial_dims == 2 and len(spatial) == 2 and isinstance(img, MetaTensor):
            img.affine = _in_plane_affine(img.affine)
        real = sum(s > 1 for s in spatial)
        if len(spatial) != self.spatial_dims or real < self.spatial_dims:
            what = {1: "a 1D signal", 2: "a 2D image", 3: "a 3D volume"}.get(real, f"a {real}D image")
            raise ValueError(
                f"{name}: {what} (shape {spatial}) but the model takes "
                f"{'3D volumes' if self.spatial_dims == 3 else '2D images'}"
            )
        if low == high:  # every scaling maps it to one value: the model would see a blank grid and still answer
            raise ValueError(
                f"{name}: every voxel has the value {float(low):g}; a constant image holds nothing to classify "
                "(a blank export or a failed reconstruction?)"
            )
        if channels == self.in_channels:
            return img
        if channels == 1:
            return img.repeat(self.in_channels, *([1] * len(spatial)))
        if channels in (3, 4) and self.in_channels in (1, 3):
            rgb = img[:3]
            if self.in_channels == 3:
                return rgb
            rgb = rgb if rgb.is_floating_point() else rgb.float()
            weights = torch.as_tensor(_LUMA, dtype=rgb.dtype, device=img.device).reshape(3, *([1] * len(spatial)))
            return (rgb * weights).sum(dim=0, keepdim=True)
        raise ValueError(f"{name}: {channels} channels, but the model takes {self.in_channels}")

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self._conform(d[key])
        return d


class ModalityIntensityd(ContractIntensityd):
    """:class:`~monai_sre.transforms.contract.ContractIntensityd` with the rules' values given one by one.

    Kept for code written before the input contract; the rule is chosen per image as there (CT: HU window, 8-bit:
    0-255, otherwise percentiles of the non-zero voxels) and recorded in ``meta["intensity_scaling"]``.

    Args:
        keys: keys of the images.
        modality: ``"auto"`` or a DICOM modality applied to every image.
        hu_window: (low, high) HU mapped to (0, 1) for CT, clipped.
        percentiles: (low, high) percentiles of the non-zero voxels mapped to (0, 1), clipped.
        allow_missing_keys: do not raise for a missing key.
    """

    def __init__(
        self,
        keys: KeysCollection,
        modality: str = "auto",
        hu_window: Sequence[float] = (-1000.0, 1000.0),
        percentiles: Sequence[float] = (1.0, 99.0),
        allow_missing_keys: bool = False,
    ) -> None:
        contract = InputContract(
            spatial_dims=3, image_size=1, hu_window=tuple(hu_window), percentiles=tuple(percentiles)
        )
        super().__init__(keys, contract, modality=modality, allow_missing_keys=allow_missing_keys)


class CropRoid(MapTransform):
    """Crop a region of interest given in mm (world RAS position) or in voxels of the image as loaded.

    The region keeps its centre and size even where it leaves the image: the outside part takes the image's lowest
    value (air in CT, background in MR). Cropping before resampling keeps the resampling cost to the region.

    Args:
        keys: keys of the images.
        roi_center: centre, one value per spatial axis.
        roi_size: edge lengths, one value per spatial axis.
        roi_units: ``"mm"`` (centre in world RAS coordinates) or ``"voxel"`` (centre and size in voxels of the
            image as loaded, i.e. of ``meta["original_affine"]``).
        allow_missing_keys: do not raise for a missing key.
    """

    def __init__(
        self,
        keys: KeysCollection,
        roi_center: Sequence[float],
        roi_size: Sequence[float],
        roi_units: str = "mm",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if roi_units not in _ROI_UNITS:
            raise ValueError(f"roi_units must be one of {_ROI_UNITS}, got {roi_units!r}")
        self.roi_center = np.asarray(roi_center, dtype=float)
        self.roi_size = np.asarray(roi_size, dtype=float)
        self.roi_units = roi_units

    def _crop(self, img: MetaTensor) -> MetaTensor:
        name = _filename(img)
        sd = img.ndim - 1
        if len(self.roi_center) != sd or len(self.roi_size) != sd:
            raise ValueError(f"{name}: the region of interest needs {sd} values per centre and size for a {sd}D image")
        affine = to_affine_nd(sd, np.asarray(img.affine, dtype=float))
        center, size = self.roi_center, self.roi_size
        if self.roi_units == "voxel":
            original = np.asarray(img.meta.get("original_affine", img.affine), dtype=float)
            original = _in_plane_affine(original).numpy() if sd == 2 else original
            original = to_affine_nd(sd, original)
            center = (original @ np.append(center, 1.0))[:sd]
            size = size * affine_to_spacing(original, r=sd, dtype=float)
        voxel_center = (np.linalg.inv(affine) @ np.append(center, 1.0))[:sd]
        voxel_size = np.maximum(1, np.round(size / affine_to_spacing(affine, r=sd, dtype=float))).astype(int)
        start = np.round(voxel_center - voxel_size / 2.0).astype(int)
        end = start + voxel_size
        shape = np.asarray(img.shape[1:])
        if (end <= 0).any() or (start >= shape).any():
            raise ValueError(
                f"{name}: the region of interest (centre {self.roi_center.tolist()} {self.roi_units}, size "
                f"{self.roi_size.tolist()} {self.roi_units}) lies outside the image (shape {shape.tolist()})"
            )
        inside_start, inside_end = np.clip(start, 0, shape), np.clip(end, 0, shape)
        img = SpatialCrop(roi_start=inside_start.tolist(), roi_end=inside_end.tolist())(img)
        padding = [(0, 0)] + [(int(a), int(b)) for a, b in zip(inside_start - start, end - inside_end)]
        if any(a or b for a, b in padding):
            img = Pad(to_pad=padding, mode="constant", value=float(img.as_tensor().min()))(img)
        return img

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self._crop(d[key])
        return d


class SpacingGuardd(MapTransform):
    """Refuse an image whose voxel spacing is not positive and finite, or that resampling would make too large.

    A damaged header (NIfTI ``pixdim``, DICOM ``PixelSpacing``) can ask ``Spacingd`` for billions of voxels; this
    check runs just before it and names the file instead.

    Args:
        keys: keys of the images.
        pixdim: the spacing ``Spacingd`` resamples to, one value or one per axis (mm).
        max_voxels: the most voxels the resampled image may have.
        allow_missing_keys: do not raise for a missing key.
    """

    def __init__(
        self,
        keys: KeysCollection,
        pixdim: float | Sequence[float],
        max_voxels: int = MAX_RESAMPLED_VOXELS,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.pixdim = np.atleast_1d(np.asarray(pixdim, dtype=float))
        self.max_voxels = int(max_voxels)

    def _check(self, img: torch.Tensor) -> None:
        name, sd = _filename(img), img.ndim - 1
        affine = to_affine_nd(sd, np.asarray(img.affine if isinstance(img, MetaTensor) else np.eye(4), dtype=float))
        spacing = np.asarray(affine_to_spacing(affine, r=sd, dtype=float))
        if not (np.isfinite(spacing).all() and (spacing > 0).all()):
            raise ValueError(
                f"{name}: voxel spacing {spacing.tolist()} mm is not positive and finite; the header's geometry "
                "(pixdim, PixelSpacing, orientation) is damaged"
            )
        target = np.broadcast_to(self.pixdim, (sd,))
        with np.errstate(over="ignore"):  # an absurd spacing may overflow to inf, which the test below refuses
            shape = np.ceil(np.asarray(img.shape[1:], dtype=float) * spacing / target)
            too_many = float(np.prod(shape)) > self.max_voxels
        if too_many:
            raise ValueError(
                f"{name}: resampling {list(img.shape[1:])} voxels of {[float(f'{s:.4g}') for s in spacing]} mm to "
                f"{target.tolist()} mm would give {' x '.join(f'{s:.0f}' for s in shape)} voxels, more than "
                f"{self.max_voxels}; "
                "expected a plausible voxel spacing (a damaged header?), or choose a region of interest or a "
                "coarser spacing"
            )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            self._check(d[key])
        return d


def _scaled_shape(shape: Sequence[int], image_size: int, size_mode: str) -> list[int]:
    """The shape ``ResizeToGridd`` scales an image of ``shape`` to, before padding or cropping to the grid."""
    if size_mode == "crop":
        return [int(n) for n in shape]
    if size_mode == "resize":
        return [int(image_size)] * len(shape)
    scale = image_size / max(shape)
    return [min(image_size, max(1, round(n * scale))) for n in shape]


def _average_pool(img: MetaTensor, factors: Sequence[int]) -> MetaTensor:
    """Average blocks of ``factors`` voxels (partial blocks at the far edges average what they hold); fix the affine."""
    sd = len(factors)
    values = img.as_tensor()
    values = values if values.is_floating_point() else values.float()
    pool = torch.nn.functional.avg_pool3d if sd == 3 else torch.nn.functional.avg_pool2d
    pooled = pool(values.unsqueeze(0), kernel_size=tuple(factors), stride=tuple(factors), ceil_mode=True)[0]
    affine = torch.as_tensor(img.affine, dtype=torch.float64)
    block = torch.eye(affine.shape[0], dtype=torch.float64)
    for axis, f in enumerate(factors):  # a block's centre is the centre of its first and last voxels
        block[axis, axis], block[axis, -1] = float(f), (f - 1) / 2.0
    meta = {k: v for k, v in img.meta.items() if k != "affine"}
    return MetaTensor(pooled, affine=affine @ block, meta=meta)


class GridSpacingd(MapTransform):
    """Resample to ``pixdim`` mm, or straight to a coarser spacing when the grid fitting would shrink it anyway.

    In ``fit`` and ``resize`` modes an image much larger than the model grid (a 512x512x600 CT for a 28³ model) is
    not resampled to ``pixdim`` at full size (0.6 G voxels, 7 GB with the sampling grid) only to be shrunk
    afterwards. Where the image at ``pixdim`` would have more than ``2 x`` the grid's voxels along an axis, the
    spacing along it is coarsened by an integer factor that keeps at least twice the grid's resolution, the image
    is first averaged over blocks of voxels no larger than that spacing (so nothing aliases), and then resampled
    (bilinear) to it; :class:`ResizeToGridd`'s area averaging does the rest. Images up to twice the grid per axis
    (e.g. 28³ and 64³ exports for a 28³ model) take exactly the plain ``Spacing`` path. What was done is recorded in
    ``meta["grid_resize"]`` (``resampled_spacing``, ``prefilter``). In ``crop`` mode the image is resampled at
    ``pixdim`` whole, and refused above ``MAX_MATERIALISED_VOXELS`` voxels.

    Args:
        keys: keys of the images.
        pixdim: the spacing to resample to, one value or one per axis (mm).
        image_size: the model grid edge in voxels.
        size_mode: ``"fit"``, ``"resize"`` or ``"crop"``, as for :class:`ResizeToGridd`.
        max_voxels: most voxels the image may have at ``pixdim`` (a plausibility check of the header's spacing).
        allow_missing_keys: do not raise for a missing key.
    """

    def __init__(
        self,
        keys: KeysCollection,
        pixdim: float | Sequence[float],
        image_size: int,
        size_mode: str = "fit",
        max_voxels: int = MAX_RESAMPLED_VOXELS,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if size_mode not in _SIZE_MODES:
            raise ValueError(f"size_mode must be one of {_SIZE_MODES}, got {size_mode!r}")
        self.guard = SpacingGuardd(keys, pixdim=pixdim, max_voxels=max_voxels)
        self.pixdim = np.atleast_1d(np.asarray(pixdim, dtype=float))
        self.image_size = int(image_size)
        self.size_mode = size_mode

    def _resample(self, img: MetaTensor) -> MetaTensor:
        self.guard._check(img)
        sd = img.ndim - 1
        spacing = np.asarray(affine_to_spacing(to_affine_nd(sd, np.asarray(img.affine, dtype=float)), r=sd))
        target = np.broadcast_to(self.pixdim, (sd,)).astype(float)
        nominal = np.maximum(1, np.round(np.asarray(img.shape[1:], dtype=float) * spacing / target)).astype(int)
        coarsen = np.ones(sd, dtype=int)
        if self.size_mode != "crop":
            final = np.asarray(_scaled_shape(nominal.tolist(), self.image_size, self.size_mode))
            coarsen = np.maximum(1, nominal // (final * _GRID_OVERSAMPLING))
        pixdim = target * coarsen
        prefilter = np.where(coarsen > 1, np.maximum(1, np.floor(pixdim / spacing + 1e-6)), 1).astype(int)
        materialised = float(np.prod(np.ceil(nominal / coarsen)))
        if materialised > MAX_MATERIALISED_VOXELS:
            raise ValueError(
                f"{_filename(img)}: size_mode 'crop' resamples the whole image to {target.tolist()} mm, "
                f"{' x '.join(str(n) for n in nominal)} voxels, more than {MAX_MATERIALISED_VOXELS}; choose a region "
                "of interest (roi_center, roi_size), a coarser spacing, or size_mode 'fit'"
            )
        if (prefilter > 1).any():
            img = _average_pool(img, prefilter.tolist())
        out = Spacing(pixdim=pixdim.tolist(), mode="bilinear", padding_mode="border")(img)
        if (coarsen > 1).any() and isinstance(out, MetaTensor):
            out.meta["grid_resize"] = {"resampled_spacing": pixdim.tolist(), "prefilter": prefilter.tolist()}
        return out

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self._resample(d[key])
        return d


class ResizeToGridd(MapTransform):
    """Bring an image to ``image_size`` voxels per axis: fit (keep proportions, pad), resize (stretch) or crop.

    Shrinking uses area averaging (no aliasing from large clinical grids), enlarging (bi/tri)linear interpolation.
    The choice is recorded in ``meta["grid_resize"]``.

    Args:
        keys: keys of the images.
        image_size: voxels per axis of the output.
        size_mode: ``"fit"``, ``"resize"`` or ``"crop"``.
        allow_missing_keys: do not raise for a missing key.
    """

    def __init__(
        self, keys: KeysCollection, image_size: int, size_mode: str = "fit", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if size_mode not in _SIZE_MODES:
            raise ValueError(f"size_mode must be one of {_SIZE_MODES}, got {size_mode!r}")
        self.image_size = int(image_size)
        self.size_mode = size_mode

    def _resize(self, img: torch.Tensor) -> torch.Tensor:
        shape = [int(s) for s in img.shape[1:]]
        grid = [self.image_size] * len(shape)
        scaled = _scaled_shape(shape, self.image_size, self.size_mode)
        interpolation = None
        if scaled != shape:
            shrink = all(n <= s for n, s in zip(scaled, shape))
            interpolation = "area" if shrink else ("bilinear" if len(shape) == 2 else "trilinear")
            img = Resize(spatial_size=scaled, mode=interpolation)(img)
        if scaled != grid:
            img = ResizeWithPadOrCrop(spatial_size=grid, mode="constant")(img)
        if isinstance(img, MetaTensor):
            img.meta["grid_resize"] = {
                **img.meta.get("grid_resize", {}),  # what GridSpacingd did before, if anything
                "size_mode": self.size_mode,
                "scaled_shape": scaled,
                "interpolation": interpolation,
            }
        return img

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self._resize(d[key])
        return d


def clinical_loader(keys: KeysCollection = "image") -> LoadImaged:
    """``LoadImaged`` for clinical inputs: NIfTI files with MONAI's readers, DICOM with :class:`DicomSeriesReader`.

    A DICOM input is one file, a list of the files of one series, or a folder holding one series. The loader is the
    training transforms' (:func:`~monai_sre.transforms.contract.contract_loader`): the stored type is known to the
    intensity rules, and NIfTI voxels become float32 in one copy.

    Args:
        keys: keys of the image paths.

    Returns:
        the loader; it yields ``MetaTensor`` images with their RAS affine.
    """
    with warnings.catch_warnings():
        # MONAI builds every default reader; the optional GPU DICOM decoder's absence is expected on most machines.
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
        loader = contract_loader(keys)  # stored type kept: it chooses the intensity rule
    loader.register(DicomSeriesReader())  # tried first; it declines NIfTI files
    return loader


def clinical_transforms(
    config: ClinicalPreprocessingConfig | Mapping[str, Any] | None = None,
    keys: KeysCollection = "image",
    load: bool = True,
    **settings: Any,
) -> Compose:
    """The clinical preprocessing pipeline as a MONAI ``Compose`` of dictionary transforms.

    A bundle's ``inference.json`` can hold, e.g.,
    ``"preprocessing": "$monai_sre.transforms.clinical_transforms(**@clinical_preprocessing)"``.

    Args:
        config: the settings, as a config or a mapping; ``None`` uses the defaults.
        keys: keys of the images.
        load: start with :func:`clinical_loader`; ``False`` expects already loaded images.
        settings: fields of :class:`ClinicalPreprocessingConfig` overriding ``config``.

    Returns:
        the pipeline, from a path (or loaded image) to a ``(in_channels, *[image_size] * spatial_dims)`` float32
        image in the contract's ``target_range`` ([0, 1]).

    Raises:
        ValueError: for an invalid setting.
    """
    if config is None:
        config = ClinicalPreprocessingConfig(**settings)
    elif isinstance(config, ClinicalPreprocessingConfig):
        config = dataclasses.replace(config, **settings) if settings else config
    else:
        config = ClinicalPreprocessingConfig.from_dict({**config, **settings})
    transforms: list = [clinical_loader(keys)] if load else []
    transforms += [
        EnsureChannelFirstd(keys),
        ConformImaged(keys, spatial_dims=config.spatial_dims, in_channels=config.in_channels),
    ]
    if config.spatial_dims == 3 and config.axcodes is not None:
        transforms.append(Orientationd(keys, axcodes=config.axcodes, labels=(("L", "R"), ("P", "A"), ("I", "S"))))
    if config.roi_center is not None and config.roi_size is not None:
        transforms.append(CropRoid(keys, config.roi_center, config.roi_size, config.roi_units))
    # Before resampling: the statistics of the percentile rule come from the stored voxels (of the region)
    transforms.append(ContractIntensityd(keys, config.contract(), modality=config.modality))
    if config.spacing is not None:
        transforms.append(GridSpacingd(keys, config.spacing, image_size=config.image_size, size_mode=config.size_mode))
    transforms += [
        ResizeToGridd(keys, image_size=config.image_size, size_mode=config.size_mode),
        EnsureTyped(keys, dtype=torch.float32),
    ]
    return Compose(transforms)
