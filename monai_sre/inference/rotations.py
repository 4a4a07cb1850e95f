# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Former name of :mod:`monai_sre.inference.rotation_check`; its public names stay importable from here."""

from __future__ import annotations

from monai_sre.inference.rotation_check import grid_symmetries, symmetry_spread

__all__ = ["grid_symmetries", "symmetry_spread"]
