"""Content hashes recorded as provenance: of files, and of image volumes (voxels and geometry)."""

from __future__ import annotations

import hashlib
import weakref
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


_kept_voxel_digests: dict[int, hashlib._Hash] = {}
"""SHA-256 of the voxels of images that are kept as stored (by ``id``; each entry goes when its image does)."""


def image_hash(image: sitk.Image, *, keep_voxel_digest: bool = False) -> str:
    """Content hash of voxels and geometry, so the same volume hashes alike wherever it is stored.

    ``keep_voxel_digest`` is for an image just stored and kept in memory as the stored copy (``stored_images``): its
    later hashes (at extraction, with the geometry its file gives back) reuse the digest of its voxels, a full CT's
    0.08 s, instead of reading them again. Such an image must never be changed in place (no code here does: filters
    return new images); its kept digest would then describe voxels it no longer has.
    """
    voxels = _kept_voxel_digests.get(id(image))
    if voxels is None:
        # The array view is the voxel buffer (C order): hashed in place, not copied first.
        voxels = hashlib.sha256(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)))
        if keep_voxel_digest:
            key = id(image)
            _kept_voxel_digests[key] = voxels
            weakref.finalize(image, _kept_voxel_digests.pop, key, None)
    digest = voxels.copy()
    digest.update(repr((image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())).encode())
    return digest.hexdigest()[:16]
