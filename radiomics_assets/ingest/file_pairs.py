"""Non-DICOM inputs: NIfTI/NRRD image + mask pairs and 2D PNG images with masks (the BUSI ultrasound layout).

Layouts (any nesting under the inbox):
- ``<id>.nii.gz`` + ``<id>_mask.nii.gz`` (also ``.nii``, ``.nrrd``), optional ``<id>.json`` sidecar
  ``{"modality": "MR"}``. Each non-zero mask label becomes an ROI ``label_<n>`` (a single ROI ``mask`` when the
  mask holds one label value). More mask files ``<id>_mask_<name>.nii.gz`` give ROIs ``<name>`` (``mask_<n>``
  for a number), or ``<name>_label_<n>`` for several label values.
- ``<id>.png`` + ``<id>_mask.png`` (+ ``<id>_mask_1.png``, ...: merged by OR into one lesion mask), grey
  stored as RGB/RGBA/palette read exactly, a colour image refused (or its luma, see ``read_png_grey``), masks
  thresholded at half their maximum (``read_png_mask``), modality ``US``; the class folder
  (``benign``/``malignant``) can become the label. An image whose masks are all empty (BUSI ``normal`` images)
  has no lesion to describe: it is skipped with a note.

The partition key is ``patient_key(<id>)``, e.g. ``benign (3).png`` -> ``benign_3-5ec15dc8`` (``paths.patient_key``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiomics_assets import environment
from radiomics_assets.errors import FileInputError
from radiomics_assets.ingest.inbox import inbox_files
from radiomics_assets.paths import patient_key

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd")
PNG_SUFFIX = ".png"
MASK_NAME = re.compile(r"^(?P<id>.+)_mask(?:_(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*))?$")
EMPTY_LESION_MASK = "empty lesion mask (normal image)"


@dataclass
class FilePair:
    """One image file with its mask file(s); ``kind`` is ``volume`` (NIfTI/NRRD) or ``png``."""

    key: str
    kind: str
    image: Path | None = None
    masks: list[Path] = field(default_factory=list)
    sidecar: Path | None = None

    @property
    def paths(self) -> list[Path]:
        return sorted(p for p in [self.image, *self.masks, self.sidecar] if p is not None)


def split_suffix(path: Path) -> tuple[str, str] | None:
    name = path.name
    for suffix in (*VOLUME_SUFFIXES, PNG_SUFFIX, ".json"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], suffix
    return None


def scan_file_pairs(
    inbox: Path, *, accept_maskless: Callable[[str], bool] | None = None
) -> tuple[dict[str, FilePair], dict[Path, str]]:
    """Image/mask pairs under ``inbox`` by partition key, and files that look like pairs but are incomplete.

    An image without a mask file is a patient too (with no masks) when ``accept_maskless(key)`` says so: it has a
    seed or automated segmentation is on (``masks.autoseg.maskless_images_accepted``).
    """
    groups: dict[tuple[Path, str, str], FilePair] = {}
    sidecars: dict[tuple[Path, str], Path] = {}
    for path in inbox_files(inbox):
        split = split_suffix(path)
        if split is None:
            continue
        stem, suffix = split
        if suffix == ".json":
            sidecars[(path.parent, stem)] = path
            continue
        kind = "png" if suffix == PNG_SUFFIX else "volume"
        match = MASK_NAME.match(stem)
        ident = match.group("id") if match else stem
        key = patient_key(ident)
        pair = groups.setdefault((path.parent, ident, kind), FilePair(key=key, kind=kind))
        if match:
            pair.masks.append(path)
        else:
            pair.image = path
    pairs: dict[str, FilePair] = {}
    incomplete: dict[Path, str] = {}
    for (folder, ident, _), pair in sorted(groups.items()):
        pair.masks.sort()
        if pair.image is None or not (pair.masks or (accept_maskless is not None and accept_maskless(pair.key))):
            for path in pair.paths:
                missing = "image" if pair.image is None else "mask"
                incomplete[path] = f"{path}: no {missing} file beside it for {ident!r}"
            continue
        if pair.key in pairs:
            incomplete[pair.image] = f"{pair.image}: patient key {pair.key!r} already used by {pairs[pair.key].image}"
            continue
        if pair.kind == "png" and pair.masks and all(_png_mask_is_empty(path) for path in pair.masks):
            incomplete[pair.image] = f"{pair.image}: {EMPTY_LESION_MASK}, skipped"
            for path in pair.masks:
                incomplete[path] = f"{path}: {EMPTY_LESION_MASK} of {pair.image.name}, skipped"
            continue
        pair.sidecar = sidecars.get((folder, ident))
        pairs[pair.key] = pair
    return pairs, incomplete


def pair_beside_dicom(path: Path, key: str) -> str:
    """Why a file of an image/mask pair whose key is also a DICOM patient's is not used."""
    return (
        f"{path}: image/mask file named like DICOM patient {key!r}; not used (the patient is read from its DICOM "
        "files): rename the file pair to make it a patient of its own"
    )


