"""Stored volumes and masks (NRRD under the data root), and the copies a worker keeps in memory once it has
written or read them, so a patient's later stages in the same process do not read them back.

NRRD keeps the voxels exactly, but not always the geometry: it stores the direction multiplied by the spacing
(``space directions``), and reading divides by the vector's length again, so the spacing or the direction can come
back one rounding step away (0.7031249 mm gives a direction of 0.9999999999999999). Writing what was read back can
move it once more. So the copies in memory keep the geometry the image was written with, and masks are built and
written on it, as on the volume itself: volume and mask files then give back the same grid. Features are computed
on :func:`as_read_back` (the file's own geometry), so they are those of the stored files.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

Volumes = dict[str, sitk.Image]
"""Stored volumes and masks already in memory, by path, with the geometry they were written with."""


def write_stored_image(image: sitk.Image, path: Path) -> None:
    sitk.WriteImage(image, str(path), useCompression=True)


def stored_image(path: str, volumes: Volumes) -> sitk.Image:
    """The stored image at ``path``: the copy in ``volumes`` if this process has it, else read (and kept there)."""
    if path not in volumes:
        volumes[path] = sitk.ReadImage(path)
    return volumes[path]


def as_read_back(path: str, volumes: Volumes) -> sitk.Image:
    """The stored image at ``path`` exactly as reading its file gives it: the copy in ``volumes`` with the geometry of
    the file's header (only the header is read), else the file."""
    if path not in volumes:
        return sitk.ReadImage(path)
    image = volumes[path]
    header = sitk.ImageFileReader()
    header.SetFileName(path)
    header.ReadImageInformation()
    if (header.GetPixelID(), header.GetSize()) != (image.GetPixelID(), image.GetSize()):
        return sitk.ReadImage(path)  # not the image this process wrote: the file is the truth
    geometry = (header.GetSpacing(), header.GetOrigin(), header.GetDirection())
    if geometry == (image.GetSpacing(), image.GetOrigin(), image.GetDirection()):
        return image
    copy = sitk.Image(image)
    copy.SetSpacing(geometry[0])
    copy.SetOrigin(geometry[1])
    copy.SetDirection(geometry[2])
    return copy
