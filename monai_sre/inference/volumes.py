# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Former home of the clinical preprocessing; its public names stay importable from here.

The transforms and their builders live in :mod:`monai_sre.transforms.clinical`, beside the input contract they are
configured by. Import from there, or from :mod:`monai_sre.transforms`.
"""

from __future__ import annotations

from monai_sre.transforms.clinical import *  # noqa: F401,F403 (every public name of the new home)
from monai_sre.transforms.clinical import __all__  # noqa: F401
