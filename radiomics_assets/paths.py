"""The data root and the fixed layout under it (the data contract: docs/reference/data-contract.md)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from radiomics_assets import environment

DATA_DIR_ENV = environment.DATA_DIR.name
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Stored volumes and masks: gzip-compressed NRRD (3D Slicer's and PyRadiomics' own format), written 2.7x faster
# than gzip-compressed NIfTI by SimpleITK for 6 % more bytes.
STORED_IMAGE_SUFFIX = ".nrrd"

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
KEY_MAX_CHARS = 64
"""Longest key: DICOM's PatientID (LO) holds at most 64 characters, and a key is part of file names (``manifests/
<key>.json``, ``volumes/<key>/``), run keys and URLs; 64 stays far below every file-name limit."""
KEY_HASH_CHARS = 8
"""Hex digits of the SHA-256 of the original ID appended to a key whose ID had to be changed."""


def patient_key(patient_id: str) -> str:
    """Partition key for a patient: only ``[A-Za-z0-9_-]``, at most 64 characters, one key per ID.

    The key is derived from the DICOM PatientID (never PatientName). Leading and trailing spaces are not part
    of the ID (DICOM pads values with spaces). An ID that is already a safe key (``SYN-0001``) is its own key;
    any other gets its sanitised form (runs of other characters become ``_``) plus ``-`` and the first 8 hex
    digits of the SHA-256 of the ID's UTF-8 bytes, so that ``AB 20`` (``AB_20-<hash>``), ``AB/20`` (another
    hash) and ``AB_20`` stay three patients. An ID with no usable character becomes ``id-<hash>``; an ID whose
    sanitised form is longer than 64 characters is cut to 55 and gets the hash. Every key is its own key again
    (``patient_key(patient_key(x)) == patient_key(x)``), so tables that hold keys (labels.csv, seeds.csv) may
    give either the ID or the key.
    """
    original = str(patient_id).strip()
    sanitised = _UNSAFE.sub("_", original).strip("_")
    if original and sanitised == original and len(original) <= KEY_MAX_CHARS:
        return original
    # surrogatepass: IDs taken from file names that are not valid UTF-8 hold lone surrogates; still hashable.
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:KEY_HASH_CHARS]
    stem = sanitised[: KEY_MAX_CHARS - KEY_HASH_CHARS - 1].rstrip("_-") or "id"
    return f"{stem}-{digest}"


WORKING_FOLDER = ".radiomics"


def working_store(published: str | Path) -> Path:
    """The pipeline's private working copy of the published DuckDB file ``published``: same name, in the hidden
    folder ``.radiomics`` beside it (the same file system, so a published copy can be renamed into place)."""
    published = Path(published)
    return published.parent / WORKING_FOLDER / published.name


def data_root(data_dir: str | Path | None = None) -> DataRoot:
    """The one resolution of the data root: ``data_dir`` when given, else ``$RADIOMICS_DATA_DIR``, else ``data/``
    in the project (read when called, so a run uses the environment it was started with)."""
    chosen = data_dir if data_dir else environment.read(environment.DATA_DIR)
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
        """The published feature store that readers open (read-only); the pipeline writes :attr:`working_warehouse`
        and replaces this file with a copy after each change (see ``warehouse.py``)."""
        return self.path / "radiomics.duckdb"

    @property
    def working_warehouse(self) -> Path:
        """The pipeline's private DuckDB file (``.radiomics/radiomics.duckdb``); nothing else should open it."""
        return working_store(self.warehouse)

    @property
    def volumes(self) -> Path:
        """Canonical image volumes, ``volumes/<patient>/<series_uid>.nrrd``."""
        return self.path / "volumes"

    @property
    def masks(self) -> Path:
        """Voxel masks on the image grid, ``masks/<patient>/<series_uid>__<roi>.nrrd``."""
        return self.path / "masks"

    @property
    def feature_tables(self) -> Path:
        """Feature tables made elsewhere (``*.csv``, ``*.csv.gz`` or ``*.gz``, ``*.parquet``, each with an optional
        ``<name>.import.yaml``), imported as feature sources by the ``imported_features`` asset and its sensor."""
        return self.path / "feature_tables"

    @property
    def models(self) -> Path:
        return self.path / "models"

    @property
    def reports(self) -> Path:
        return self.path / "reports"
