"""The pixel spacing a model's training images had, and the check that a new image to score has the same.

Shape features (area, perimeter, diameters) and, through the pixel grid, texture features depend on the pixel
spacing. A PNG has no physical spacing: the reader stores 1 px as 1 mm ("pixel" spacing); a DICOM US image has
its spacing in mm from ``SequenceOfUltrasoundRegions`` ("mm" spacing). A model trained on one kind gives a
meaningless score on the other, and on images of a much finer or coarser spacing than its training images,
without any error. The saved model therefore records, per modality, the spacing kinds and the range of in-plane
spacings of its training series (table ``series``), and ``predict`` compares a new image with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

PHYSICAL_MM = "mm"
"""Spacing from the file's calibration, in mm (DICOM)."""
UNITLESS_PIXELS = "pixel"
"""No physical spacing (PNG): every pixel is stored as 1 x 1 "mm"."""
SPACING_TOLERANCE = 0.05
"""Relative tolerance on each in-plane spacing: 5 % beyond the training range still scores (rounding of the
calibration, scanners at the same depth setting); more fails. 5 % changes an area by ~10 %."""


def spacing_kind(source_path: str | Path) -> str:
    """Whether an image file's spacing is physical: only PNG images lack a calibration."""
    return UNITLESS_PIXELS if Path(source_path).suffix.lower() == ".png" else PHYSICAL_MM


@dataclass(frozen=True)
class TrainingSpacing:
    """The in-plane pixel spacings of the training images of one modality."""

    kinds: tuple[str, ...]
    """The spacing kinds seen (``mm``, ``pixel``), sorted; one in a sound cohort."""
    smallest: tuple[float, float]
    """(column, row) spacing minima, i.e. x and y."""
    largest: tuple[float, float]

    def describe(self) -> str:
        kinds = " and ".join(_kind_name(k) for k in self.kinds)
        if self.smallest == self.largest:
            return f"{kinds} of {_pair(self.smallest)}"
        return f"{kinds} of {_pair(self.smallest)} to {_pair(self.largest)}"


def _pair(xy: tuple[float, float]) -> str:
    return f"{xy[0]:.4g} x {xy[1]:.4g}"


def training_spacing(series: pd.DataFrame) -> dict[str, TrainingSpacing]:
    """Modality -> spacing of the given ``series`` rows (columns modality, spacing_x, spacing_y, source_path)."""
    spacing = {}
    for modality, rows in series.groupby("modality", sort=True):
        spacing[str(modality)] = TrainingSpacing(
            kinds=tuple(sorted({spacing_kind(p) for p in rows.source_path.astype(str)})),
            smallest=(float(rows.spacing_x.min()), float(rows.spacing_y.min())),
            largest=(float(rows.spacing_x.max()), float(rows.spacing_y.max())),
        )
    return spacing


def resamples_to_fixed_spacing(params_path: Path) -> bool:
    """Whether the PyRadiomics parameter file resamples every image to one in-plane spacing before extraction
    (``setting: resampledPixelSpacing`` with non-zero x and y; 0 keeps an axis's own spacing)."""
    params = yaml.safe_load(Path(params_path).read_text()) or {}
    resampled = (params.get("setting") or {}).get("resampledPixelSpacing")
    return bool(resampled) and len(resampled) >= 2 and all(float(v) > 0 for v in resampled[:2])


def spacing_mismatch(
    trained: TrainingSpacing, kind: str, spacing_xy: tuple[float, float], *, resampled: bool
) -> str | None:
    """Why an image of spacing ``kind`` and ``spacing_xy`` cannot be scored by a model trained on ``trained``, or
    None. A kind mismatch always fails (resampling a PNG to "0.1 mm" does not make its pixels millimetres); a
    spacing outside the training range (+/- ``SPACING_TOLERANCE``) fails unless ``resampled``."""
    if kind not in trained.kinds:
        return f"its spacing is in {_kind_name(kind)}, the model was trained on images with {trained.describe()}"
    if resampled:
        return None
    for value, low, high in zip(spacing_xy, trained.smallest, trained.largest, strict=True):
        if not low * (1 - SPACING_TOLERANCE) <= value <= high * (1 + SPACING_TOLERANCE):
            return (
                f"its pixel spacing {_pair(spacing_xy)} is outside the training images' {trained.describe()} "
                f"(tolerance {SPACING_TOLERANCE:.0%}); resample to a fixed spacing in the parameter file "
                "(resampledPixelSpacing) and retrain, or train on images of this spacing"
            )
    return None


def _kind_name(kind: str) -> str:
    return "physical mm" if kind == PHYSICAL_MM else "unitless PNG pixels"
