"""Errors that say what they are: input the pipeline refuses, named by the file and the problem.

Every error here is an :class:`InputError`: the patient's partition fails with its message and nothing else
stops. Anything else that escapes a stage is a bug or an input we do not know yet, and is reported with its type
and place (see ``batch.driver``).
"""

from __future__ import annotations


class InputError(ValueError):
    """Input that cannot become a correct volume, mask or feature; the message names the file and the problem."""


class DicomInputError(InputError):
    """A DICOM file or series that cannot become a correct volume or mask (geometry, pairing, pixels)."""


class FileInputError(InputError):
    """A NIfTI/NRRD/PNG image or mask file, or its JSON sidecar, that cannot be used as it is."""


class SeedFileError(InputError):
    """A ``seeds.csv`` that lacks columns or holds a row that is not a point."""


class ManifestError(InputError):
    """A patient manifest (``manifests/<key>.json``) that cannot be read; deleting it makes the inbox rescan."""


class ParameterFileError(InputError):
    """A PyRadiomics parameter file that is missing or that PyRadiomics' own schema check rejects."""


class ExtractionError(InputError):
    """PyRadiomics failed on one (series, ROI); the message names the stored volume and mask."""


class PredictionError(InputError):
    """A single image cannot be scored: no model is trained, or it was trained on another modality or feature set."""


class WarehouseBusyError(RuntimeError):
    """The pipeline's working feature store stayed locked by another process for longer than the lock timeout.

    Not an input problem: the patient's input is fine and a re-run succeeds once the holder (named in the message,
    with its process id) is gone. Only the partitions whose write timed out fail.
    """
