"""Content hashes recorded as provenance: of files, and of image volumes (voxels and geometry)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def image_hash(image: sitk.Image) -> str:
    """Content hash of voxels and geometry, so the same volume hashes alike wherever it is stored."""
    # The array view is the voxel buffer (C order): hashed in place, not copied first.
    digest = hashlib.sha256(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)))
    digest.update(repr((image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())).encode())
    return digest.hexdigest()[:16]
