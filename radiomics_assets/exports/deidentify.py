"""De-identified copies of the exports, for sharing outside the hospital.

Following the DICOM PS3.15 Basic Application Level Confidentiality Profile for the attributes these exports
carry: person names are emptied (the patient's name and ID become a pseudonym such as ``ANON-0001``), birth
date, sex, age, accession number, study ID, descriptions and institution are removed or emptied, dates and times
are replaced by a dummy, and every instance UID (study, series, SOP instance, frame of reference, tracking and
referenced UIDs) is replaced by a new UID. The replacements are kept in ``exports/.deidentification.json``
(beside the identified exports, never in the shared folder), so a UID or patient maps to the same new value in
every copy and run. Copies go to ``<data root>/exports_deidentified/<pseudonym>/``.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pydicom
from pydicom.uid import UID_dictionary, generate_uid

from radiomics_assets.paths import DataRoot

DUMMY_DATE, DUMMY_TIME, DUMMY_DATETIME = "20000101", "000000", "20000101000000"
EMPTIED = {"PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ReferringPhysicianName"}
REMOVED = {
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "PatientComments",
    "StudyDescription",
    "SeriesDescription",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "OperatorsName",
    "PerformingPhysicianName",
    "RequestAttributesSequence",
    "ReferencedPatientSequence",
}
KEPT_UIDS = {"ImplementationClassUID"}
"""UIDs that name software, not a patient's data (class and transfer syntax UIDs are kept as registered UIDs)."""


class _Mapping:
    """Original -> replacement UIDs and patient pseudonyms, stored under a file lock (concurrent partitions)."""

    def __init__(self, path: Path):
        self.path = path
        self.values: dict = {"uids": {}, "patients": {}}

    def __enter__(self) -> _Mapping:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path.with_name(self.path.name + ".lock"), "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        if self.path.exists():
            self.values = json.loads(self.path.read_text())
        return self

    def __exit__(self, *exc) -> None:
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(self.values, indent=1))
        partial.replace(self.path)
        self._lock.close()

    def uid(self, original: str) -> str:
        return self.values["uids"].setdefault(original, generate_uid())

    def pseudonym(self, key: str) -> str:
        patients = self.values["patients"]
        return patients.setdefault(key, f"ANON-{len(patients) + 1:04d}")


def _is_instance_uid(element: pydicom.DataElement) -> bool:
    value = str(element.value or "")
    return bool(value) and element.keyword not in KEPT_UIDS and value not in UID_dictionary


def _clean(dataset: pydicom.Dataset, mapping: _Mapping, pseudonym: str) -> None:
    for keyword in REMOVED:
        if keyword in dataset:
            delattr(dataset, keyword)
    for element in list(dataset):
        if element.VR == "SQ":
            for item in element.value:
                _clean(item, mapping, pseudonym)
        elif element.keyword == "PatientID":
            element.value = pseudonym
        elif element.keyword == "PatientName":
            element.value = pseudonym.replace("-", "^")  # ANON^0001: family^given, the PN form viewers show
        elif element.keyword in EMPTIED or element.VR == "PN":
            element.value = ""
        elif element.VR == "UI" and element.VM == 1 and _is_instance_uid(element):
            element.value = mapping.uid(str(element.value))
        elif element.VR == "UI" and element.VM > 1:
            element.value = [mapping.uid(str(v)) if str(v) not in UID_dictionary else v for v in element.value]
        elif element.VR in ("DA", "TM", "DT") and element.value:
            element.value = {"DA": DUMMY_DATE, "TM": DUMMY_TIME, "DT": DUMMY_DATETIME}[element.VR]


def deidentified_copy(dataset: pydicom.Dataset, mapping: _Mapping, pseudonym: str) -> pydicom.Dataset:
    """A de-identified deep copy of ``dataset`` (file meta included); ``dataset`` is left as it was."""
    import copy

    clean = copy.deepcopy(dataset)
    _clean(clean, mapping, pseudonym)
    if hasattr(clean, "file_meta"):
        _clean(clean.file_meta, mapping, pseudonym)
    clean.PatientIdentityRemoved = "YES"
    clean.LongitudinalTemporalInformationModified = "MODIFIED"
    clean.DeidentificationMethod = "DICOM PS3.15 Basic Profile (radiomics_assets)"
    method = pydicom.Dataset()
    method.CodeValue, method.CodingSchemeDesignator = "113100", "DCM"
    method.CodeMeaning = "Basic Application Confidentiality Profile"
    clean.DeidentificationMethodCodeSequence = [method]
    return clean


def deidentified_dir(root: DataRoot) -> Path:
    return root.path / "exports_deidentified"


def mapping_path(root: DataRoot) -> Path:
    return root.path / "exports" / ".deidentification.json"


def write_deidentified(root: DataRoot, key: str, files: list[Path]) -> list[Path]:
    """De-identified copies of ``files`` (a patient's exports) under ``exports_deidentified/<pseudonym>/``."""
    written = []
    with _Mapping(mapping_path(root)) as mapping:
        pseudonym = mapping.pseudonym(key)
        out_dir = deidentified_dir(root) / pseudonym
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("*.dcm"):
            old.unlink()
        for path in files:
            clean = deidentified_copy(pydicom.dcmread(path), mapping, pseudonym)
            target = out_dir / path.name
            clean.save_as(target, enforce_file_format=True)
            written.append(target)
    return written
