"""Patient manifests (``manifests/<key>.json``): the files a patient's partition reads, written when it is
registered or re-run, and read back as a DICOM scan and an image/mask file pair.

A patient's partition reads only the files in its manifest, so its cost does not grow with the inbox; the lookup
that falls back to a scan of the inbox without a manifest is ``patient_lookup.patient_inputs``."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from radiomics_assets.errors import ManifestError
from radiomics_assets.ingest.dicom_headers import DicomFile, InboxScan, group_headers, read_headers
from radiomics_assets.ingest.file_pairs import FilePair
from radiomics_assets.ingest.inbox import RACY_SECONDS
from radiomics_assets.ingest.inbox_index import InboxIndex, InboxSnapshot, PatientEntry, cached_header, cached_rows
from radiomics_assets.paths import DataRoot, patient_key


def manifest_path(root: DataRoot, key: str) -> Path:
    return root.path / "manifests" / f"{key}.json"


@dataclass(frozen=True)
class Manifest:
    """The files a patient's partition reads: those seen when it was registered or last re-run."""

    key: str
    fingerprint: str
    dicom: list[str]
    pair: dict | None


def write_manifest(root: DataRoot, entry: PatientEntry) -> Path:
    path = manifest_path(root, entry.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "key": entry.key,
        "fingerprint": entry.fingerprint,
        "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dicom": entry.dicom,
        "pair": entry.pair,
    }
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(body, indent=1))
    partial.replace(path)  # atomic: a run reading the manifest never sees half of it
    return path


def read_manifest(root: DataRoot, key: str) -> Manifest | None:
    """The patient's manifest, or None when there is none (e.g. a data root from before manifests existed)."""
    path = manifest_path(root, key)
    try:
        body = json.loads(path.read_text())
        return Manifest(key=body["key"], fingerprint=body["fingerprint"], dicom=list(body["dicom"]), pair=body["pair"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{path}: unreadable patient manifest ({exc}); delete it to rescan the inbox") from exc


_FINGERPRINTS: dict[str, tuple[tuple[int, ...], str]] = {}
"""Manifest file -> (its device, inode, size, modification and change times; its fingerprint) as last read here."""


def manifest_fingerprint(root: DataRoot, key: str) -> str | None:
    """The fingerprint in the patient's manifest (None when there is none), read again only when the file changed.

    The inbox sensor compares every registered patient's files with its manifest on every tick: one ``stat`` each
    instead of reading and parsing every manifest. A manifest is replaced whole when written, and a file system may
    give the new file the inode just freed and, with coarse times, the same times: a manifest is therefore cached only
    once its times are older than the file system's time step (``inbox.RACY_SECONDS``), as the inbox walk trusts a
    folder's listing. Raises ManifestError as :func:`read_manifest` does."""
    path = str(manifest_path(root, key))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    cached = _FINGERPRINTS.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    manifest = read_manifest(root, key)
    if manifest is None:
        return None
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_SECONDS * 1e9:
        _FINGERPRINTS[path] = (stamp, manifest.fingerprint)
    return manifest.fingerprint


def write_manifests(
    root: DataRoot,
    keys: list[str] | None = None,
    read_map: Callable = map,
    *,
    accept_maskless: Callable[[str], bool] | None = None,
) -> InboxSnapshot:
    """Index the whole inbox (no budget) and write the manifest of each of ``keys`` found (default: every
    patient); returns the snapshot. ``read_map`` as for :meth:`InboxIndex.update`, ``accept_maskless`` as for
    ``scan_file_pairs``."""
    snapshot = InboxIndex(root, accept_maskless=accept_maskless).update(
        max_header_reads=None, max_seconds=None, read_map=read_map
    )
    for key in snapshot.patients if keys is None else [k for k in keys if k in snapshot.patients]:
        write_manifest(root, snapshot.patients[key])
    return snapshot


def manifest_scan(root: DataRoot, manifest: Manifest) -> InboxScan:
    """Headers of only the manifest's DICOM files that still exist (a removed file is as if never dropped).

    Headers the index already read from a file of the same size and mtime come from its cache; only the
    others are read again.
    """
    on_disk = {}
    for rel in manifest.dicom:
        try:
            st = os.stat(root.inbox / rel)
        except OSError:
            continue
        on_disk[rel] = (st.st_size, st.st_mtime_ns)
    cached = cached_rows(root, list(on_disk))
    headers: list[DicomFile] = []
    unreadable: dict[Path, str] = {}
    to_read = []
    for rel, (size, mtime_ns) in on_disk.items():
        row = cached.get(rel)
        if row is None or (row[1], row[2]) != (size, mtime_ns):
            to_read.append(root.inbox / rel)
        elif row[-1] is not None:
            unreadable[root.inbox / rel] = row[-1]
        else:
            headers.append(cached_header(root.inbox / rel, row))
    fresh_headers, fresh_unreadable = read_headers(to_read)
    headers += fresh_headers
    # A PatientID split by issuer (a key with the issuer) stays split although the manifest holds one issuer only.
    split = frozenset(
        h.patient_id
        for h in headers
        if h.issuer
        and patient_key(h.patient_id) != manifest.key
        and patient_key(f"{h.patient_id}_{h.issuer}") == manifest.key
    )
    return group_headers(headers, {**unreadable, **fresh_unreadable}, split_ids=split)


class ManifestFiles(NamedTuple):
    """A patient's files as its manifest lists them: the DICOM scan, the image/mask pair, and where they were."""

    scan: InboxScan | None
    pair: FilePair | None
    where: str


def manifest_files(root: DataRoot, key: str) -> ManifestFiles | None:
    """The patient's files as listed in its manifest, or None when it has no manifest."""
    manifest = read_manifest(root, key)
    if manifest is None:
        return None
    scan = manifest_scan(root, manifest) if manifest.dicom else None
    where = f"{root.inbox} (files in {manifest_path(root, key)})"
    return ManifestFiles(scan, manifest_file_pair(root, manifest), where)


def manifest_file_pair(root: DataRoot, manifest: Manifest) -> FilePair | None:
    pair = manifest.pair
    if not pair:
        return None
    sidecar = root.inbox / pair["sidecar"] if pair["sidecar"] else None
    masks = [root.inbox / m for m in pair["masks"]]
    return FilePair(key=manifest.key, kind=pair["kind"], image=root.inbox / pair["image"], masks=masks, sidecar=sidecar)