def _png_mask_is_empty(path: Path) -> bool:
    """Whether a PNG mask has no lesion pixel; an unreadable one is not judged here (the pipeline reports it)."""
    try:
        stat = path.stat()
    except OSError:
        return False
    return _png_mask_is_empty_cached(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=65536)
def _png_mask_is_empty_cached(path: Path, mtime_ns: int, size: int) -> bool:
    # Keyed by mtime and size: the sensor rescans the inbox often, and a mask is read again only when it changes.
    try:
        return not sitk.GetArrayFromImage(sitk.ReadImage(str(path))).any()
    except RuntimeError:
        return False


def file_series_uid(path: Path) -> str:
    """Stable series UID for an image file: hash of its content."""
    return "file-" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:24]


def pair_modality(pair: FilePair, default: str = "CT") -> str:
    """Sidecar ``{"modality": ...}`` if present, else ``US`` for PNG, else ``default``."""
    if pair.sidecar is not None:
        try:
            value = json.loads(pair.sidecar.read_text()).get("modality")
        except (OSError, ValueError, AttributeError) as exc:
            raise FileInputError(f"{pair.sidecar}: unreadable JSON sidecar ({exc})") from exc
        if value:
            return str(value).upper()
    return "US" if pair.kind == "png" else default.upper()


def read_image_file(path: Path, what: str) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise FileInputError(f"{path}: unreadable {what} ({first})") from exc


COLOUR_ENV = environment.COLOUR_IMAGES.name
COLOUR_CHOICES = ("fail", "luminance")
COLOUR_NOISE = 16
"""A pixel whose channels differ by more than this (0-255 scale) is coloured: JPEG round trips and colour-managed
screen grabs of grey images leave differences of a few levels, Doppler overlays and coloured annotations tens."""
COLOUR_SHARE = 0.001
"""An image with more than this share of coloured pixels is a colour image (one pixel in a thousand: a Doppler box
or a coloured caliper mark, not JPEG noise)."""
MASK_GREY_SHARE = 0.05
"""A PNG mask with more than this share of its non-zero pixels neither 0 nor its maximum has been through lossy
compression or smoothing: it is thresholded at half its maximum, with a warning."""
LUMINANCE = np.array([0.299, 0.587, 0.114])
"""ITU-R BT.601 luma weights, as Pillow's and OpenCV's grey conversions use."""


@dataclass(frozen=True)
class PngGrey:
    """A PNG image as grey levels, and how they were obtained (stored in the ``series.units`` column)."""

    array: np.ndarray
    """2D float32 array of integer grey levels."""
    description: str


def colour_setting() -> str:
    """What a true-colour PNG image becomes: ``fail`` (default) or ``luminance`` (BT.601 grey, with a warning);
    ``$RADIOMICS_COLOUR_IMAGES``, read when called so a run uses the environment it was started with."""
    value = environment.read(environment.COLOUR_IMAGES).lower()
    if value not in COLOUR_CHOICES:
        raise FileInputError(f"{COLOUR_ENV}={value!r}: expected one of {list(COLOUR_CHOICES)}")
    return value


