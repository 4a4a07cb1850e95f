# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Checks of a bundle's settings (command-line overrides), run first in the bundles' ``initialize``.

MONAI applies ``--key value`` overrides without looking at them: a wrong value used to surface only deep inside
``torch.optim.Adam``, after the data had been exported, or not at all (a missing ``data_root`` folder was
created). :func:`check_bundle_settings` checks every setting it knows, before any data is written or any model is
built, and names the override and the values it accepts.

A config calls it with the ids to check, e.g. ``"$monai_sre.bundle.check_bundle_settings(@spatial_dims,
flag=@flag, image_size=@image_size, learning_rate=@learning_rate)"``. A new setting gets a checker in
:data:`CHECKS`.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from typing import Any

from monai_sre.data import FORMATS, MedMNISTInfo, available_flags, available_sizes, dataset_info
from monai_sre.evaluation.selection import VAL_METRICS
from monai_sre.layers import BAND_SCALES
from monai_sre.optim import LR_SCHEDULES, OPTIMIZERS
from monai_sre.recipes import ARCHS, MODEL_TYPES
from monai_sre.transforms.augmentation import AUGMENTATIONS

__all__ = ["BundleSettingError", "CHECKS", "as_bool", "check_bundle_settings"]


class BundleSettingError(ValueError):
    """A bundle setting (``--name value`` on the command line) has a value the bundle cannot use."""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _positive_int(value: Any) -> str | None:
    return None if _is_int(value) and value >= 1 else "a positive integer"


def _non_negative_int(value: Any) -> str | None:
    return None if _is_int(value) and value >= 0 else "an integer >= 0"


def _optional_positive_int(value: Any) -> str | None:
    return None if value is None or (_is_int(value) and value >= 1) else "a positive integer, or None for all"


def _positive_number(value: Any) -> str | None:
    return None if _is_number(value) and value > 0 else "a positive number, e.g. 0.0001"


def _non_negative_number(value: Any) -> str | None:
    return None if _is_number(value) and value >= 0 else "a number >= 0"


def _fraction(value: Any) -> str | None:
    return None if _is_number(value) and 0 <= value <= 1 else "a number from 0 to 1"


_BOOLEAN_WORDS = {"true": True, "false": False}


def _boolean(value: Any) -> str | None:
    ok = isinstance(value, bool) or (isinstance(value, str) and value.lower() in _BOOLEAN_WORDS)
    return None if ok else "true or false"


def as_bool(value: Any, name: str = "setting") -> bool:
    """A boolean bundle setting's value as a bool, however it was given.

    ``python -m monai.bundle run ... --resume false`` gives the string ``"false"`` (MONAI's command line turns only
    Python literals such as ``False`` into a bool), which a config's ``if @resume`` reads as true. Every boolean
    setting of the bundles is read through this function, e.g. ``"$monai_sre.bundle.as_bool(@resume, 'resume')"``.

    Args:
        value: ``True``/``False``, or ``"true"``/``"false"`` in any case.
        name: the setting's name, for the error message.

    Raises:
        BundleSettingError: (a ``ValueError``) for any other value, naming the override and the values accepted.
    """
    expected = _boolean(value)
    if expected is not None:
        raise _refuse(name, value, expected)
    return value if isinstance(value, bool) else _BOOLEAN_WORDS[value.lower()]


def _integer(value: Any) -> str | None:
    return None if _is_int(value) else "an integer"


def _one_of(choices: tuple) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"one of {', '.join(map(str, choices))}"

    return check


