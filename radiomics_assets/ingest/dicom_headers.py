"""DICOM headers of the inbox: read up to the tags needed, grouped by patient and series (by UID, not folder).

:func:`read_header` reads the tags of a plainly encoded file itself (``ingest.dicom_elements``; several times
faster than building a pydicom data set, which matters when an archive is indexed) and decodes each value as
pydicom 3 does. Any file or value with a subtlety (text that is not ASCII, a character set other than the
default, Latin-1 or UTF-8, several values where one is printed, a multi-frame object, an error, pydicom
settings other than its defaults) is read by pydicom as before, so both give equal headers and equal error
messages (checked on synthetic, unusual and real files in ``test_inbox_index``).
"""

from __future__ import annotations

import filecmp
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial

from radiomics_assets.errors import DicomInputError
from radiomics_assets.ingest.dicom_elements import read_elements
from radiomics_assets.ingest.inbox import inbox_files
from radiomics_assets.paths import patient_key

IMAGE_MODALITIES = {"CT", "MR", "PT"}
ULTRASOUND = "US"
"""Single 2D images (``ingest/dicom_us.py``), kept apart from the slice series above."""


SEGMENTATION_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"}  # SEG, label map SEG


LAST_HEADER_TAG = 0x00280030  # PixelSpacing: every tag read_header needs comes before it

SECONDARY_CAPTURE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture: dose reports, screen saves
    "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
}
ENHANCED_MULTIFRAME_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET
    "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET
}
LOCALIZER_MAX_SLICES = 3
"""A series of at most this many images whose planes are not parallel is a localizer (scout: AP + lateral, or
three planes). A longer series with one slice at another orientation is a broken volume and fails instead."""


def read_until(path: Path, last_tag: int) -> pydicom.Dataset:
    """The data elements of a DICOM file up to ``last_tag``.

    Parsing stops there, so nothing after it is read: not the pixels, and not the long sequences further on
    (an RTSTRUCT's contours, a PET's dose records), which take most of the time of a full header read.
    """
    with open(path, "rb") as fp:
        return read_partial(fp, stop_when=lambda tag, vr, length: tag > last_tag)


@dataclass(frozen=True, slots=True)  # slots: the inbox index keeps one per file in memory
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
    image_type: str = ""
    """ImageType as "ORIGINAL\\PRIMARY\\AXIAL" (upper case), to recognise localizers and derived images."""
    issuer: str = ""
    """IssuerOfPatientID (0010,0021): the hospital or system that assigned the PatientID; empty when absent."""
    frames: str = ""
    """NumberOfFrames of a multi-frame image ("" for a single frame)."""
    frame_problem: str = ""
    """Why a multi-frame image's frames cannot be placed in space (``multiframe.frame_geometry_problem``), or ""."""
    study_date: str = ""
    """StudyDate (YYYYMMDD): orders a patient's baseline and follow-up studies (``series.study_date``)."""
    # The scanner, for ``batch: from_dicom`` of study.yaml (issue 27); stored with the series, "" when absent.
    manufacturer: str = ""
    manufacturer_model_name: str = ""
    institution_name: str = ""
    convolution_kernel: str = ""
    magnetic_field_strength: str = ""
    slice_thickness: str = ""

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
    skipped: dict[Path, str] = field(default_factory=dict)
    """The patient's objects that cannot form a volume (secondary captures, localizers, enhanced multi-frame) and
    identical copies of files already used, with the reason; not used, and reported as notes."""
    conflicts: list[str] = field(default_factory=list)
    """Why the patient's files cannot be used as they are (one SOP instance UID with two contents, one key for
    two PatientIDs): the partition fails with these messages instead of merging the files silently."""

    def all_files(self) -> list[DicomFile]:
        images = [f for series in self.image_series.values() for f in series]
        return images + self.rtstructs + self.segmentations + self.ultrasound

    @property
    def paths(self) -> list[Path]:
        return sorted((f.path for f in self.all_files()), key=lambda path: path.parts)  # Path order, faster


