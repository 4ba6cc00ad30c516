"""What a change of the inbox touches, so that the index regroups only those patients (``InboxIndex.update``).

Grouping every header again after each change cost about 1.2 s per 100,000 files, paid on every sensor tick that
sees a new file; in an archive that receives studies all day that is most ticks. ``group_headers`` decides a
patient's files from three things, and the *scope* of a change holds all three for every patient it may touch:

- the headers of its PatientID (the issuers seen with a PatientID decide its keys, ``patient_identity``), and of
  every other PatientID that gave one of its keys (two PatientIDs with one key are a conflict of that key), even
  when all of that PatientID's files there are skipped (they still decide whether the key exists, its order, and
  which series are localizers);
- the folders its files are in: an unreadable file is attributed to a patient with files in its folder, and an
  object skipped by one patient is listed beside another's files in the same folder, so every PatientID with a
  header in one of those folders belongs to the scope too;
- the files that changed: their PatientID before and after the change, and their folders.

Grouping the scope's headers alone then gives exactly the entries that grouping the whole inbox would give for
those patients (``test_inbox_index.py`` compares the two after every kind of change), and the patients outside
the scope keep their entries. When the scope grows past ``MAX_SCOPE_FILES`` the whole inbox is grouped again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from radiomics_assets.ingest.dicom_headers import patient_identity
from radiomics_assets.ingest.inbox import FolderListing
from radiomics_assets.paths import patient_key

MAX_SCOPE_FILES = 20000
"""A scope with more files than this is grouped with the rest of the inbox: the bookkeeping would cost more."""


def folder_of(rel: str) -> str:
    """The folder prefix of an inbox-relative path ("" for the inbox itself, else "a/b/")."""
    return rel[: rel.rfind("/") + 1]


@dataclass(frozen=True)
class InboxChange:
    folders: set[str]
    """Folder prefixes whose entries changed, appeared or went."""
    files: dict[str, tuple[int, int, int] | None]
    """Inbox-relative path -> (size, mtime_ns, changed_ns) now, or None for a file that went; only files that are
    new, gone or whose stamp changed."""
    added: int
    """Files now in the inbox that were not before, minus those that went."""


def inbox_change(old: dict[str, FolderListing], new: dict[str, FolderListing]) -> InboxChange:
    """The folders and files that differ between two walks of the inbox."""
    folders: set[str] = set()
    files: dict[str, tuple[int, int, int] | None] = {}
    added = 0
    for prefix, listing in new.items():
        before = old.get(prefix)
        if before is listing or (before is not None and listing.same_entries(before)):
            continue
        folders.add(prefix)
        then = {name: stamp for name, *stamp in before.files} if before is not None else {}
        added += len(listing.files) - len(then)
        for name, *stamp in listing.files:
            if then.pop(name, None) != stamp:
                files[prefix + name] = tuple(stamp)
        files.update((prefix + name, None) for name in then)
    for prefix in old.keys() - new.keys():
        folders.add(prefix)
        added -= len(old[prefix].files)
        files.update((prefix + name, None) for name, *_ in old[prefix].files)
    return InboxChange(folders, files, added)


@dataclass(frozen=True)
class Scope:
    patient_ids: set[str]
    """PatientIDs whose headers are grouped again."""
    folders: set[str]
    """Folder prefixes whose unreadable and ignored files are attributed again."""
    old_keys: set[str]
    """Patient keys of the previous grouping that the scope's patients held (their entries are replaced)."""


def keys_of(patient_id: str, rows: Iterable[tuple], issuer_column: int) -> set[str]:
    """The patient keys ``group_headers`` gives the headers ``rows`` of one PatientID (all of them)."""
    issuers = {row[issuer_column] for row in rows}
    return {patient_key(patient_identity(patient_id, issuer, issuers)) for issuer in issuers}


