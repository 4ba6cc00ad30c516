"""The data root and the fixed layout under it (the data contract in README.md)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "RADIOMICS_DATA_DIR"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Stored volumes and masks: gzip-compressed NRRD (3D Slicer's and PyRadiomics' own format), written 2.7x faster
# than gzip-compressed NIfTI by SimpleITK for 6 % more bytes.
STORED_IMAGE_SUFFIX = ".nrrd"

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def patient_key(patient_id: str) -> str:
    """Partition key for a patient: only ``[A-Za-z0-9_-]``, so it is safe in paths, URLs and the UI.

    The key is derived from the DICOM PatientID (never PatientName); anything else becomes ``_``.
    """
    key = _UNSAFE.sub("_", str(patient_id).strip()).strip("_")
    if not key:
        raise ValueError(f"patient id {patient_id!r} has no usable characters for a partition key")
    return key


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, PROJECT_ROOT / "data")).resolve()


@dataclass(frozen=True)
class DataRoot:
    """Every path the pipeline reads or writes is derived from this root (no cwd-relative paths)."""

    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def labels_csv(self) -> Path:
        return self.root / "labels.csv"

    @property
    def warehouse(self) -> Path:
        return self.root / "radiomics.duckdb"

    @property
    def volumes(self) -> Path:
        """Canonical image volumes, ``volumes/<patient>/<series_uid>.nrrd``."""
        return self.root / "volumes"

    @property
    def masks(self) -> Path:
        """Voxel masks on the image grid, ``masks/<patient>/<series_uid>__<roi>.nrrd``."""
        return self.root / "masks"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def reports(self) -> Path:
        return self.root / "reports"