def _below_one(example: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if _is_number(value) and 0 <= value < 1 else f"a number from 0 to below 1, {example}"

    return check


def _kernel_size(value: Any) -> str | None:
    sizes = [value] if _is_int(value) else value if isinstance(value, (list, tuple)) and len(value) == 4 else None
    ok = sizes is not None and all(_is_int(k) and k >= 1 and k % 2 == 1 for k in sizes)
    return None if ok else "an odd positive integer or a list of 4 of them (one per stage), e.g. [9, 9, 5, 5]"


def _angles(value: Any) -> str | None:
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(_is_number(a) for a in value)
    ok = ok and len({float(a) % 360 for a in value}) == len(value)
    return None if ok else "a non-empty list of distinct angles in degrees (0 is the upright image), e.g. [0, 10, 45]"


def _data_root(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        return "None (use $MONAI_SRE_DATA_ROOT or medmnist's cache) or an existing folder holding the MedMNIST .npz"
    if not os.path.isdir(os.path.expanduser(value)):
        missing = f"no folder {value} exists; it is not created"
        return f"an existing folder holding the MedMNIST .npz files, or None ({missing})"
    return None


#: One checker per setting name: it returns ``None`` for a valid value, else what the setting accepts.
CHECKS: dict[str, Callable[[Any], str | None]] = {
    "image_format": _one_of(FORMATS),
    "data_root": _data_root,
    "model_type": _one_of(MODEL_TYPES),
    "arch": _one_of(ARCHS),
    "widen_factor": _positive_number,
    "kernel_size": _kernel_size,
    "gradient_fraction": _below_one("e.g. 0.5 (0: none)"),
    "epochs": _positive_int,
    "batch_size": _positive_int,
    "val_interval": _positive_int,
    "val_angles": _angles,
    "val_metric": _one_of(VAL_METRICS),
    "learning_rate": _positive_number,
    "weight_decay": _non_negative_number,
    "optimizer": _one_of(OPTIMIZERS),
    "momentum": _below_one("e.g. 0.9"),
    "lr_schedule": _one_of(LR_SCHEDULES),
    "band_scale": _one_of(BAND_SCALES),
    "augmentation": _one_of(AUGMENTATIONS),
    "corner_mask": _fraction,
    "blur": _fraction,
    "ema_decay": _below_one("e.g. 0.99 (0: no weight average)"),
    "zero_init_residual": _boolean,
    "zero_mean_init": _boolean,
    "resume": _boolean,
    "num_workers": _non_negative_int,
    "cache_rate": _fraction,
    "seed": _integer,
    "max_samples": _optional_positive_int,
}


def _refuse(name: str, value: Any, expected: str, why: str = "") -> BundleSettingError:
    return BundleSettingError(f"bundle setting --{name} {value!r} refused: {why}expected {expected}")


def _check_dataset(spatial_dims: int, flag: Any, image_size: Any) -> MedMNISTInfo:
    fitting = tuple(f for f in available_flags() if dataset_info(f).spatial_dims == spatial_dims)
    if not isinstance(flag, str) or flag.strip().lower() not in fitting:
        known = isinstance(flag, str) and flag.strip().lower() in available_flags()
        dims = dataset_info(flag).spatial_dims if known else 0
        why = f"{flag} is a {dims}D dataset and this bundle is {spatial_dims}D; " if known else ""
        raise _refuse("flag", flag, f"one of the {spatial_dims}D MedMNIST flags: {', '.join(fitting)}", why)
    sizes = available_sizes(flag)
    if not _is_int(image_size) or image_size not in sizes:
        raise _refuse("image_size", image_size, f"one of the sizes released for {flag}: {', '.join(map(str, sizes))}")
    return dataset_info(flag, image_size)


def check_bundle_settings(spatial_dims: int, **settings: Any) -> MedMNISTInfo | None:
    """Check a bundle's settings before anything is exported, built or trained.

    Args:
        spatial_dims: 2 or 3, the bundle's dimensionality; ``flag`` must be a dataset of that dimensionality.
        settings: setting name to value: ``flag`` and ``image_size`` (checked together against ``medmnist.INFO``),
            and any name of :data:`CHECKS`. Names not listed are refused, so a config cannot check a setting by
            mistake that nothing checks.

    Returns:
        the dataset's :class:`~monai_sre.data.MedMNISTInfo` when ``flag`` is given, else ``None``.

    Raises:
        BundleSettingError: (a ``ValueError``) for the first bad value, naming the override (``--name value``) and
            the values accepted.
        KeyError: for a setting name that has no check.
    """
    unknown = sorted(set(settings) - set(CHECKS) - {"flag", "image_size"})
    if unknown:
        raise KeyError(f"no check for bundle setting(s) {unknown}; known: {sorted(CHECKS) + ['flag', 'image_size']}")
    info = None
    if "flag" in settings:
        info = _check_dataset(spatial_dims, settings["flag"], settings.get("image_size", 28))
    for name, value in settings.items():
        if name in CHECKS:
            expected = CHECKS[name](value)
            if expected is not None:
                raise _refuse(name, value, expected)
    return info
