"""Automated lesion segmentation (SimpleITK) for image series that came without any mask.

Methods: ``threshold`` (fixed ``lower``..``upper`` in image units, e.g. HU), ``otsu`` (the brighter Otsu class),
``connected_threshold`` (region growing from a seed within ``lower``..``upper``) and ``confidence_connected``
(region growing from a seed within mean +/- ``confidence_multiplier`` standard deviations of the region,
re-estimated ``iterations`` times) and ``ultrasound`` (2D images: speckle-reducing smoothing and a watershed grown
from the seed, see ``masks/ultrasound.py``). The image is smoothed a little first (edge-preserving curvature flow)
because scanner noise otherwise makes region growing leak or stop early; holes are filled, and the connected component
that holds the seed is kept (the largest one when there is no seed).

Seeds come from ``<data root>/seeds.csv``: ``patient_id,x,y,z[,modality]``, a point inside the lesion in patient
coordinates (mm, DICOM LPS, as ImagePositionPatient). A row with a modality applies to series of that modality;
a row without one to any series of the patient. For a 2D image (PNG, DICOM US) a row may instead give the pixel:
``patient_id,x,y`` with ``z`` empty (or no ``z`` column at all, as in a file of 2D seeds only), x = pixel column and
y = pixel row (0-based, as in an image viewer).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError, SeedFileError
from radiomics_assets.masks.sources import automated_source
from radiomics_assets.masks.ultrasound import segment_ultrasound
from radiomics_assets.paths import patient_key

METHODS = ("threshold", "otsu", "connected_threshold", "confidence_connected", "ultrasound")
SEEDED_METHODS = ("connected_threshold", "confidence_connected", "ultrasound")
SEEDS_FILE = "seeds.csv"
SMOOTHING_ITERATIONS = 2
"""Curvature-flow iterations: enough to stop noise from leaking region growing, few enough to keep the lesion edge
(on synthetic CT lesions more smoothing lowered the Dice of confidence_connected from ~0.97 to ~0.93 and below)."""
SMOOTHING_TIME_STEP = 0.0625  # the stable curvature-flow step for 3D images


@dataclass(frozen=True)
class AutoSegmentation:
    """How to segment a series without a mask; ``method`` empty means never."""

    method: str = ""
    lower: float = -100.0
    upper: float = 300.0
    confidence_multiplier: float = 2.5
    iterations: int = 4
    roi_name: str = "auto"

    def __post_init__(self) -> None:
        if self.method and self.method not in METHODS:
            raise ValueError(f"auto segmentation method {self.method!r} is not one of {list(METHODS)}")
        if self.lower > self.upper:
            raise ValueError(f"auto segmentation lower {self.lower} is above upper {self.upper}")

    @property
    def source_kind(self) -> str:
        return automated_source(self.method)


@dataclass(frozen=True)
class Seed:
    point_mm: tuple[float, float, float] | None
    """Patient coordinates (mm, DICOM LPS); None for a 2D pixel seed."""
    modality: str  # empty: any modality
    source: str  # "<file>:<line>", for messages
    pixel: tuple[int, int] | None = None
    """(column, row) of a 2D image, 0-based, when the row's ``z`` is empty."""

    def describe(self) -> str:
        if self.pixel is not None:
            return f"column {self.pixel[0]}, row {self.pixel[1]}"
        return f"{self.point_mm} mm"


def read_seeds(path: Path) -> dict[str, list[Seed]]:
    """Partition key -> seed points from a ``seeds.csv``; an absent file gives no seeds."""
    if not path.exists():
        return {}
    seeds: dict[str, list[Seed]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"patient_id", "x", "y"} - set(reader.fieldnames or [])
        if missing:
            raise SeedFileError(f"{path}: lacks column(s) {sorted(missing)}; expected patient_id,x,y[,z][,modality]")
        for line, row in enumerate(reader, start=2):
            try:
                key = patient_key(row["patient_id"])
                if (row.get("z") or "").strip():
                    point, pixel = tuple(float(row[axis]) for axis in ("x", "y", "z")), None
                else:
                    point, pixel = None, (_pixel(row["x"]), _pixel(row["y"]))
            except (TypeError, ValueError) as exc:
                raise SeedFileError(f"{path}:{line}: bad seed row ({exc})") from exc
            modality = (row.get("modality") or "").strip().upper()
            seeds.setdefault(key, []).append(Seed(point, modality, f"{path}:{line}", pixel))
    return seeds


def _pixel(text: str | None) -> int:
    """A 0-based pixel index; a fractional one is refused rather than rounded (it would suggest mm)."""
    value = float(text)
    if value != int(value) or value < 0:
        raise ValueError(f"2D seed (z empty) needs whole, non-negative pixel indices, got {text!r}")
    return int(value)


