"""Stored volumes and masks (NRRD under the data root), and the copies a worker keeps in memory once it has
written or read them, so a patient's later stages in the same process do not read them back.

NRRD keeps the voxels exactly, but not always the geometry: it stores the direction multiplied by the spacing
(``space directions``), and reading divides by the vector's length again, so the spacing or the direction can come
back one rounding step away (0.7031249 mm gives a direction of 0.9999999999999999). Writing what was read back can
move it once more. So the copies in memory keep the geometry the image was written with, and masks are built and
written on it, as on the volume itself: volume and mask files then give back the same grid. Features are computed
on :func:`as_read_back` (the file's own geometry), so they are those of the stored files.

The files are the NRRD that ITK writes, header byte for byte (less one note of ITK's, :data:`DROPPED_METADATA`),
with the voxels gzip-compressed by ISA-L (``isal``) instead of ITK's zlib-ng: the same size as ITK's default level in
under a third of the time (1.08 s -> 0.34 s for the float32 volume of a 512 x 512 x 96 CT, which was the largest
single cost of a full-size patient after extraction). Any gzip reader reads them; images the header below does not
cover (vector pixels, other dimensions, metadata of our own, non-finite geometry) are written by ITK.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from isal import igzip

Volumes = dict[str, sitk.Image]
"""Stored volumes and masks already in memory, by path, with the geometry they were written with."""


NRRD_TYPES = {
    sitk.sitkUInt8: "unsigned char",
    sitk.sitkInt8: "signed char",
    sitk.sitkUInt16: "unsigned short",
    sitk.sitkInt16: "short",
    sitk.sitkUInt32: "unsigned int",
    sitk.sitkInt32: "int",
    sitk.sitkUInt64: "unsigned long long int",
    sitk.sitkInt64: "long long int",
    sitk.sitkFloat32: "float",
    sitk.sitkFloat64: "double",
}
DROPPED_METADATA = {"ITK_non_uniform_sampling_deviation"}
"""ITK's series reader notes how far the slice positions are from evenly spaced (a double, often 1e-14 mm, which
SimpleITK cannot read out). Ingest has already refused any series with a step more than 1 % (at least 1 µm) away from
its median step, the volume is stored on even steps either way, and nothing reads the note: the stored file leaves it
out, where ITK's own writer would keep it."""
GZIP_LEVEL = 2  # ISA-L's level 2 gives the size of ITK's default (zlib level 2); its level 3 is slower for 1 % less


def write_stored_image(image: sitk.Image, path: Path) -> None:
    header = itk_nrrd_header(image)
    if header is None:
        sitk.WriteImage(image, str(path), useCompression=True)
        return
    # Compressed before the file is opened (a failure leaves no header-only file); mtime 0 as ITK's stream has, so
    # the same image gives the same bytes.
    voxels = igzip.compress(sitk.GetArrayViewFromImage(image), GZIP_LEVEL, mtime=0)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(voxels)


def itk_nrrd_header(image: sitk.Image) -> bytes | None:
    """The header ITK's NRRD writer gives a scalar 2D or 3D image with finite geometry and no metadata (None for any
    other image; :data:`DROPPED_METADATA` does not count).

    Doubles are written as ITK writes them (17 significant digits, so they read back exactly), and each axis' space
    direction as ITK computes it, direction column times spacing: reading the file gives the geometry reading ITK's
    own file gives, bit for bit (``test_batch.py`` compares headers and read-back images on random geometries).
    """
    type_name = NRRD_TYPES.get(image.GetPixelID())
    dimension = image.GetDimension()
    metadata = set(image.GetMetaDataKeys()) - DROPPED_METADATA
    if type_name is None or dimension not in (2, 3) or metadata or sys.byteorder != "little":
        return None
    if not np.all(np.isfinite((*image.GetSpacing(), *image.GetOrigin(), *image.GetDirection()))):
        return None  # ITK's writer refuses it with its own error, as before
    spacing = image.GetSpacing()
    direction = np.reshape(image.GetDirection(), (dimension, dimension))
    axes = " ".join(_nrrd_vector(direction[:, axis] * spacing[axis]) for axis in range(dimension))
    lines = [
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
        f"type: {type_name}",
        f"dimension: {dimension}",
        "space: left-posterior-superior" if dimension == 3 else "space dimension: 2",
        "sizes: " + " ".join(str(n) for n in image.GetSize()),
        f"space directions: {axes}",
        "kinds: " + " ".join(["domain"] * dimension),
        *(["endian: little"] if image.GetSizeOfPixelComponent() > 1 else []),
        "encoding: gzip",
        f"space origin: {_nrrd_vector(image.GetOrigin())}",
    ]
    return ("\n".join(lines) + "\n\n").encode("ascii")


def _nrrd_vector(values) -> str:
    return "(" + ",".join(format(float(v), ".17g") for v in values) + ")"


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
