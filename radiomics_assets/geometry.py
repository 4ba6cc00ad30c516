"""Image grids compared: the one check that an image and a mask (or two volumes) share size, spacing, origin and
direction, either exactly or within stated tolerances."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def grid_mismatch(
    reference: sitk.Image, other: sitk.Image, *, position_tolerance_mm: float = 0.0, direction_tolerance: float = 0.0
) -> str | None:
    """What differs between the grids of ``reference`` and ``other`` (``"spacing (..) vs (..)"``), or None.

    With zero tolerances the comparison is exact (bit for bit); otherwise spacing and origin may differ by
    ``position_tolerance_mm`` and direction cosines by ``direction_tolerance`` (plus NumPy's relative 1e-5).
    """
    if reference.GetSize() != other.GetSize():
        return f"size {other.GetSize()} vs {reference.GetSize()}"
    for name, tolerance in (
        ("spacing", position_tolerance_mm),
        ("origin", position_tolerance_mm),
        ("direction", direction_tolerance),
    ):
        expected, found = getattr(reference, f"Get{name.capitalize()}")(), getattr(other, f"Get{name.capitalize()}")()
        same = expected == found if tolerance == 0 else np.allclose(expected, found, atol=tolerance)
        if not same:
            return f"{name} {tuple(round(v, 4) for v in found)} vs {tuple(round(v, 4) for v in expected)}"
    return None
