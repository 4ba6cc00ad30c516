"""Duplicate images kept in one fold: exact and near-duplicate stored images, and labels.csv groups, as CV groups.

Image collections hold the same lesion twice (the public BUSI set has near-identical pairs, some filed under both
classes). A duplicate split across a training and a test fold lets the model recognise the image instead of the
disease, so the CV is optimistic. Two patients are in one group when
- a stored image of one has the same content hash as one of the other's (``series.image_hash``: voxels and
  geometry), or
- their perceptual hashes are within ``duplicate_max_distance`` bits (same modality; single-slice images such as
  ultrasound or photographs only: the middle slices of different patients' CT volumes are too alike, see below), or
- labels.csv gives them the same ``group`` value (e.g. lesions of one person);
groups are the connected components of these links. A group whose members carry different labels cannot be a
training example of either class: its patients are left out of training and listed in the report.

Perceptual hash (the DCT hash, "pHash"): the stored 2D image (or the middle slice along z), averaged over colour
channels, box-resampled to 32 x 32, 2D DCT-II; the 8 x 8 lowest frequencies without the DC term are compared with
their median, giving 64 bits. It ignores brightness and contrast changes, resizing, re-compression and small crops
or annotations. The threshold (default 8 bits) is measured on the BUSI sample (40 benign/malignant images, 780
pairs): its near-identical pair (the same lesion stored at two sizes, ``malignant (109)`` and ``malignant (13)``)
differs by 4 bits, the closest unrelated pair by 18, the median pair by 30. On the synthetic CT demo (30 different
volumes) the middle slices' hashes are a median 8 bits apart and the closest 2, so volumes (more than one slice)
are compared by content hash only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import SimpleITK as sitk
from PIL import Image
from scipy.fft import dctn

from radiomics_assets.warehouse import Warehouse, write_derived_table

HASH_SIZE = 8
RESAMPLED = 32
FINGERPRINTS = "image_fingerprints"
"""Warehouse table caching the perceptual hash per (series_uid, image_hash): a stored volume is read once."""


def middle_slice(image: sitk.Image) -> np.ndarray:
    """The 2D image itself, or the middle slice along z of a volume, as float (colour channels averaged)."""
    array = sitk.GetArrayFromImage(image).astype(float)
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = array.mean(axis=-1)
    while array.ndim > 2:
        array = array[array.shape[0] // 2]
    return array


def perceptual_hash(pixels: np.ndarray) -> int:
    """64-bit DCT hash of a 2D array (see the module docstring)."""
    small = Image.fromarray(np.asarray(pixels, dtype=np.float32), mode="F").resize(
        (RESAMPLED, RESAMPLED), Image.Resampling.BOX
    )
    low = dctn(np.asarray(small, dtype=float), type=2, norm="ortho")[:HASH_SIZE, :HASH_SIZE].ravel()
    bits = low > np.median(low[1:])
    bits[0] = False  # the DC term (mean brightness) carries no shape
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _fingerprints(warehouse: Warehouse, series: pd.DataFrame) -> pd.DataFrame:
    """series_uid, image_hash, phash (NaN when the stored volume cannot be read); cached in the warehouse."""
    try:
        cached = warehouse.query(f"SELECT * FROM {FINGERPRINTS}")
    except duckdb.CatalogException:
        cached = pd.DataFrame(columns=["series_uid", "image_hash", "phash", "note"])
    known = {(r.series_uid, r.image_hash): r for r in cached.itertuples()}
    rows = []
    for r in series.itertuples():
        hit = known.get((r.series_uid, r.image_hash))
        if hit is not None:
            rows.append({"series_uid": r.series_uid, "image_hash": r.image_hash, "phash": hit.phash, "note": hit.note})
            continue
        try:
            value, note = str(perceptual_hash(middle_slice(sitk.ReadImage(str(r.volume_path))))), ""
        except (RuntimeError, OSError, ValueError) as error:  # a missing volume costs only the near-duplicate test
            value, note = "", f"{r.volume_path}: not read ({str(error).splitlines()[0][:120]})"
        rows.append({"series_uid": r.series_uid, "image_hash": r.image_hash, "phash": value, "note": note})
    table = pd.DataFrame(rows, columns=["series_uid", "image_hash", "phash", "note"]).astype(str)
    if len(table):
        write_derived_table(warehouse, FINGERPRINTS, pd.concat([cached.astype(str), table]).drop_duplicates())
    return table


@dataclass
class Groups:
    """CV groups of the training patients and why they were formed."""

    patient_ids: list[str]
    group: np.ndarray
    """One group key per patient (a patient alone is its own group)."""
    table: list[dict] = field(default_factory=list)
    """Groups of more than one patient: group, patients, labels, links, conflicting."""
    excluded: list[str] = field(default_factory=list)
    """Patients of groups whose members carry different labels (left out of training)."""
    notes: list[str] = field(default_factory=list)


class _UnionFind:
    def __init__(self, items):
        self.parent = {i: i for i in items}

    def find(self, i):
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_pairs(hashes: pd.DataFrame, max_distance: int) -> list[tuple[str, str, int]]:
    """(patient a, patient b, bits) for images of different patients with the same modality within ``max_distance``."""
    pairs = []
    for _, rows in hashes.groupby("modality"):
        values = rows.phash.to_numpy(dtype=object)
        patients = rows.patient_id.to_numpy()
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                if patients[i] != patients[j]:
                    bits = hamming(int(values[i]), int(values[j]))
                    if bits <= max_distance:
                        pairs.append((str(patients[i]), str(patients[j]), bits))
    return pairs


def patient_groups(
    warehouse: Warehouse, patient_ids: list[str], labels: pd.Series, label_groups: pd.Series, max_distance: int
) -> Groups:
    """Groups of ``patient_ids`` from duplicate images and labels.csv groups; ``labels``: patient_id -> outcome
    (a class code, a value, or a ``time/event`` text), compared within a group to find conflicting outcomes."""
    patient_ids = [str(p) for p in patient_ids]
    links = _UnionFind(patient_ids)
    reasons: dict[tuple[str, str], str] = {}
    series = warehouse.query("SELECT patient_id, series_uid, modality, volume_path, image_hash, size_z FROM series")
    series = series[series.patient_id.isin(patient_ids)]
    notes: list[str] = []
    for _, rows in series.groupby("image_hash"):
        members = sorted(set(rows.patient_id))
        for other in members[1:]:
            links.union(members[0], other)
            reasons[(members[0], other)] = "same image (content hash)"
    if max_distance >= 0 and len(series):
        # Only single-slice images: middle slices of different patients' volumes of one anatomy are too alike
        # for a 64-bit hash (the synthetic demo's 30 CT volumes: median 8 bits apart, the closest 2).
        flat = series[series.size_z.fillna(1) <= 1]
        prints = _fingerprints(warehouse, flat[["series_uid", "image_hash", "volume_path"]])
        notes += [n for n in prints.note if n]
        hashes = series.merge(prints[prints.phash != ""], on=["series_uid", "image_hash"])
        for a, b, bits in near_duplicate_pairs(hashes, max_distance):
            links.union(a, b)
            reasons.setdefault((min(a, b), max(a, b)), f"near-duplicate image ({bits} of 64 bits differ)")
    declared = label_groups.reindex(patient_ids).fillna("")
    for value, members in declared[declared != ""].groupby(declared[declared != ""]):
        keys = sorted(members.index)
        for other in keys[1:]:
            links.union(keys[0], other)
            reasons.setdefault((keys[0], other), f"labels.csv group {value!r}")
    root_of = {p: links.find(p) for p in patient_ids}
    members_of: dict[str, list[str]] = {}
    for p, r in root_of.items():
        members_of.setdefault(r, []).append(p)
    table, excluded = [], []
    multi = sorted(members for members in members_of.values() if len(members) > 1)
    for number, members in enumerate(multi, 1):
        member_labels = [_plain(labels[p]) for p in members]
        conflicting = len(set(member_labels)) > 1
        if conflicting:
            excluded += members
        table.append(
            {
                "group": f"G{number:03d}",
                "patients": sorted(members),
                "labels": member_labels,
                "links": sorted(
                    {f"{a} - {b}: {why}" for (a, b), why in reasons.items() if a in members and b in members}
                ),
                "conflicting_labels": conflicting,
            }
        )
    return Groups(
        patient_ids=patient_ids,
        group=np.asarray([root_of[p] for p in patient_ids]),
        table=table,
        excluded=sorted(excluded),
        notes=notes,
    )


def _plain(value):
    """An outcome as a JSON-friendly scalar: an integral number as int, else as it is."""
    if isinstance(value, int | np.integer) or (isinstance(value, float | np.floating) and float(value).is_integer()):
        return int(value)
    return value.item() if isinstance(value, np.generic) else value
