"""Which ROIs (RTSTRUCT) or segments (DICOM-SEG) a run uses: the one rule for ``roi_pattern``."""

from __future__ import annotations

import re
from collections.abc import Callable


def name_matcher(name_pattern: str) -> Callable[[str], bool]:
    """True for a name that fully matches the regular expression ``name_pattern``, ignoring case (``GTV.*``
    takes ``gtv_primary`` and ``GTV-1``, not ``PTV_GTV``)."""
    pattern = re.compile(name_pattern, re.IGNORECASE)
    return lambda name: pattern.fullmatch(name) is not None
