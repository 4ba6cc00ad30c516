"""Which image series an RTSTRUCT or DICOM-SEG belongs to: by referenced series UID, frame of reference, then
geometry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError

SLICE_TOLERANCE = 0.1
"""A contour plane or SEG frame further than this share of the slice spacing from every slice is not on a series."""


EXTENT_TOLERANCE_VOXELS = 0.5
"""Contour points and frame corners may lie up to half a voxel beyond the outermost voxel centres."""


def _geometry_misfit(target: pd.Series, planes_mm: Sequence[np.ndarray]) -> str | None:
    """Why the points of ``planes_mm`` (one (N, 3) array per contour or frame) are not on series ``target``.

    None when every plane lies on a slice of the series and every point inside its volume. Size, spacing and
    origin come from the ``series`` row; the direction from the stored volume's header (no voxels are read).
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(target.volume_path))
    reader.ReadImageInformation()
    direction = np.array(reader.GetDirection()).reshape(3, 3)
    size = np.array([target.size_x, target.size_y, target.size_z], dtype=float)
    spacing = np.array([target.spacing_x, target.spacing_y, target.spacing_z], dtype=float)
    origin = np.array([target.origin_x, target.origin_y, target.origin_z], dtype=float)
    for points in planes_mm:
        points = np.asarray(points, dtype=float).reshape(-1, 3)
        index = np.linalg.solve(direction, (points - origin).T).T / spacing  # continuous voxel index per point
        off_slice = float(np.abs(index[:, 2] - np.rint(index[:, 2])).max())
        if off_slice > SLICE_TOLERANCE:
            along_normal = float(np.mean(points @ direction[:, 2]))
            return (
                f"the plane at {along_normal:.2f} mm along its slice normal is {off_slice:.2f} slice spacings "
                f"({off_slice * spacing[2]:.2f} mm) from the nearest slice"
            )
        outside = np.any((index < -EXTENT_TOLERANCE_VOXELS) | (index > size - 1 + EXTENT_TOLERANCE_VOXELS), axis=1)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            return (
                f"point {points[first].round(2).tolist()} mm lies outside its volume (voxel index "
                f"{index[first].round(2).tolist()}, size {size.astype(int).tolist()})"
            )
    return None


def image_series_for(
    series: pd.DataFrame,
    referenced: frozenset[str],
    frame_uid: str,
    source: Path,
    what: str = "RTSTRUCT",
    planes_mm: Sequence[np.ndarray] = (),
) -> pd.Series:
    """The series an RTSTRUCT or SEG belongs to: by referenced series UID, else by frame of reference, else by geometry.

    Geometry decides when the UIDs give no or several series (real data: CT, MR and PET sharing one frame of
    reference, a referenced series that never arrived): of the series with the frame of reference (all of the
    patient's when the file names none), the one on whose slices every contour or frame (``planes_mm``, one (N, 3)
    array of points per plane) lies, inside its volume. A frame of reference that no series has is not matched
    by geometry: patient coordinates of different frames are not comparable, so a fit would be a coincidence.
    """
    by_uid = series[series.series_uid.isin(referenced)]
    if len(by_uid) == 1:
        return by_uid.iloc[0]
    by_frame = series[series.frame_of_reference_uid == frame_uid]
    if len(by_frame) == 1:
        return by_frame.iloc[0]
    unpaired = (
        f"{source}: cannot pair the {what} with an image series of this patient "
        f"(referenced series {sorted(referenced) or 'none'}, frame of reference {frame_uid or 'none'})"
    )
    if frame_uid and by_frame.empty:
        raise DicomInputError(f"{unpaired}: no image series of this patient has that frame of reference")
    candidates = (by_frame if frame_uid else series).sort_values("series_uid")
    misfit = {row.series_uid: _geometry_misfit(row, planes_mm) for _, row in candidates.iterrows()}
    fits = [uid for uid, why in misfit.items() if why is None]
    if len(fits) == 1:
        return candidates[candidates.series_uid == fits[0]].iloc[0]
    modality = dict(zip(candidates.series_uid, candidates.modality, strict=True))
    if fits:
        named = ", ".join(f"{uid} ({modality[uid]})" for uid in fits)
        raise DicomInputError(f"{unpaired}: several series fit its contours/frames, cannot choose: {named}")
    why = "; ".join(f"{uid} ({modality[uid]}): {reason}" for uid, reason in misfit.items())
    raise DicomInputError(f"{unpaired}: no series fits its contours/frames: {why or 'no image series'}")
