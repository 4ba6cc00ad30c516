"""Ingest: from the inbox to validated image volumes (the ``studies`` step).

``inbox`` walks the drop zone, ``dicom_headers`` reads and groups DICOM headers by patient and series,
``dicom_series`` validates a series' slice geometry and reads it, ``dicom_us`` reads DICOM US images as 2D images,
``file_pairs`` finds NIfTI/NRRD/PNG images with their mask files, ``inbox_index`` caches headers between sensor
ticks, ``manifests`` records each patient's files, ``patient_lookup`` finds them for a run (``PatientInputs``),
``pet_suv`` converts PET to SUVbw, ``registration`` decides when a patient is registered or re-run, and ``studies``
stores the volumes. ``feature_tables`` imports feature tables
made elsewhere (CSV, Parquet) as feature sources beside the extracted features.
"""

from radiomics_assets.ingest.dicom_headers import (
    DicomFile,
    InboxScan,
    PatientFiles,
    non_volumetric_reason,
    read_header,
    scan_inbox,
)
from radiomics_assets.ingest.dicom_series import (
    SeriesVolume,
    describe_series,
    read_series,
    read_series_volume,
    sorted_slice_files,
)
from radiomics_assets.ingest.dicom_us import read_us_image
from radiomics_assets.ingest.feature_tables import (
    ImportOptions,
    ImportResult,
    feature_table_files,
    folder_fingerprint,
    import_feature_table,
    import_folder,
    imported_feature_rows,
    imported_sources,
    newest_change,
    read_feature_table,
    read_import_options,
    write_import_options,
)
from radiomics_assets.ingest.file_pairs import FilePair, labels_from_folders, scan_file_pairs
from radiomics_assets.ingest.inbox import inbox_entries, inbox_files, printable_name
from radiomics_assets.ingest.inbox_index import InboxIndex, InboxSnapshot, PatientEntry
from radiomics_assets.ingest.manifests import Manifest, read_manifest, write_manifest, write_manifests
from radiomics_assets.ingest.patient_lookup import PatientInputs, find_patient, patient_inputs
from radiomics_assets.ingest.pet_suv import SuvConversion, suv_conversion, suv_factor
from radiomics_assets.ingest.registration import RegistrationPlan, plan_registrations
from radiomics_assets.ingest.studies import ingest_studies

__all__ = [
    "DicomFile",
    "FilePair",
    "ImportOptions",
    "ImportResult",
    "InboxIndex",
    "InboxScan",
    "InboxSnapshot",
    "Manifest",
    "PatientEntry",
    "PatientFiles",
    "PatientInputs",
    "RegistrationPlan",
    "SeriesVolume",
    "SuvConversion",
    "describe_series",
    "feature_table_files",
    "find_patient",
    "folder_fingerprint",
    "import_feature_table",
    "import_folder",
    "imported_feature_rows",
    "imported_sources",
    "inbox_entries",
    "inbox_files",
    "ingest_studies",
    "labels_from_folders",
    "newest_change",
    "non_volumetric_reason",
    "patient_inputs",
    "plan_registrations",
    "printable_name",
    "read_feature_table",
    "read_header",
    "read_import_options",
    "read_manifest",
    "read_series",
    "read_series_volume",
    "read_us_image",
    "scan_file_pairs",
    "scan_inbox",
    "sorted_slice_files",
    "suv_conversion",
    "suv_factor",
    "write_import_options",
    "write_manifest",
    "write_manifests",
]
