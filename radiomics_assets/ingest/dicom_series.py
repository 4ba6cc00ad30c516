"""Find DICOM files in an inbox, group them by patient and series (by UID, not folder), read and validate series.

A series becomes a volume only when its slices are consistent: one orientation, one in-plane geometry,
and slice positions (from ImagePositionPatient) that are evenly spaced with no gap or duplicate. Anything
else raises :class:`DicomInputError` naming the file and the problem, instead of producing a wrong volume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial

from radiomics_assets.paths import patient_key

IMAGE_MODALITIES = {"CT", "MR", "PT"}
SEGMENTATION_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"}  # SEG, label map SEG
LAST_HEADER_TAG = 0x00280030  # PixelSpacing: every tag read_header needs comes before it


def read_until(path: Path, last_tag: int) -> pydicom.Dataset:
    """The data elements of a DICOM file up to ``last_tag``.

    Parsing stops there, so nothing after it is read: not the pixels, and not the long sequences further on
    (an RTSTRUCT's contours, a PET's dose records), which take most of the time of a full header read.
    """
    with open(path, "rb") as fp:
        return read_partial(fp, stop_when=lambda tag, vr, length: tag > last_tag)


class DicomInputError(ValueError):
    """Input that cannot become a correct volume or mask; the message names the file and the problem."""


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
    unreadable: dict[Path, str] = field(default_factory=dict)
    """Files that could not be read, found in a folder that holds this patient's files (likely theirs)."""

    def all_files(self) -> list[DicomFile]:
        return [f for series in self.image_series.values() for f in series] + self.rtstructs + self.segmentations

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


def inbox_entries(inbox: Path) -> list[tuple[str, os.stat_result]]:
    """Every non-hidden file under ``inbox`` as (path relative to ``inbox`` with ``/``, ``stat``), sorted.

    Symlinked folders are followed (studies are often linked in), but each real folder is listed once, so a link
    loop or two links to the same study cannot repeat files. Files that vanish or cannot be stat'ed are skipped.
    Plain strings, not ``Path`` objects: this runs on every sensor tick over the whole inbox.
    """
    found: list[tuple[str, os.stat_result]] = []
    visited: set[tuple[int, int]] = set()
    stack = [(str(inbox), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            folder_stat = os.stat(folder)
            if (folder_stat.st_dev, folder_stat.st_ino) in visited:
                continue
            visited.add((folder_stat.st_dev, folder_stat.st_ino))
            with os.scandir(folder) as listing:
                entries = [e for e in listing if not e.name.startswith(".")]
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=True):
                    stack.append((entry.path, f"{prefix}{entry.name}/"))
                elif entry.is_file(follow_symlinks=True):
                    found.append((prefix + entry.name, entry.stat(follow_symlinks=True)))
            except OSError:  # removed while listing, or a broken link
                continue
    return sorted(found, key=lambda item: item[0].split("/"))


def inbox_files(inbox: Path) -> list[Path]:
    """Every non-hidden file under ``inbox``, following symlinked folders (see :func:`inbox_entries`)."""
    return [Path(inbox) / rel for rel, _ in inbox_entries(inbox)]


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


@dataclass(frozen=True)
class SeriesInfo:
    series_uid: str
    study_uid: str
    modality: str
    frame_of_reference_uid: str
    n_slices: int
    size: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    first_file: Path


def _slice_geometry(files: list[DicomFile]) -> list[tuple[Path, np.ndarray, np.ndarray, tuple]]:
    """(path, position, orientation, (rows, columns, spacing)) per slice, from the headers already read."""
    rows = []
    for file in files:
        numbers = {
            name: [float(v) for v in text.split("\\")] if text else []
            for name, text in (("position", file.image_position), ("orientation", file.image_orientation),
                               ("size", file.rows_columns), ("spacing", file.pixel_spacing))
        }  # fmt: skip
        lacking = [name for name, count in (("position", 3), ("orientation", 6), ("size", 2), ("spacing", 2))
                   if len(numbers[name]) != count]  # fmt: skip
        if lacking:
            raise DicomInputError(f"{file.path}: missing image geometry (no valid {', '.join(lacking)})")
        in_plane = (*(int(v) for v in numbers["size"]), *(round(v, 4) for v in numbers["spacing"]))
        rows.append((file.path, np.array(numbers["position"]), np.array(numbers["orientation"]), in_plane))
    return rows


def sorted_slice_files(files: list[DicomFile]) -> list[Path]:
    """Slice files in position order, after checking orientation, in-plane geometry and slice spacing."""
    geometry = _slice_geometry(files)
    path0, _, orientation0, plane0 = geometry[0]
    for path, _, orientation, plane in geometry[1:]:
        if not np.allclose(orientation, orientation0, atol=1e-4):
            raise DicomInputError(f"{path}: orientation {orientation.tolist()} differs from {path0} in the same series")
        if plane != plane0:
            raise DicomInputError(f"{path}: rows/columns/pixel spacing {plane} differ from {path0} {plane0}")
    normal = np.cross(orientation0[:3], orientation0[3:])
    ordered = sorted(geometry, key=lambda g: float(g[1] @ normal))
    positions = np.array([float(g[1] @ normal) for g in ordered])
    if len(positions) > 1:
        steps = np.diff(positions)
        duplicate = np.flatnonzero(steps < 1e-3)
        if duplicate.size:
            i = duplicate[0]
            raise DicomInputError(
                f"{ordered[i + 1][0]}: duplicate slice at position {positions[i + 1]:.3f} mm (same as {ordered[i][0]})"
            )
        step = float(np.median(steps))
        gaps = np.flatnonzero(np.abs(steps - step) > max(0.01 * step, 1e-3))
        if gaps.size:
            i = gaps[0]
            raise DicomInputError(
                f"{ordered[i + 1][0]}: slice spacing {steps[i]:.3f} mm after {ordered[i][0]} where the series has "
                f"{step:.3f} mm: a slice is missing or out of place"
            )
    return [g[0] for g in ordered]


def read_series(files: list[DicomFile]) -> sitk.Image:
    """Read a validated series as a float32 volume in stored units after rescale (HU for CT, SUV for PET)."""
    ordered = sorted_slice_files(files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in ordered])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DicomInputError(_first_unreadable_pixels(ordered) or f"{ordered[0].parent}: unreadable series") from exc
    return sitk.Cast(image, sitk.sitkFloat32)


def _first_unreadable_pixels(paths: list[Path]) -> str | None:
    """Name the slice whose pixel data is broken (ITK's own error does not say which file)."""
    for path in paths:
        try:
            _ = pydicom.dcmread(path).pixel_array  # decoding is the check
        except Exception as exc:
            return f"{path}: pixel data unreadable ({type(exc).__name__}: {exc})"
    return None


def describe_series(files: list[DicomFile], image: sitk.Image) -> SeriesInfo:
    first = files[0]
    return SeriesInfo(
        series_uid=first.series_uid,
        study_uid=first.study_uid,
        modality=first.modality,
        frame_of_reference_uid=first.frame_of_reference_uid,
        n_slices=len(files),
        size=tuple(int(v) for v in image.GetSize()),
        spacing_mm=tuple(float(v) for v in image.GetSpacing()),
        origin_mm=tuple(float(v) for v in image.GetOrigin()),
        first_file=min(f.path for f in files),
    )
