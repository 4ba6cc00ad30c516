"""Stored volumes and masks (NRRD under the data root), and the copies a worker keeps in memory once it has
written or read them, so a patient's later stages in the same process do not read them back.

A copy in memory must be exactly what reading the file gives, or features computed from it would not be those of
the stored volume. NRRD keeps the voxels, the spacing and the origin exactly, but it stores the direction multiplied
by the spacing (``space directions``), so an oblique series can come back with a direction one rounding step away.
:func:`write_stored_image` therefore returns the image with the geometry the file's header gives back.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

Volumes = dict[str, sitk.Image]
"""Stored volumes and masks already in memory, by path, each exactly as reading its file gives it."""


def write_stored_image(image: sitk.Image, path: Path) -> sitk.Image:
    """Write ``image`` to ``path`` (compressed) and return it as reading ``path`` back would give it."""
    sitk.WriteImage(image, str(path), useCompression=True)
    header = sitk.ImageFileReader()
    header.SetFileName(str(path))
    header.ReadImageInformation()  # the header only: the voxels are written losslessly
    if (header.GetPixelID(), header.GetSize()) != (image.GetPixelID(), image.GetSize()):
        return sitk.ReadImage(str(path))  # not expected; the file is the truth
    geometry = (header.GetSpacing(), header.GetOrigin(), header.GetDirection())
    if geometry == (image.GetSpacing(), image.GetOrigin(), image.GetDirection()):
        return image
    as_stored = sitk.Image(image)
    as_stored.SetSpacing(geometry[0])
    as_stored.SetOrigin(geometry[1])
    as_stored.SetDirection(geometry[2])
    return as_stored


def stored_image(path: str, volumes: Volumes) -> sitk.Image:
    """The stored image at ``path``: the copy in ``volumes`` if this process has it, else read (and kept there)."""
    if path not in volumes:
        volumes[path] = sitk.ReadImage(path)
    return volumes[path]
