"""DICOM headers of the inbox: read up to the tags needed, grouped by patient and series (by UID, not folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial

from radiomics_assets.errors import DicomInputError
from radiomics_assets.ingest.inbox import inbox_files
from radiomics_assets.paths import patient_key

IMAGE_MODALITIES = {"CT", "MR", "PT"}
ULTRASOUND = "US"
"""Single 2D images (``ingest/dicom_us.py``), kept apart from the slice series above."""


SEGMENTATION_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"}  # SEG, label map SEG


LAST_HEADER_TAG = 0x00280030  # PixelSpacing: every tag read_header needs comes before it


def read_until(path: Path, last_tag: int) -> pydicom.Dataset:
    """The data elements of a DICOM file up to ``last_tag``.

    Parsing stops there, so nothing after it is read: not the pixels, and not the long sequences further on
    (an RTSTRUCT's contours, a PET's dose records), which take most of the time of a full header read.
    """
    with open(path, "rb") as fp:
        return read_partial(fp, stop_when=lambda tag, vr, length: tag > last_tag)


@dataclass(frozen=True)
class DicomFile:
    path: Path
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    frame_of_reference_uid: str
    sop_class_uid: str = ""
    # Slice geometry, kept with the header so that sorting and checking a series needs no second read:
    # DICOM's decimal strings as "a\\b\\c" (empty for files without, such as RTSTRUCTs).
    image_position: str = ""
    image_orientation: str = ""
    rows_columns: str = ""
    pixel_spacing: str = ""

    @property
    def is_segmentation(self) -> bool:
        return self.modality == "SEG" or self.sop_class_uid in SEGMENTATION_SOP_CLASSES


@dataclass
class PatientFiles:
    """Every DICOM file of one patient, grouped by series; RTSTRUCTs and SEGs kept apart from image series."""

    key: str
    image_series: dict[str, list[DicomFile]] = field(default_factory=dict)
    rtstructs: list[DicomFile] = field(default_factory=list)
    segmentations: list[DicomFile] = field(default_factory=list)
    """DICOM-SEG objects (Segmentation Storage), each paired later with its image series."""
    ultrasound: list[DicomFile] = field(default_factory=list)
    """DICOM US images, each a 2D image of its own (``ingest/dicom_us.py``)."""
    unreadable: dict[Path, str] = field(default_factory=dict)
    """Files that could not be read, found in a folder that holds this patient's files (likely theirs)."""

    def all_files(self) -> list[DicomFile]:
        images = [f for series in self.image_series.values() for f in series]
        return images + self.rtstructs + self.segmentations + self.ultrasound

    @property
    def paths(self) -> list[Path]:
        return sorted(f.path for f in self.all_files())


@dataclass
class InboxScan:
    patients: dict[str, PatientFiles]
    ignored: dict[Path, str]  # path -> why it was not used


def read_header(path: Path) -> DicomFile:
    try:
        ds = read_until(path, LAST_HEADER_TAG)
    except InvalidDicomError as exc:
        raise DicomInputError(f"{path}: not a DICOM file ({exc})") from exc
    except Exception as exc:  # truncated or corrupt files raise many different errors inside pydicom
        raise DicomInputError(f"{path}: unreadable DICOM ({type(exc).__name__}: {exc})") from exc
    missing = [t for t in ("PatientID", "SeriesInstanceUID", "Modality") if not getattr(ds, t, "")]
    if missing:
        raise DicomInputError(f"{path}: incomplete DICOM header, lacks {', '.join(missing)} (truncated file?)")
    return DicomFile(
        path=path,
        patient_id=str(ds.PatientID),
        study_uid=str(getattr(ds, "StudyInstanceUID", "")),
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(getattr(ds, "SOPInstanceUID", "")),
        modality=str(ds.Modality).upper(),
        frame_of_reference_uid=str(getattr(ds, "FrameOfReferenceUID", "")),
        sop_class_uid=str(getattr(ds, "SOPClassUID", "")),
        image_position=_joined(ds, "ImagePositionPatient"),
        image_orientation=_joined(ds, "ImageOrientationPatient"),
        rows_columns=f"{ds.Rows}\\{ds.Columns}" if "Rows" in ds and "Columns" in ds else "",
        pixel_spacing=_joined(ds, "PixelSpacing"),
    )


def _joined(ds: pydicom.Dataset, keyword: str) -> str:
    """A multi-valued decimal attribute as text, each number exactly (``repr`` of the float)."""
    values = ds.get(keyword)
    try:
        return "\\".join(repr(float(v)) for v in values) if values else ""
    except (TypeError, ValueError):  # malformed: reported as missing geometry when the series is read
        return ""


def group_headers(headers: list[DicomFile], unreadable: dict[Path, str]) -> InboxScan:
    """Group read headers by patient and series; ``unreadable`` maps files whose header failed to the reason.

    Shared by the full inbox scan and the incremental inbox index, so both sort files the same way.
    """
    patients: dict[str, PatientFiles] = {}
    ignored = dict(unreadable)
    for header in sorted(headers, key=lambda h: h.path):
        path = header.path
        key = patient_key(header.patient_id)
        patient = patients.setdefault(key, PatientFiles(key=key))
        if header.modality == "RTSTRUCT":
            patient.rtstructs.append(header)
        elif header.is_segmentation:
            patient.segmentations.append(header)
        elif header.modality in IMAGE_MODALITIES:
            patient.image_series.setdefault(header.series_uid, []).append(header)
        elif header.modality == ULTRASOUND:
            patient.ultrasound.append(header)
        else:
            ignored[path] = f"{path}: modality {header.modality} is not an image series, RTSTRUCT or SEG"
    folders = {f.path.parent: p for p in patients.values() for f in p.all_files()}
    for path, why in sorted(ignored.items()):
        if path.parent in folders:
            folders[path.parent].unreadable[path] = why
    return InboxScan(patients=patients, ignored=ignored)


def header_or_error(path: Path) -> tuple[DicomFile | None, str | None]:
    """(header, None) for a DICOM file, (None, why) for any other; plain values, so it runs in a pool."""
    try:
        return read_header(path), None
    except DicomInputError as exc:
        return None, str(exc)


def read_headers(paths: list[Path]) -> tuple[list[DicomFile], dict[Path, str]]:
    """Headers of ``paths`` that are DICOM, and the reason for each file that is not."""
    headers, unreadable = [], {}
    for path in paths:
        header, error = header_or_error(path)
        if header is None:
            unreadable[path] = error
        else:
            headers.append(header)
    return headers, unreadable


def scan_inbox(inbox: Path) -> InboxScan:
    """Header-only pass over every file under ``inbox`` (any nesting)."""
    return group_headers(*read_headers(inbox_files(inbox)))
