"""DICOM ultrasound images (Modality ``US``) as 2D patients: grey levels and physical pixel spacing.

A B-mode image exported by an ultrasound machine is one frame (MONOCHROME2, RGB or YBR_FULL_422). It becomes a
one-slice float32 volume as a PNG does (``file_pairs.grey_from_channels``): equal channels are the grey
exactly, channels within noise give the rounded luma (0.299 R + 0.587 G + 0.114 B), a true-colour image fails
unless ``RADIOMICS_COLOUR_IMAGES=luminance``; YBR is first converted to RGB with pydicom's
``convert_color_space``. Unlike a PNG it has a physical pixel
spacing, from the ``SequenceOfUltrasoundRegions``: PhysicalDeltaX/Y in cm (PhysicalUnitsX/YDirection = 3), stored
in mm. Anything that would make the spacing a guess fails naming the file: no region sequence, units other than
cm, regions with different spacings.

A multi-frame cine loop is refused unless a frame is chosen in ``<data root>/us_frames.csv``
(``file,frame``: the file's path relative to the inbox and a 0-based frame number), or with ``--frame`` for
``radiomics-assets predict``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError

__all__ = ["FRAMES_FILE", "read_frame_choices", "read_us_image"]

FRAMES_FILE = "us_frames.csv"
CENTIMETRE = 3
"""PhysicalUnitsX/YDirection code for cm (DICOM PS3.3 C.8.5.5.1.15)."""
PHOTOMETRICS = ("MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422")


def read_frame_choices(path: Path) -> dict[str, int]:
    """Inbox-relative file path -> chosen frame (0-based) from ``us_frames.csv``; an absent file gives none."""
    if not path.exists():
        return {}
    choices = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if {"file", "frame"} - set(reader.fieldnames or []):
            raise DicomInputError(f"{path}: expected the columns file,frame")
        for line, row in enumerate(reader, start=2):
            try:
                choices[Path(row["file"]).as_posix()] = int(row["frame"])
            except (TypeError, ValueError) as exc:
                raise DicomInputError(f"{path}:{line}: bad frame choice ({exc})") from exc
    return choices


def _spacing_mm(ds: pydicom.Dataset, path: Path) -> tuple[float, float]:
    regions = ds.get("SequenceOfUltrasoundRegions")
    if not regions:
        raise DicomInputError(
            f"{path}: no SequenceOfUltrasoundRegions, so the pixel spacing is unknown (export with calibration)"
        )
    spacings = set()
    for number, region in enumerate(regions, start=1):
        units = (region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection"))
        if units != (CENTIMETRE, CENTIMETRE):
            raise DicomInputError(
                f"{path}: ultrasound region {number} has PhysicalUnitsX/YDirection {units}, not 3 (cm): "
                "not a calibrated B-mode region, the pixel spacing is unknown"
            )
        delta = (region.get("PhysicalDeltaX"), region.get("PhysicalDeltaY"))
        if any(d is None or not float(d) > 0 for d in delta):
            raise DicomInputError(f"{path}: ultrasound region {number} has PhysicalDeltaX/Y {delta}, not positive")
        spacings.add((abs(float(delta[0])) * 10.0, abs(float(delta[1])) * 10.0))  # cm -> mm
    if len(spacings) != 1:
        raise DicomInputError(f"{path}: ultrasound regions with different pixel spacings {sorted(spacings)} (mm)")
    return spacings.pop()


def read_us_image(path: Path, *, frame: int | None = None) -> sitk.Image:
    """One frame of a DICOM US file as a one-slice float32 volume (grey levels, spacing in mm, origin 0).

    ``frame`` (0-based) is required for a multi-frame file and must be None or 0 for a single frame.
    """
    from pydicom.pixels import convert_color_space, pixel_array

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many kinds on corrupt files
        raise DicomInputError(f"{path}: unreadable DICOM ({type(exc).__name__}: {exc})") from exc
    if str(ds.get("Modality", "")).upper() != "US":
        raise DicomInputError(f"{path}: modality {ds.get('Modality')!r} is not US")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in PHOTOMETRICS:
        raise DicomInputError(f"{path}: PhotometricInterpretation {photometric!r} is not one of {list(PHOTOMETRICS)}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 and frame is None:
        raise DicomInputError(
            f"{path}: a cine loop of {frames} frames; choose one in <data root>/{FRAMES_FILE} "
            "(file,frame: the path relative to the inbox, 0-based frame) or with predict --frame"
        )
    if frame is not None and not 0 <= frame < frames:
        raise DicomInputError(f"{path}: frame {frame} chosen, but the file has {frames} frame(s) (0-based)")
    spacing = _spacing_mm(ds, path)
    try:
        # as_rgb=False: the stored colour space, converted below explicitly (YBR_FULL_422 arrives upsampled)
        pixels = pixel_array(ds, index=frame if frames > 1 else None, as_rgb=False)
    except Exception as exc:
        raise DicomInputError(f"{path}: unreadable pixel data ({type(exc).__name__}: {exc})") from exc
    if photometric.startswith("YBR"):
        pixels = convert_color_space(pixels, "YBR_FULL", "RGB")
    if photometric != "MONOCHROME2" and pixels.ndim == 3:
        # The same rule as a PNG: equal channels give the grey exactly, else the rounded luma or a colour refusal.
        from radiomics_assets.ingest.file_pairs import colour_setting, grey_from_channels

        pixels, _ = grey_from_channels(path, pixels.astype(np.int64), colour_setting())
    grey = pixels.astype(np.float32)
    if grey.ndim != 2:
        raise DicomInputError(f"{path}: expected one 2D frame, got pixel array shape {grey.shape}")
    image = sitk.GetImageFromArray(grey[None])
    image.SetSpacing((*spacing, 1.0))
    return image