def maskless_images_accepted(data_dir: Path, method: str) -> Callable[[str], bool]:
    """Whether an image file without a mask file is a patient: when automated segmentation is on (``method``),
    or a seed is given for it in ``<data_dir>/seeds.csv`` (read once, here)."""
    if method:
        return lambda key: True
    try:
        seeded = frozenset(read_seeds(Path(data_dir) / SEEDS_FILE))
    except SeedFileError:  # the partitions that need the file report it; registration goes on without seeds
        seeded = frozenset()
    return seeded.__contains__


def seed_for(seeds: list[Seed], modality: str) -> Seed | None:
    """The seed given for this modality, else the patient's seed without a modality."""
    exact = [s for s in seeds if s.modality == modality.upper()]
    generic = [s for s in seeds if not s.modality]
    return (exact or generic or [None])[0]


def _seed_index(image: sitk.Image, seed: Seed) -> tuple[int, int, int]:
    if seed.pixel is not None:
        if image.GetDimension() == 3 and image.GetSize()[2] != 1:
            raise DicomInputError(
                f"{seed.source}: a 2D seed (column, row; z empty) was given for a series of {image.GetSize()[2]} "
                "slices; give x,y,z in mm for 3D series"
            )
        column, row = seed.pixel
        if not (column < image.GetSize()[0] and row < image.GetSize()[1]):
            raise DicomInputError(
                f"{seed.source}: seed column {column}, row {row} lies outside the image "
                f"({image.GetSize()[0]} columns, {image.GetSize()[1]} rows)"
            )
        return column, row, 0
    index = np.rint(image.TransformPhysicalPointToContinuousIndex(seed.point_mm)).astype(int)
    if not all(0 <= int(i) < n for i, n in zip(index, image.GetSize(), strict=True)):
        raise DicomInputError(
            f"{seed.source}: seed {seed.point_mm} mm lies outside the image (voxel index {index.tolist()}, "
            f"size {image.GetSize()})"
        )
    return tuple(int(i) for i in index)


def segment_lesion(image: sitk.Image, settings: AutoSegmentation, seed: Seed | None, source: str) -> sitk.Image:
    """Binary uint8 lesion mask on the grid of ``image``; ``source`` names the series in messages."""
    if settings.method in SEEDED_METHODS and seed is None:
        raise DicomInputError(f"{source}: {settings.method} needs a seed point; add a row to {SEEDS_FILE}")
    seed_index = _seed_index(image, seed) if seed is not None else None
    if settings.method == "ultrasound":
        mask = segment_ultrasound(image, seed_index, source)
        if not sitk.GetArrayViewFromImage(mask).any():
            raise DicomInputError(f"{source}: ultrasound segmentation did not include the seed ({seed.source})")
        return mask
    smooth = sitk.CurvatureFlow(sitk.Cast(image, sitk.sitkFloat32), SMOOTHING_TIME_STEP, SMOOTHING_ITERATIONS)
    if settings.method == "threshold":
        raw = sitk.BinaryThreshold(smooth, settings.lower, settings.upper, 1, 0)
    elif settings.method == "otsu":
        raw = sitk.OtsuThreshold(smooth, 0, 1)  # 1 above the threshold: lesions of interest are the brighter class
    elif settings.method == "connected_threshold":
        raw = sitk.ConnectedThreshold(smooth, seedList=[seed_index], lower=settings.lower, upper=settings.upper)
    else:
        raw = sitk.ConfidenceConnected(
            smooth,
            seedList=[seed_index],
            numberOfIterations=settings.iterations,
            multiplier=settings.confidence_multiplier,
            initialNeighborhoodRadius=1,
            replaceValue=1,
        )
    filled = sitk.BinaryFillhole(sitk.Cast(raw, sitk.sitkUInt8), fullyConnected=False, foregroundValue=1)
    components = sitk.ConnectedComponent(filled)
    labels = sitk.GetArrayViewFromImage(components)
    if seed_index is not None:
        keep = int(labels[seed_index[2], seed_index[1], seed_index[0]])
        if keep == 0:
            raise DicomInputError(
                f"{source}: {settings.method} did not include the seed {seed.describe()} ({seed.source}); "
                "check the seed or the thresholds"
            )
    else:
        counts = np.bincount(labels.ravel())
        if counts.size < 2:
            raise DicomInputError(f"{source}: {settings.method} found no voxel to segment")
        keep = int(np.argmax(counts[1:]) + 1)
    mask = sitk.GetImageFromArray((labels == keep).astype(np.uint8))
    mask.CopyInformation(image)
    return mask
