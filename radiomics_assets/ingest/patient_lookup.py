"""Which files are a patient's (:class:`PatientInputs`): its manifest (written when it is registered or re-run),
else a scan of the inbox.

A patient's partition reads only the files in its manifest (``manifests``), so its cost does not grow with the
inbox. The inputs are looked up once per patient run and carry the volumes the studies step stored, for the masks
step."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from radiomics_assets.errors import DicomInputError
from radiomics_assets.ingest.dicom_headers import PatientFiles, scan_inbox
from radiomics_assets.ingest.file_pairs import FilePair, pair_beside_dicom, scan_file_pairs
from radiomics_assets.ingest.manifests import manifest_files
from radiomics_assets.paths import DataRoot
from radiomics_assets.stored_images import Volumes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatientInputs:
    """A patient's input files: its DICOM files (None when it came only as an image/mask file pair) and its pair."""

    key: str
    dicom: PatientFiles | None
    pair: FilePair | None
    where: str
    """Where they were looked for, for error messages."""
    volumes: Volumes = field(default_factory=dict, compare=False)
    """Volumes and masks this process stored or read for the patient, by path: later stages use them instead of
    reading them back."""

    def require_dicom(self) -> PatientFiles:
        if self.dicom is None:
            raise DicomInputError(f"no DICOM files for patient key {self.key!r} under {self.where}")
        if self.dicom.conflicts:
            raise DicomInputError("; ".join(self.dicom.conflicts))
        return self.dicom


def _registered(key: str) -> bool:
    """Without a manifest, a mask-less image asked for by its key is that patient's: it was registered as one."""
    return True


def patient_inputs(root: DataRoot, key: str) -> PatientInputs:
    """The patient's files: only those in its manifest when there is one (read once), else from a scan of the inbox."""
    listed = manifest_files(root, key)
    if listed is None:
        pair = scan_file_pairs(root.inbox, accept_maskless=_registered)[0].get(key)
        scan, where = scan_inbox(root.inbox), str(root.inbox)
    else:
        scan, pair, where = listed
    dicom = scan.patients.get(key) if scan is not None else None
    if dicom is not None and pair is not None:
        for path in pair.paths:
            log.warning("%s", pair_beside_dicom(path, key))
        pair = None
    if dicom is None and pair is None:
        raise DicomInputError(f"no DICOM files or image/mask file pair for patient key {key!r} under {where}")
    return PatientInputs(key, dicom, pair, where)


def find_patient(root: DataRoot, key: str) -> PatientFiles:
    """The patient's DICOM files (see :func:`patient_inputs`)."""
    return patient_inputs(root, key).require_dicom()
