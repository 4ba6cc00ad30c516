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


def data_root(data_dir: str | Path | None = None) -> DataRoot:
    """The one resolution of the data root: ``data_dir`` when given, else ``$RADIOMICS_DATA_DIR``, else ``data/``
    in the project (read when called, so a run uses the environment it was started with)."""
    chosen = data_dir if data_dir else os.environ.get(DATA_DIR_ENV, PROJECT_ROOT / "data")
    return DataRoot(Path(chosen).resolve())


@dataclass(frozen=True)
class DataRoot:
    """Every path the pipeline reads or writes is derived from this root (no cwd-relative paths)."""

    path: Path

    @property
    def inbox(self) -> Path:
        return self.path / "inbox"

    @property
    def labels_csv(self) -> Path:
        return self.path / "labels.csv"

    @property
    def warehouse(self) -> Path:
        return self.path / "radiomics.duckdb"

    @property
    def volumes(self) -> Path:
        """Canonical image volumes, ``volumes/<patient>/<series_uid>.nrrd``."""
        return self.path / "volumes"

    @property
    def masks(self) -> Path:
        """Voxel masks on the image grid, ``masks/<patient>/<series_uid>__<roi>.nrrd``."""
        return self.path / "masks"

    @property
    def models(self) -> Path:
        return self.path / "models"

    @property
    def reports(self) -> Path:
        return self.path / "reports"
