"""Results back into DICOM: automated masks as DICOM-SEG, radiomic features as DICOM SR (TID 1500).

``codes`` holds the feature -> concept code and UCUM unit table, ``seg`` writes a BINARY Segmentation per
automated mask on its source slices, ``sr`` a Comprehensive 3D SR measurement report per series, ``patient``
writes a patient's exports from the stored rows and its source DICOM files, ``deidentify`` makes de-identified
copies for sharing and ``send`` sends files to a DICOM node (C-STORE). No Dagster here.
"""

from radiomics_assets.exports.codes import FEATURE_CODES, FeatureCode, code_table_markdown, feature_code
from radiomics_assets.exports.patient import ExportOutcome, ExportSettings, export_patient, exports_dir, stored_exports
from radiomics_assets.exports.seg import Producer
from radiomics_assets.exports.send import SendResult, send_files

__all__ = [
    "FEATURE_CODES",
    "ExportOutcome",
    "ExportSettings",
    "FeatureCode",
    "Producer",
    "SendResult",
    "code_table_markdown",
    "export_patient",
    "exports_dir",
    "feature_code",
    "send_files",
    "stored_exports",
]
