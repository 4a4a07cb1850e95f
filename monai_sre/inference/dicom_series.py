# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Former home of the DICOM series reader; its public names stay importable from here.

The reader and its header and slice-geometry checks live in :mod:`monai_sre.data.dicom_series`, beside the DICOM
writer, so that the clinical loader of :mod:`monai_sre.transforms.clinical` can use them. Import from there.
"""

from __future__ import annotations

from monai_sre.data.dicom_series import *  # noqa: F401,F403 (every public name of the new home)
from monai_sre.data.dicom_series import __all__  # noqa: F401