@dataclass
class InboxScan:
    patients: dict[str, PatientFiles]
    ignored: dict[Path, str]  # path -> why it was not used


SCANNER_TAGS = {
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model_name",
    "InstitutionName": "institution_name",
    "ConvolutionKernel": "convolution_kernel",
    "MagneticFieldStrength": "magnetic_field_strength",
    "SliceThickness": "slice_thickness",
}
"""DICOM keyword -> the ``DicomFile`` field and ``series`` column holding it (all before ``LAST_HEADER_TAG``)."""


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = getattr(ds, keyword, "") or ""
    # ConvolutionKernel may be multi-valued (Siemens: "B30f" or ["Br40d", "3"]).
    return (
        "\\".join(str(v).strip() for v in value)
        if isinstance(value, list | pydicom.multival.MultiValue)
        else str(value).strip()
    )


def scanner_identity(header: DicomFile) -> dict:
    """The scanner columns of a series row, from its first file's header (None when the header lacks them)."""
    row: dict = {column: getattr(header, column) or None for column in SCANNER_TAGS.values()}
    for column in ("magnetic_field_strength", "slice_thickness"):
        try:
            row[column] = float(row[column]) if row[column] is not None else None
        except ValueError:
            row[column] = None
    return row


_HEADER_KEYWORDS = (
    "SpecificCharacterSet",
    "ImageType",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyDate",
    "Modality",
    "PatientID",
    "IssuerOfPatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "PixelSpacing",
    *SCANNER_TAGS,
)
"""Every tag :func:`read_header` uses, read by :func:`_plain_header` without pydicom."""
_TAGS = {keyword: tag_for_keyword(keyword) for keyword in _HEADER_KEYWORDS}
_VR_OF_TAG = {tag: dictionary_VR(tag).encode() for tag in _TAGS.values()}
_TAG_AND_VR = {keyword: (tag, _VR_OF_TAG[tag]) for keyword, tag in _TAGS.items()}
_WANTED_TAGS = frozenset(_TAGS.values())
_PLAIN_CHARACTER_SETS = ("", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192")
"""Character sets in which the ASCII bytes (all this reader decodes itself) mean what they mean in ASCII."""
_DS_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class _NotPlainValue(Exception):
    """A value whose decoding has a pydicom subtlety (charset, multiple values, odd number): pydicom reads it."""


def _pydicom_defaults() -> bool:
    """Whether pydicom decodes as :func:`_plain_header` assumes: its default settings (values as text, invalid
    values only warned about)."""
    return (
        pydicom.config.settings.reading_validation_mode != pydicom.config.RAISE
        and not pydicom.config.use_DS_numpy
        and not pydicom.config.use_DS_decimal
        and not pydicom.config.use_IS_numpy
        and not pydicom.config.datetime_conversion
        and not pydicom.config.use_none_as_empty_text_VR_value
    )


def _plain_header(path: Path) -> DicomFile | None:
    """The header of ``path`` read without pydicom, equal to :func:`read_header`'s, or None where only
    pydicom can tell (an unusual encoding, a value to decode with care, a multi-frame object, any error).

    Each value is decoded as pydicom 3 decodes it and then turned into text as ``read_header`` does (the
    comments name the pydicom converter); values outside the plain cases raise ``_NotPlainValue``.
    """
    if not _pydicom_defaults():
        return None
    read = read_elements(path, _WANTED_TAGS, LAST_HEADER_TAG)
    if read is None:
        return None
    explicit, elements = read
    try:
        return _header_from_elements(path, explicit, elements)
    except (_NotPlainValue, ValueError, UnicodeDecodeError):
        return None


def _header_from_elements(path: Path, explicit: bool, elements: dict[int, tuple]) -> DicomFile | None:
    def raw(keyword: str) -> bytes | None:
        tag, vr = _TAG_AND_VR[keyword]
        element = elements.get(tag)
        if element is None:
            return None
        if explicit and element[0] != vr:
            raise _NotPlainValue
        return element[1]

    def parts(keyword: str) -> list[str] | None:
        """The values as pydicom splits and pads them (None when absent or empty)."""
        value = raw(keyword)
        if not value:
            return None
        if not value.isascii() or b"\x1b" in value:  # not plain ASCII: the character set decides
            raise _NotPlainValue
        text = value.decode("ascii")
        vr = _TAG_AND_VR[keyword][1]
        if vr in (b"LO", b"SH"):  # convert_text
            return [part.rstrip("\0 ") for part in text.split("\\")]
        if vr == b"UI":  # convert_UI
            text = text.rstrip("\0 ")
        elif vr == b"DS":  # convert_DS_string
            text = text.strip()
        return text.rstrip(" \x00").split("\\")  # multi_string

    def single(keyword: str) -> str:
        """``str(getattr(ds, keyword, ""))``: a value of several parts would print as a list."""
        values = parts(keyword) or [""]
        if len(values) > 1:
            raise _NotPlainValue
        return values[0]

    def numbers(keyword: str) -> list[str] | None:
        """A DS value's parts (DSfloat keeps each stripped part as its text), None when absent or empty."""
        values = parts(keyword)
        if values is None or values == [""]:
            return None
        if not all(_DS_NUMBER.fullmatch(part.strip()) for part in values):
            raise _NotPlainValue
        return [part.strip() for part in values]

    def unsigned_short(keyword: str) -> int | None:
        value = raw(keyword)
        if value is None:
            return None
        if len(value) != 2:
            raise _NotPlainValue
        return int.from_bytes(value, "little")

    if single("SpecificCharacterSet").strip() not in _PLAIN_CHARACTER_SETS:
        raise _NotPlainValue
    if any(not single(keyword).strip() for keyword in ("PatientID", "SeriesInstanceUID", "Modality")):
        return None  # read_header's error message says what is missing
    frames = single("NumberOfFrames").strip()
    sop_class_uid = single("SOPClassUID")
    if frames not in ("", "1") or sop_class_uid in ENHANCED_MULTIFRAME_SOP_CLASSES:
        return None  # a multi-frame object: read_header reads its functional groups

    def joined(keyword: str) -> str:  # _joined: one number alone is not iterable and gives ""
        values = numbers(keyword)
        return "\\".join(repr(float(v)) for v in values) if values and len(values) > 1 else ""

    def scanner_text(keyword: str) -> str:  # _text
        if _TAG_AND_VR[keyword][1] == b"DS":
            values = numbers(keyword)
            if values is None or (len(values) == 1 and float(values[0]) == 0):  # DSfloat 0.0 is falsy
                return ""
            return "\\".join(values)
        return "\\".join(part.strip() for part in parts(keyword) or [""])

    rows, columns = unsigned_short("Rows"), unsigned_short("Columns")
    image_type = parts("ImageType")
    return DicomFile(
        path=path,
        patient_id=single("PatientID").strip(),
        study_uid=single("StudyInstanceUID"),
        series_uid=single("SeriesInstanceUID"),
        sop_uid=single("SOPInstanceUID"),
        modality=single("Modality").upper(),
        frame_of_reference_uid=single("FrameOfReferenceUID"),
        sop_class_uid=sop_class_uid,
        image_position=joined("ImagePositionPatient"),
        image_orientation=joined("ImageOrientationPatient"),
        rows_columns=f"{rows}\\{columns}" if rows is not None and columns is not None else "",
        pixel_spacing=joined("PixelSpacing"),
        image_type="\\".join(part.strip().upper() for part in image_type) if image_type else "",
        issuer=single("IssuerOfPatientID").strip(),
        study_date=single("StudyDate").strip(),
        **{column: scanner_text(keyword) for keyword, column in SCANNER_TAGS.items()},
    )


def read_header(path: Path) -> DicomFile:
    """The header fields of ``path``; raises ``DicomInputError`` naming the file when it is not usable DICOM.

    Plain files are read by :func:`_plain_header` (a few times faster); every other file, and every error, by
    pydicom."""
    plain = _plain_header(path)
    if plain is not None:
        return plain
    return read_header_with_pydicom(path)


def read_header_with_pydicom(path: Path) -> DicomFile:
    try:
        ds = read_until(path, LAST_HEADER_TAG)
    except InvalidDicomError as exc:
        raise DicomInputError(f"{path}: not a DICOM file ({exc})") from exc
    except Exception as exc:  # truncated or corrupt files raise many different errors inside pydicom
        raise DicomInputError(f"{path}: unreadable DICOM ({type(exc).__name__}: {exc})") from exc
    try:  # pydicom decodes values (character sets, numbers) only when they are read: that can fail too
        missing = [t for t in ("PatientID", "SeriesInstanceUID", "Modality") if not str(getattr(ds, t, "")).strip()]
        if missing:
            raise DicomInputError(f"{path}: incomplete DICOM header, lacks {', '.join(missing)} (truncated file?)")
        return DicomFile(
            path=path,
            patient_id=str(ds.PatientID).strip(),
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
            image_type=_image_type(ds),
            issuer=str(getattr(ds, "IssuerOfPatientID", "") or "").strip(),
            study_date=str(getattr(ds, "StudyDate", "") or "").strip(),
            **{column: _text(ds, tag) for tag, column in SCANNER_TAGS.items()},
            **_multiframe_fields(path, ds),
        )
    except DicomInputError:
        raise
    except Exception as exc:
        raise DicomInputError(f"{path}: unreadable DICOM header value ({type(exc).__name__}: {exc})") from exc


def _multiframe_fields(path: Path, ds: pydicom.Dataset) -> dict[str, str]:
    """``frames`` and ``frame_problem`` of a multi-frame image object; empty for anything else.

    The frame geometry of an enhanced object lies in its functional groups, after the tags read so far: such a
    file (rare) gets a second read up to its pixels, so that one that cannot form a volume is known (and listed)
    when the inbox is scanned, not when its patient runs."""
    frames = str(ds.get("NumberOfFrames", "") or "").strip()
    enhanced = str(getattr(ds, "SOPClassUID", "")) in ENHANCED_MULTIFRAME_SOP_CLASSES
    if not enhanced and frames in ("", "1"):
        return {}
    if str(ds.Modality).upper() not in IMAGE_MODALITIES - {"PT"}:
        return {"frames": frames}
    from radiomics_assets.ingest.multiframe import frame_geometry_problem

    try:
        full = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        return {"frames": frames, "frame_problem": f"unreadable header ({type(exc).__name__}: {exc})"}
    return {"frames": frames, "frame_problem": frame_geometry_problem(full) or ""}


def _image_type(ds: pydicom.Dataset) -> str:
    values = ds.get("ImageType")
    if values is None:
        return ""
    values = [values] if isinstance(values, str) else list(values)
    return "\\".join(str(v).strip().upper() for v in values)


def non_volumetric_reason(header: DicomFile) -> str | None:
    """Why an image object cannot be a slice of a 3D volume (it is skipped with this note), or None.

    Secondary captures (dose reports, screen saves) have no patient geometry; localizers (scouts) are
    projections; DERIVED\\SECONDARY images without position or orientation are screen saves; a multi-frame object
    whose frames have no position (``frame_problem``) cannot be a volume, nor can a multi-frame PET (its SUV
    conversion reads each slice's header).
    """
    image_type = header.image_type.split("\\") if header.image_type else []
    if header.sop_class_uid in SECONDARY_CAPTURE_SOP_CLASSES:
        return "secondary capture (a dose report or screen save), not an image volume"
    multiframe = header.sop_class_uid in ENHANCED_MULTIFRAME_SOP_CLASSES or header.frames not in ("", "1")
    if header.modality == "PT" and multiframe:
        return "multi-frame PET not supported (SUV needs each slice's header: export single-frame images)"
    if header.frame_problem:
        return f"multi-frame image whose frames cannot be placed: {header.frame_problem}"
    if "LOCALIZER" in image_type:
        return "localizer (scout) image, not a slice of a volume"
    if (
        image_type[:2] == ["DERIVED", "SECONDARY"]
        and not multiframe
        and not (header.image_position and header.image_orientation)
    ):
        return "derived secondary image without slice geometry (a screen save), not a slice of a volume"
    return None


def _is_localizer_series(files: list[DicomFile]) -> bool:
    """A few images whose planes are not parallel (AP and lateral scouts): see LOCALIZER_MAX_SLICES."""
    if not 1 < len(files) <= LOCALIZER_MAX_SLICES:
        return False
    normals = []
    for file in files:
        try:
            row_col = [float(v) for v in file.image_orientation.split("\\")]
        except ValueError:
            return False
        if len(row_col) != 6:
            return False
        normal = np.cross(row_col[:3], row_col[3:])
        normals.append(normal / (np.linalg.norm(normal) or 1.0))
    return any(abs(float(np.dot(normals[0], n))) < 0.999 for n in normals[1:])


@functools.lru_cache(maxsize=4096)
def _same_content(first: str, first_stamp: tuple, other: str, other_stamp: tuple) -> bool:
    """Whether two files hold the same DICOM object: the same bytes, or the same data set (the file meta header,
    written by each exporter, may differ). Cached by size and mtime: the sensor groups every tick."""
    if filecmp.cmp(first, other, shallow=False):
        return True
    try:
        return pydicom.dcmread(first) == pydicom.dcmread(other)
    except Exception:  # unreadable: not provably the same object
        return False


def _stamp(path: Path) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_size, st.st_mtime_ns)


