"""Non-DICOM inputs: NIfTI/NRRD image + mask pairs and 2D PNG images with masks (the BUSI ultrasound layout).

Layouts (any nesting under the inbox):
- ``<id>.nii.gz`` + ``<id>_mask.nii.gz`` (also ``.nii``, ``.nrrd``), optional ``<id>.json`` sidecar
  ``{"modality": "MR"}``. Each non-zero mask label becomes an ROI ``label_<n>`` (a single ROI ``mask`` when the
  mask holds one label value). More mask files ``<id>_mask_<name>.nii.gz`` give ROIs ``<name>`` (``mask_<n>``
  for a number), or ``<name>_label_<n>`` for several label values.
- ``<id>.png`` + ``<id>_mask.png`` (+ ``<id>_mask_1.png``, ...: merged by OR into one lesion mask), RGB converted
  to grayscale, modality ``US``; the class folder (``benign``/``malignant``) can become the label. An image whose
  masks are all empty (BUSI ``normal`` images) has no lesion to describe: it is skipped with a note.

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


def png_array(path: Path, what: str) -> np.ndarray:
    image = read_image_file(path, what)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if image.GetNumberOfComponentsPerPixel() > 1:
        channels = array[..., :3]
        if what == "image":
            array = (
                channels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
                if channels.shape[-1] == 3
                else channels[..., 0]
            )
        else:
            array = channels.max(axis=-1)
    if array.ndim != 2:
        raise FileInputError(f"{path}: expected a 2D {what}, got array shape {array.shape}")
    return array


def read_pair_image(pair: FilePair) -> sitk.Image:
    """The image as float32; a PNG becomes a one-slice 3D volume (grayscale, 1 mm pixels)."""
    if pair.kind == "png":
        image = sitk.GetImageFromArray(png_array(pair.image, "image")[None])
        return sitk.Cast(image, sitk.sitkFloat32)
    image = read_image_file(pair.image, "image")
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise FileInputError(f"{pair.image}: multi-component image, expected a scalar volume")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    return sitk.Cast(image, sitk.sitkFloat32)


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