def png_header(path: Path) -> tuple[int, int, int | None]:
    """(bit depth, colour type, significant bits from the ``sBIT`` chunk or None) of a PNG file.

    The IHDR chunk says how the samples are stored; ``sBIT``, when the writer sets it, how many of those bits
    hold data (a 12-bit scanner image in a 16-bit PNG has ``sBIT`` 12)."""
    with open(path, "rb") as handle:
        data = handle.read(1 << 16)
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise FileInputError(f"{path}: unreadable image (not a PNG file: no PNG signature and IHDR header)")
    depth, colour_type = data[24], data[25]
    offset, sbit = 8, None
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        if kind == b"sBIT":
            sbit = max(data[offset + 8 : offset + 8 + length] or b"\x00") or None
        if kind in (b"IDAT", b"IEND"):
            break
        offset += 12 + length
    return depth, colour_type, sbit


def _png_samples(path: Path, what: str) -> np.ndarray:
    """The stored samples, (rows, columns[, channels]) as integers; palette images expanded to RGB."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        # ITK reads grey, RGB, RGBA and palette PNGs but not grey + alpha; Pillow reads that one exactly.
        from PIL import Image

        try:
            with Image.open(path) as pil:
                if pil.mode not in ("LA", "La"):
                    raise OSError(pil.mode)
                return np.asarray(pil)[..., :1].astype(np.int64)
        except OSError:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            raise FileInputError(f"{path}: unreadable {what} ({first})") from exc
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        raise FileInputError(f"{path}: {what} has {array.dtype} samples, expected 8- or 16-bit integers")
    return array.astype(np.int64)


def grey_from_channels(
    path: Path, channels: np.ndarray, colour: str, noise: int = COLOUR_NOISE
) -> tuple[np.ndarray, str]:
    """One grey channel from RGB: the channel itself when they are equal (exact), else rounded luminance."""
    spread = channels.max(axis=-1) - channels.min(axis=-1)
    if not spread.any():
        return channels[..., 0], "grey stored as RGB (equal channels)"
    # Rounded, never left fractional: a grey 215 that becomes 214.99998 falls into the bin below.
    luminance = np.rint(channels @ LUMINANCE).astype(np.int64)
    share = float((spread > noise).mean())
    if share <= COLOUR_SHARE:
        return luminance, f"grey from RGB (channels within noise, max difference {int(spread.max())}; rounded luma)"
    problem = (
        f"{path}: colour image ({share:.1%} of pixels have channels more than {noise} levels apart, e.g. a "
        "Doppler overlay or coloured annotation)"
    )
    if colour == "fail":
        raise FileInputError(
            f"{problem}; radiomics needs a grey B-mode image: export it without colour, or set {COLOUR_ENV}=luminance "
            "to use its BT.601 luma"
        )
    log.warning("%s: using its rounded BT.601 luma (%s=luminance)", problem, COLOUR_ENV)
    return luminance, f"luma of a colour image ({share:.1%} coloured pixels; {COLOUR_ENV}=luminance)"


def read_png_grey(path: Path, *, colour: str | None = None) -> PngGrey:
    """A PNG image as integer grey levels on their stored scale, with a description of what was done.

    Grey, grey + alpha, RGB, RGBA and palette PNGs: the alpha channel is ignored; equal channels give the grey
    exactly; channels that differ within noise give the rounded BT.601 luma; a true-colour image fails or, with
    ``colour="luminance"``, gives its luma with a warning (:func:`colour_setting`). 16-bit PNGs keep their values;
    the description records the bit depth of the data (``sBIT``, else from the largest value), so a parameter file
    for 0-255 grey levels is refused for them at extraction (see ``check_png_bit_depth``)."""
    colour = colour or colour_setting()
    depth, _, sbit = png_header(path)
    samples = _png_samples(path, "image")
    if samples.ndim == 3 and samples.shape[-1] == 1:
        samples = samples[..., 0]
    if samples.ndim == 3:
        # the noise allowance is on the 8-bit scale: 257 times that on 16-bit samples
        noise = COLOUR_NOISE * (257 if depth == 16 else 1)
        grey, how = grey_from_channels(path, samples[..., :3], colour, noise) if samples.shape[-1] >= 3 else (None, "")
        if grey is None:
            grey, how = samples[..., 0], "grey + alpha"
    else:
        grey, how = samples, "grey"
    if grey.ndim != 2:
        raise FileInputError(f"{path}: expected a 2D image, got array shape {samples.shape}")
    highest = int(grey.max()) if grey.size else 0
    bits = sbit or max(8, highest.bit_length())
    if depth == 16:
        how = f"{how}; {bits}-bit data in a 16-bit PNG (maximum {highest})"
    return PngGrey(grey.astype(np.float32), f"{how}; {bits}-bit" if depth != 16 else how)


def png_bits(description: str) -> int | None:
    """The data bit depth recorded by :func:`read_png_grey` in ``series.units``, or None for other series."""
    if not isinstance(description, str):
        return None
    match = re.search(r"(\d+)-bit", description)
    return int(match.group(1)) if match else None


def read_png_mask(path: Path) -> np.ndarray:
    """A PNG mask as a boolean array: pixels above half the mask's maximum (any channel).

    Masks are 0/255 or 0/1 when drawn; one saved through JPEG holds values scattered between 0 and the maximum,
    and thresholding those at > 0 grows the lesion by the compression halo. Half the maximum is the midpoint of
    the two drawn values; a warning says when more than ``MASK_GREY_SHARE`` of the non-zero pixels are neither."""
    samples = _png_samples(path, "mask")
    if samples.ndim == 3:
        samples = samples[..., : min(3, samples.shape[-1])].max(axis=-1)
    if samples.ndim != 2:
        raise FileInputError(f"{path}: expected a 2D mask, got array shape {samples.shape}")
    highest = int(samples.max()) if samples.size else 0
    if highest == 0:
        return np.zeros(samples.shape, dtype=bool)
    nonzero = samples > 0
    between = float(((samples != highest) & nonzero).sum() / nonzero.sum())
    if between > MASK_GREY_SHARE:
        log.warning(
            "%s: %.1f%% of the mask's non-zero pixels are neither 0 nor its maximum %d (lossy compression?): "
            "thresholded at half the maximum",
            path,
            100 * between,
            highest,
        )
    return samples * 2 > highest


def png_array(path: Path, what: str) -> np.ndarray:
    """A PNG image as float32 grey levels (:func:`read_png_grey`), or a PNG mask as 0/1 (:func:`read_png_mask`)."""
    if what == "mask":
        return read_png_mask(path).astype(np.float32)
    return read_png_grey(path).array


def read_pair_image_described(pair: FilePair) -> tuple[sitk.Image, str | None]:
    """The image as float32 and, for a PNG, how its grey levels were obtained (``series.units``).

    A PNG becomes a one-slice 3D volume (grey levels, 1 mm pixels)."""
    if pair.kind == "png":
        grey = read_png_grey(pair.image)
        return sitk.Cast(sitk.GetImageFromArray(grey.array[None]), sitk.sitkFloat32), grey.description
    image = read_image_file(pair.image, "image")
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise FileInputError(f"{pair.image}: multi-component image, expected a scalar volume")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    return sitk.Cast(image, sitk.sitkFloat32), None


def read_pair_image(pair: FilePair) -> sitk.Image:
    """The image as float32; a PNG becomes a one-slice 3D volume (grayscale, 1 mm pixels)."""
    return read_pair_image_described(pair)[0]


def labels_from_folders(
    inbox: Path,
    classes: tuple[str, ...] = ("benign", "malignant"),
    *,
    accept_maskless: Callable[[str], bool] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """``patient_id,label`` from the class folder of each PNG pair (and of each mask-less image that
    ``accept_maskless`` admits, as in :func:`scan_file_pairs`); other folders (e.g. ``normal``) are noted."""
    pairs, skipped = scan_file_pairs(inbox, accept_maskless=accept_maskless)
    rows = []
    notes = [why for path, why in sorted(skipped.items()) if EMPTY_LESION_MASK in why and "_mask" not in path.name]
    for key, pair in sorted(pairs.items()):
        folder = pair.image.parent.name.lower()
        if folder in classes:
            rows.append({"patient_id": key, "label": folder})
        else:
            notes.append(
                f"{pair.image}: folder {pair.image.parent.name!r} is not one of {list(classes)}; excluded"
                + (" (normal images have empty masks)" if folder == "normal" else "")
            )
    return pd.DataFrame(rows, columns=["patient_id", "label"]), notes