def _deduplicate(files: list[DicomFile], patient: PatientFiles) -> list[DicomFile]:
    """The files with each SOP instance UID once: a second identical copy (the same study exported into two
    folders) is skipped with a note; a second file with the same UID and other content is a conflict."""
    kept: dict[str, DicomFile] = {}
    out = []
    for header in files:
        first = kept.get(header.sop_uid) if header.sop_uid else None
        if first is None:
            if header.sop_uid:
                kept[header.sop_uid] = header
            out.append(header)
        elif _same_content(str(first.path), _stamp(first.path), str(header.path), _stamp(header.path)):
            patient.skipped[header.path] = (
                f"{header.path}: identical copy of {first.path} (same SOP instance UID), not used twice"
            )
        else:
            patient.conflicts.append(
                f"{header.path}: same SOP instance UID {header.sop_uid} as {first.path} but different content; "
                "keep the right one of the two files in the inbox"
            )
            out.append(header)  # kept, so the patient's manifest lists both and its run fails naming them
    return out


def _joined(ds: pydicom.Dataset, keyword: str) -> str:
    """A multi-valued decimal attribute as text, each number exactly (``repr`` of the float)."""
    values = ds.get(keyword)
    try:
        return "\\".join(repr(float(v)) for v in values) if values else ""
    except (TypeError, ValueError):  # malformed: reported as missing geometry when the series is read
        return ""