def ids_of_key(rels_of_id: dict[str, tuple[str, ...]], rows: dict[str, tuple], issuer_column: int) -> dict[str, set]:
    """Patient key -> the PatientIDs whose headers (``rels_of_id``, rows in ``rows``) give it."""
    found: dict[str, set[str]] = {}
    for patient_id, rels in rels_of_id.items():
        for key in keys_of(patient_id, (rows[rel] for rel in rels), issuer_column):
            found.setdefault(key, set()).add(patient_id)
    return found


def moved_ids_of_key(
    previous: dict[str, set],
    patient_ids: Collection[str],
    old: tuple[dict[str, tuple[str, ...]], dict[str, tuple]],
    new: tuple[dict[str, tuple[str, ...]], dict[str, tuple]],
    issuer_column: int,
) -> dict[str, set]:
    """``previous`` (see :func:`ids_of_key`) after the headers of ``patient_ids`` changed from ``old`` to ``new``
    (each a pair of ``rels_of_id`` and rows); a new dict, sharing the sets of the keys that did not change."""
    gone = ids_of_key({pid: old[0].get(pid, ()) for pid in patient_ids}, old[1], issuer_column)
    came = ids_of_key({pid: new[0].get(pid, ()) for pid in patient_ids}, new[1], issuer_column)
    moved = dict(previous)
    for key in gone.keys() | came.keys():
        ids = (set(moved.get(key, ())) - gone.get(key, set())) | came.get(key, set())
        if ids:
            moved[key] = ids
        else:
            moved.pop(key, None)
    return moved


def change_scope(
    change: InboxChange,
    old_rows: dict[str, tuple],
    new_rows: dict[str, tuple],
    old_rels_of_id: dict[str, tuple[str, ...]],
    new_rels_of_id: dict[str, tuple[str, ...]],
    old_patient_files: Callable[[str], Iterable[str]],
    old_ids_of_key: dict[str, set],
    new_listings: dict[str, FolderListing],
    issuer_column: int,
) -> Scope | None:
    """The scope of ``change`` (see the module docstring), or None when it holds more than MAX_SCOPE_FILES files.

    Rows are index rows by inbox-relative path (column 3 the PatientID, the last the read error, None for a
    header); ``*_rels_of_id`` the paths of each PatientID's headers before and after the change;
    ``old_patient_files`` gives a previous patient key's files (headers and the unreadable files attributed to it),
    ``old_ids_of_key`` the PatientIDs whose headers gave each key before the change (skipped ones too).
    """

    def patient_id(row: tuple | None) -> str | None:
        return row[3] if row is not None and row[-1] is None else None

    ids = {pid for rel in change.files for pid in (patient_id(old_rows.get(rel)), patient_id(new_rows.get(rel)))}
    ids.discard(None)
    folders = set(change.folders)
    old_keys: set[str] = set()
    while True:
        size = sum(len(new_rels_of_id.get(pid, ())) + len(old_rels_of_id.get(pid, ())) for pid in ids)
        if size > MAX_SCOPE_FILES:
            return None
        for pid in ids:
            if pid in old_rels_of_id:
                old_keys |= keys_of(pid, (old_rows[rel] for rel in old_rels_of_id[pid]), issuer_column)
        grown_ids = set(ids)
        grown_folders = set(folders)
        for key in old_keys:
            grown_folders.update(folder_of(rel) for rel in old_patient_files(key))
            grown_ids.update(old_ids_of_key.get(key, ()))
        for pid in ids:
            grown_folders.update(folder_of(rel) for rel in old_rels_of_id.get(pid, ()))
            grown_folders.update(folder_of(rel) for rel in new_rels_of_id.get(pid, ()))
        for prefix in grown_folders:
            listing = new_listings.get(prefix)
            if listing is not None:
                grown_ids.update(patient_id(new_rows.get(prefix + name)) for name, *_ in listing.files)
        grown_ids.discard(None)
        if grown_ids == ids and grown_folders == folders:
            return Scope(ids, folders, old_keys)
        ids, folders = grown_ids, grown_folders