def patient_identity(patient_id: str, issuer: str, issuers_of_id: set[str], split: bool = False) -> str:
    """What the patient key is made from: the PatientID, or ``<PatientID>_<issuer>`` when the inbox holds that
    PatientID from several issuers (IssuerOfPatientID).

    Two hospitals may assign the same PatientID to different people: with different issuers they are two
    patients, never merged. The issuer joins the key only then, so the keys of every other patient (and the
    PatientIDs in ``labels.csv``) stay the PatientID's own; files of that PatientID without an issuer keep the
    plain key (a patient of their own). ``split`` says so for a PatientID known to be split when only a part of
    the inbox is grouped (a patient's manifest)."""
    if issuer and (split or len(issuers_of_id - {""}) > 1):
        return f"{patient_id}_{issuer}"
    return patient_id


def group_headers(
    headers: list[DicomFile], unreadable: dict[Path, str], *, split_ids: frozenset[str] = frozenset()
) -> InboxScan:
    """Group read headers by patient and series; ``unreadable`` maps files whose header failed to the reason.

    Shared by the full inbox scan and the incremental inbox index, so both sort files the same way. Objects that
    cannot form a volume and identical copies are put in the patient's ``skipped`` (and ``ignored``) with the
    reason; two PatientIDs that give one key, or one SOP instance UID with two contents, are ``conflicts``.
    ``split_ids``: PatientIDs whose files carry the issuer in their key whatever else ``headers`` holds
    (:func:`patient_identity`).
    """
    patients: dict[str, PatientFiles] = {}
    ignored = dict(unreadable)
    ids_of_key: dict[str, dict[str, Path]] = {}
    by_key: dict[str, list[DicomFile]] = {}
    issuers: dict[str, set[str]] = {}
    for header in headers:
        issuers.setdefault(header.patient_id, set()).add(header.issuer)
    keys: dict[tuple[str, str], tuple[str, str]] = {}  # (PatientID, issuer) -> (identity, key): once per patient
    for header in sorted(headers, key=lambda h: h.path.parts):  # Path order, without Path's slow comparisons
        known = keys.get((header.patient_id, header.issuer))
        if known is None:
            identity = patient_identity(
                header.patient_id, header.issuer, issuers[header.patient_id], header.patient_id in split_ids
            )
            known = keys[(header.patient_id, header.issuer)] = (identity, patient_key(identity))
        identity, key = known
        ids_of_key.setdefault(key, {}).setdefault(identity, header.path)
        by_key.setdefault(key, []).append(header)
    for key, files in by_key.items():
        patient = patients[key] = PatientFiles(key=key)
        if len(ids_of_key[key]) > 1:
            named = ", ".join(str(path) for path in ids_of_key[key].values())
            patient.conflicts.append(
                f"patient key {key!r}: files of {len(ids_of_key[key])} different PatientIDs give this key "
                f"(for example {named}); they are not merged"
            )
        for header in _deduplicate(files, patient):
            path = header.path
            if header.modality == "RTSTRUCT":
                patient.rtstructs.append(header)
            elif header.is_segmentation:
                patient.segmentations.append(header)
            elif header.modality == ULTRASOUND:
                patient.ultrasound.append(header)
            elif why := non_volumetric_reason(header):
                patient.skipped[path] = f"{path}: {why}, skipped"
            elif header.modality in IMAGE_MODALITIES:
                patient.image_series.setdefault(header.series_uid, []).append(header)
            else:
                patient.skipped[path] = f"{path}: modality {header.modality} is not an image series, RTSTRUCT or SEG"
        for series_uid, series in list(patient.image_series.items()):
            if _is_localizer_series(series):
                del patient.image_series[series_uid]
                for file in series:
                    patient.skipped[file.path] = (
                        f"{file.path}: localizer series {series_uid} (its {len(series)} images are not parallel), "
                        "skipped"
                    )
        ignored.update(patient.skipped)
    # Folders as text (``os.path.dirname``): building a Path per file is most of the time at archive scale.
    folders = {os.path.dirname(f.path): p for p in patients.values() for f in p.all_files()} if ignored else {}
    for path, why in sorted(ignored.items()):
        folder = os.path.dirname(path)
        if folder in folders and path not in folders[folder].skipped:
            folders[folder].unreadable[path] = why
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
    """Header-only pass over every file under ``inbox`` (any nesting); names that are not UTF-8 are ignored."""
    unusable: dict[str, str] = {}
    scan = group_headers(*read_headers(inbox_files(inbox, unusable)))
    scan.ignored.update({inbox / name: why for name, why in unusable.items()})
    return scan
