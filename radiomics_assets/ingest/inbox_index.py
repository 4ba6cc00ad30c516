"""Incremental index of the inbox: which files belong to which patient, without re-reading unchanged files.

A call walks the inbox (``ingest.inbox.walk_inbox``): only folders that may have changed are listed again, the
others keep the entries stored with their modification time in the index, so an idle call costs one ``stat`` per
folder. Every ``RADIOMICS_INBOX_FULL_SCAN_SECONDS`` (default 1800; 0 = every call) the walk lists every folder
and ``stat``s every file again: that is when a file rewritten in place under the same name in a folder quiet for
longer than ``RADIOMICS_INBOX_RECENT_SECONDS`` (default 120; the files of a folder that changed more recently are
``stat``ed on every call) is seen. A DICOM header is read only for a file that is new or whose size or
modification time changed; the parsed headers and the folder listings are kept in
``<data root>/index/inbox.sqlite`` (a small SQLite file of its own, so the sensor never waits for the
warehouse's write lock), with the grouping by patient of the last complete call. When no folder changed, that
grouping is returned as it is: an idle call reads neither headers nor header rows. A process keeps what it read
of the index file in memory (about 1.7 kB per file: the Dagster code server evaluates every sensor tick in one
long-lived process) and trusts it while the file's generation, rewritten by every call that changes the index
from any process, is unchanged. After a change, only the patients the change may touch are grouped again
(``inbox_delta``: 0.06 s for a new series in an inbox of 100,000 files, where grouping every header took about
1.1 s; a process's first change starts from the stored grouping); the whole inbox is grouped again after a full
walk that found a change, for a large change, or when the inbox holds image/mask file pairs.

Header reads per call are capped (count and seconds); files beyond the cap stay *pending* and are read by later
calls, so a first indexing of a large inbox spreads over several calls that each end in bounded time. From
``PARALLEL_MIN_READS`` headers on, a call reads them in ``RADIOMICS_INBOX_READ_WORKERS`` processes (default: one
per usable core; 1 = in the calling process), each reading only the tags needed (``dicom_headers.read_header``).

Per patient key the index gives the files (DICOM files plus unreadable files in their folders, or the
image/mask file pair), a fingerprint of those files (path, size, mtime) and the time of the newest change.
When a patient is registered or re-run, its files are written to a *manifest*
(``<data root>/manifests/<key>.json``): the patient's partition then reads only those files instead of
scanning the whole inbox, so its cost does not grow with the number of other patients.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import multiprocessing
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from radiomics_assets import environment
from radiomics_assets.ingest.dicom_headers import DicomFile, InboxScan, group_headers, header_or_error
from radiomics_assets.ingest.file_pairs import PNG_SUFFIX, VOLUME_SUFFIXES, pair_beside_dicom, scan_file_pairs
from radiomics_assets.ingest.inbox import FolderListing, InboxWalk, walk_inbox
from radiomics_assets.ingest.inbox_delta import (
    MAX_SCOPE_FILES,
    InboxChange,
    change_scope,
    folder_of,
    ids_of_key,
    inbox_change,
    moved_ids_of_key,
)
from radiomics_assets.paths import DataRoot

DEFAULT_HEADER_READS = 20000
"""Header reads per call: ~0.3 ms each from a local disk (tags read without pydicom), far more from a cold share."""
DEFAULT_READ_SECONDS = 20.0
"""Stop reading headers after this long even below the count, so a slow share cannot hit the sensor timeout."""
READ_CHUNK = 256
"""Headers a pool's worker reads per task; the time budget is checked between tasks."""
GIVEN_POOL_CHUNK = 8
"""Headers per task when the caller's pool reads (``read_map``)."""
PARALLEL_MIN_READS = 5000
"""Fewer headers than this are read in the calling process: starting worker processes (~2 s of imports each, in
parallel) costs more than it saves."""
READ_WORKERS_ENV = environment.INBOX_READ_WORKERS.name
FULL_SCAN_ENV = environment.INBOX_FULL_SCAN_SECONDS.name
RECENT_ENV = environment.INBOX_RECENT_SECONDS.name
_PAIR_IMAGE_SUFFIXES = (*VOLUME_SUFFIXES, PNG_SUFFIX)
"""Files that may be a patient of their own, as an image/mask pair or an image without a mask (``scan_file_pairs``,
with settings that may change between calls: then the grouping is not kept)."""
_PAIR_SUFFIXES = (*_PAIR_IMAGE_SUFFIXES, ".json")
"""Those and their sidecars: never read as DICOM. A sidecar alone (a ``.json`` without its image: a converter's
metadata, an export's notes) is no patient, so it does not stop the grouping from being kept."""
_HEADER_COLUMNS = tuple(f.name for f in fields(DicomFile) if f.name != "path")
assert fields(DicomFile)[0].name == "path"  # cached_header passes the columns after it by position
_COLUMNS = ("path", "size", "mtime_ns", *_HEADER_COLUMNS, "error")
_PATIENT_ID = _COLUMNS.index("patient_id")
_ISSUER = _COLUMNS.index("issuer")
assert _PATIENT_ID == 3  # inbox_delta.change_scope reads the PatientID there
_SCHEMA = f"""CREATE TABLE IF NOT EXISTS headers (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    {", ".join(f"{c} TEXT" for c in _HEADER_COLUMNS)}, error TEXT)"""


@contextlib.contextmanager
def _cyclic_gc_paused():
    """Python's cycle collector off for the duration (reference counting still frees everything else).

    An update that regroups the inbox allocates a few objects per file while the index of every file is alive in
    this process, so the collector would walk those hundreds of thousands of long-lived objects again and again: a
    tick after one new series took 0.69 s with it and 0.38 s without at 20,000 files, 1.55 s and 1.21 s at 100,000
    (``benchmarks/bench_inbox_index.py``). The objects of an update form no cycles worth collecting before it
    ends; the collector runs again afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def index_path(root: DataRoot) -> Path:
    return root.path / "index" / "inbox.sqlite"


@dataclass(frozen=True, slots=True)
class FileStamp:
    """One file as the index saw it; ``changed_ns`` is the later of mtime and ctime (see ``newest_change_ns``)."""

    path: str  # relative to the inbox, with forward slashes
    size: int
    mtime_ns: int
    changed_ns: int


@dataclass
class PatientEntry:
    key: str
    dicom: list[str]
    """DICOM files of the patient, and unreadable files in the same folders (likely theirs), inbox-relative."""
    pair: dict | None
    """The image/mask file pair (``kind``, ``image``, ``masks``, ``sidecar``; inbox-relative) or None."""
    files: list[FileStamp]
    unreadable: dict[str, str]
    """Inbox-relative path -> why it could not be read, for files in the patient's folders."""

    @functools.cached_property  # the sensor asks every tick; an entry's files are set before it is handed out
    def fingerprint(self) -> str:
        """Changes whenever a file of the patient appears, disappears, grows or is rewritten."""
        lines = "\n".join(f"{f.path}\t{f.size}\t{f.mtime_ns}" for f in sorted(self.files, key=lambda f: f.path))
        return hashlib.sha256(lines.encode()).hexdigest()[:24]

    @property
    def newest_change_ns(self) -> int:
        """When a file of the patient last changed. ctime counts too: a copy that keeps the source's mtime
        (``cp -p``, ``rsync -a``) still sets ctime to the time of the copy."""
        return max((f.changed_ns for f in self.files), default=0)


@dataclass
class InboxSnapshot:
    patients: dict[str, PatientEntry]
    ignored: dict[str, str]
    """Files used by no patient (inbox-relative path -> why)."""
    new_ignored: dict[str, str]
    """The part of ``ignored`` whose header was read by this call (to report each file once)."""
    pending: list[str]
    """Files whose header is not read yet because the per-call budget ran out."""
    header_reads: int
    n_files: int
    waiting_for_headers: set[str] = field(default_factory=set)
    """Patients that may own a pending file (one shares a top-level inbox folder with them): not complete yet."""
    folders_listed: int = 0
    """Folders this call listed (the others kept their stored listing; all of them on a full walk)."""


def cached_header(path: Path, row: tuple) -> DicomFile:
    """The header of ``path`` from its row in the index (columns as in ``_COLUMNS``)."""
    return DicomFile(path, *row[3:-1])  # the columns are DicomFile's fields after path, in order


def _top_folder(rel: str) -> str:
    return rel.split("/", 1)[0]


def _header_row(rel: str, size: int, mtime_ns: int, header: DicomFile | None, error: str | None) -> tuple:
    values = tuple(getattr(header, c) for c in _HEADER_COLUMNS) if header else (None,) * len(_HEADER_COLUMNS)
    return (rel, size, mtime_ns, *values, error)


def _shared(row: tuple, strings: dict[str, str]) -> tuple:
    """The row with each header value replaced by one kept instance of equal text: most values repeat over a
    series or a patient, and a process that keeps the headers of an archive in memory keeps each once."""
    return row[:3] + tuple(value if value is None else strings.setdefault(value, value) for value in row[3:])


def _read_rows(inbox: str, items: list[tuple[str, int, int]]) -> list[tuple]:
    """Index rows of (inbox-relative path, size, mtime_ns) items: runs in the pool's worker processes."""
    rows = []
    for rel, size, mtime_ns in items:
        header, error = header_or_error(Path(inbox, rel))
        rows.append(_header_row(rel, size, mtime_ns, header, error))
    return rows


def _read_rows_task(task: tuple[str, list[tuple[str, int, int]]]) -> list[tuple]:
    """:func:`_read_rows` of one (inbox, items) task: one argument, as every pool's ``map`` can pass."""
    return _read_rows(*task)


@dataclass
class _KnownIndex:
    """What this process read and wrote of one index file, valid while the file's generation is this one.

    Replaced whole, never changed in place (but for ``strings``, which only grows), so a tick running in another
    thread sees one consistent state."""

    generation: str | None
    listings: dict[str, FolderListing]
    rows: dict[str, tuple] | None
    """The header rows by inbox-relative path (None: not read from the index file yet)."""
    parsed: dict[str, DicomFile]
    """Headers built from ``rows`` (those without an error), kept so that a regrouping builds only new ones."""
    strings: dict[str, str]
    """One instance of each header value in ``rows`` (see ``_shared``)."""
    last_full_ns: int
    reported: frozenset[str]
    snapshot: InboxSnapshot | None = None
    """The grouping of the last call, reused while nothing changed (None when it cannot be reused)."""
    rels_of_id: dict[str, tuple[str, ...]] | None = None
    """The paths of each PatientID's headers in ``rows``, for regrouping only what a change touches (None: not
    known yet)."""
    ids_of_key: dict[str, set] | None = None
    """Patient key -> the PatientIDs whose headers give it (``inbox_delta.ids_of_key``), with ``rels_of_id``."""


@dataclass(frozen=True)
class _GroupingWrite:
    """How the stored grouping changes with one call: entries replaced by key and ignored files by path, or all
    of them (``whole``)."""

    n_files: int
    whole: bool = False
    removed_keys: Collection[str] = ()
    patients: Iterable[PatientEntry] = ()
    removed_ignored: Collection[str] = ()
    ignored: dict[str, str] = field(default_factory=dict)


_KNOWN: dict[str, _KnownIndex] = {}
"""Index file -> what this process knows of it (the sensor evaluates every tick in one long-lived process)."""


def read_workers() -> int:
    """``RADIOMICS_INBOX_READ_WORKERS``: processes reading many headers at once (0 or unset: one per usable core)."""
    workers = int(environment.read_number(environment.INBOX_READ_WORKERS))
    if workers == 0:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(workers, 1)


def _listing_json(listing: FolderListing) -> str:
    return json.dumps(
        [
            listing.dev,
            listing.ino,
            listing.mtime_ns,
            listing.listed_ns,
            listing.files,
            listing.folders,
            listing.unusable,
        ]
    )


def _listing_of(text: str) -> FolderListing:
    dev, ino, mtime_ns, listed_ns, files, folders, unusable = json.loads(text)
    return FolderListing(dev, ino, mtime_ns, listed_ns, tuple(tuple(f) for f in files), tuple(folders), tuple(unusable))


def _entry_json(entry: PatientEntry) -> str:
    """One patient of the grouping of a complete call, stored so that a new process starts from it."""
    files = [[f.path, f.size, f.mtime_ns, f.changed_ns] for f in entry.files]
    return json.dumps([entry.dicom, entry.pair, files, entry.unreadable])


def _entry_of(key: str, text: str) -> PatientEntry:
    dicom, pair, files, why = json.loads(text)
    return PatientEntry(key=key, dicom=dicom, pair=pair, files=[FileStamp(*f) for f in files], unreadable=why)


def _stored_grouping(con: sqlite3.Connection, n_files: int) -> InboxSnapshot:
    patients = {key: _entry_of(key, body) for key, body in con.execute("SELECT key, body FROM grouping_patients")}
    ignored = dict(con.execute("SELECT path, why FROM grouping_ignored"))
    return InboxSnapshot(
        patients=patients, ignored=ignored, new_ignored={}, pending=[], header_reads=0, n_files=n_files
    )


def _generation(con: sqlite3.Connection) -> str | None:
    row = con.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()
    return row[0] if row else None


def _stored_rows(con: sqlite3.Connection, strings: dict[str, str]) -> dict[str, tuple]:
    """Every header row of the index file by inbox-relative path, equal values shared through ``strings``."""
    return {row[0]: _shared(row, strings) for row in con.execute(f"SELECT {', '.join(_COLUMNS)} FROM headers")}


def _header_id(row: tuple | None) -> str | None:
    """The PatientID of an index row that holds a header (None for a file that could not be read, or no row)."""
    return row[_PATIENT_ID] if row is not None and row[-1] is None else None


def _rels_of_id(rows: dict[str, tuple]) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for rel, row in rows.items():
        if row[-1] is None:
            found.setdefault(row[_PATIENT_ID], []).append(rel)
    return {patient_id: tuple(rels) for patient_id, rels in found.items()}


def _moved_headers(
    rels_of_id: dict[str, tuple[str, ...]], changed: Iterable[str], old_rows: dict[str, tuple], rows: dict[str, tuple]
) -> dict[str, tuple[str, ...]]:
    """``rels_of_id`` after the ``changed`` files' rows went from ``old_rows`` to ``rows`` (a new dict)."""
    touched: dict[str, set[str]] = {}
    for rel in changed:
        for patient_id, add in ((_header_id(old_rows.get(rel)), False), (_header_id(rows.get(rel)), True)):
            if patient_id is not None:
                members = touched.setdefault(patient_id, set(rels_of_id.get(patient_id, ())))
                (members.add if add else members.discard)(rel)
    moved = dict(rels_of_id)
    for patient_id, members in touched.items():
        if members:
            moved[patient_id] = tuple(members)
        else:
            moved.pop(patient_id, None)
    return moved


def _differs(new: dict[str, FolderListing], old: dict[str, FolderListing]) -> bool:
    return new.keys() != old.keys() or any(
        listing is not old[prefix] and not listing.same_entries(old[prefix]) for prefix, listing in new.items()
    )


class InboxIndex:
    """The cached header index of one data root's inbox (see the module docstring)."""

    def __init__(self, root: DataRoot, *, accept_maskless: Callable[[str], bool] | None = None):
        self.root = root
        self.accept_maskless = accept_maskless
        """Which image files without a mask file are patients (see ``scan_file_pairs``)."""
        self.inbox = root.inbox
        self.path = index_path(root)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)  # the sensor and `radiomics-assets run` may update it together
        columns = tuple(row[1] for row in con.execute("PRAGMA table_info(headers)"))
        if columns and columns != _COLUMNS:  # written by a version that kept other header fields: only a cache
            con.execute("DROP TABLE headers")
        con.execute(_SCHEMA)
        con.execute("CREATE TABLE IF NOT EXISTS unusable_names (name TEXT PRIMARY KEY)")  # reported once each
        con.execute("CREATE TABLE IF NOT EXISTS folders (prefix TEXT PRIMARY KEY, listing TEXT NOT NULL)")
        con.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.execute("DROP TABLE IF EXISTS snapshot")  # the grouping as one text, before it was stored by patient
        con.execute("CREATE TABLE IF NOT EXISTS grouping_patients (key TEXT PRIMARY KEY, body TEXT NOT NULL)")
        con.execute("CREATE TABLE IF NOT EXISTS grouping_ignored (path TEXT PRIMARY KEY, why TEXT NOT NULL)")
        return con

    def _known(self, con: sqlite3.Connection) -> _KnownIndex:
        """This process's state of the index file, read again when another call (any process) changed it."""
        with con:
            con.execute("BEGIN")  # one read transaction: no other process's write between the reads
            return self._read_known(con)

    def _read_known(self, con: sqlite3.Connection) -> _KnownIndex:
        meta = dict(con.execute("SELECT name, value FROM meta"))
        generation = meta.get("generation")
        known = _KNOWN.get(str(self.path))
        if known is not None and generation is not None and known.generation == generation:
            return known
        stored = generation is not None and meta.get("grouping_generation") == generation
        return _KnownIndex(
            generation=generation,
            listings={prefix: _listing_of(text) for prefix, text in con.execute("SELECT prefix, listing FROM folders")},
            rows=None,  # read when a file changed: an idle call needs only the listings and the stored grouping
            parsed={},
            strings={},
            last_full_ns=int(meta.get("last_full_ns", 0)),
            reported=frozenset(row[0] for row in con.execute("SELECT name FROM unusable_names")),
            snapshot=_stored_grouping(con, int(meta["grouping_n_files"])) if stored else None,
        )

    @_cyclic_gc_paused()
    def update(
        self,
        max_header_reads: int | None = DEFAULT_HEADER_READS,
        max_seconds: float | None = DEFAULT_READ_SECONDS,
        read_map: Callable | None = None,
    ) -> InboxSnapshot:
        """Walk the inbox, read the headers of new or changed files (within the budget) and group by patient.

        ``read_map`` maps a function over a list of tasks (a process pool's ``map`` reads on all its workers);
        None: in this process, or in ``RADIOMICS_INBOX_READ_WORKERS`` processes started for the call when at
        least ``PARALLEL_MIN_READS`` headers are to be read.
        """
        started = time.monotonic()
        now_ns = time.time_ns()
        con = self._connect()
        try:
            known = self._known(con)
            full_ns = environment.read_number(environment.INBOX_FULL_SCAN_SECONDS) * 1e9
            full = not known.listings or now_ns - known.last_full_ns >= full_ns
            walk = walk_inbox(
                self.inbox,
                None if full else known.listings,
                recent_seconds=environment.read_number(environment.INBOX_RECENT_SECONDS),
                now_ns=now_ns,
            )
            changed = _differs(walk.listings, known.listings) if full else walk.changed
            if not changed and known.snapshot is not None and not known.snapshot.pending:
                # Nothing was added, removed or rewritten: the previous grouping holds. Listings taken again
                # (racy or recently busy folders) are stored for their new listing time.
                relisted = {p: item for p, item in walk.listings.items() if item is not known.listings.get(p)}
                if relisted or full:
                    kept = _GroupingWrite(known.snapshot.n_files)
                    generation, current = self._write(
                        con, known.generation, relisted, [], [], [], full and now_ns, None, kept
                    )
                    if not current:  # another process wrote meanwhile
                        _KNOWN.pop(str(self.path), None)
                    else:
                        _KNOWN[str(self.path)] = replace(
                            known,
                            generation=generation,
                            listings=walk.listings,
                            last_full_ns=now_ns if full else known.last_full_ns,
                        )
                else:  # kept, or a process's first call would load the listings and the grouping on every call
                    _KNOWN[str(self.path)] = known
                return replace(known.snapshot, new_ignored={}, header_reads=0, folders_listed=walk.listed)
            return self._update(con, known, walk, full and now_ns, started, max_header_reads, max_seconds, read_map)
        finally:
            con.close()

    def _update(
        self,
        con: sqlite3.Connection,
        known: _KnownIndex,
        walk: InboxWalk,
        full_ns: int | bool,
        started: float,
        max_header_reads: int | None,
        max_seconds: float | None,
        read_map: Callable | None,
    ) -> InboxSnapshot:
        prefetched: tuple[dict[str, tuple], dict[str, DicomFile]] = ({}, {})
        if not full_ns and known.snapshot is not None and known.rows is None:
            known = self._with_stored_rows(con, known)  # a process's first change
        if not full_ns and known.snapshot is not None and known.rows is not None and known.ids_of_key is not None:
            change = inbox_change(known.listings, walk.listings)
            if not any(rel.lower().endswith(_PAIR_SUFFIXES) for rel in change.files):
                snapshot, prefetched = self._update_changed(
                    con, known, walk, change, started, max_header_reads, max_seconds, read_map
                )
                if snapshot is not None:
                    return snapshot
        unusable = walk.unusable()
        stamps = {
            rel: FileStamp(rel, size, mtime_ns, changed_ns)
            for rel, (size, mtime_ns, changed_ns) in walk.files().items()
        }
        cached, strings = known.rows, known.strings
        if cached is None:
            strings = {}
            cached = _stored_rows(con, strings)
        stale = [
            rel
            for rel, stamp in stamps.items()
            if not rel.lower().endswith(_PAIR_SUFFIXES)  # image/mask pairs are found by name, see scan_file_pairs
            and rel not in prefetched[0]
            and (rel not in cached or cached[rel][1:3] != (stamp.size, stamp.mtime_ns))
        ]
        pending: list[str] = []
        if max_header_reads is not None:
            stale, pending = stale[:max_header_reads], stale[max_header_reads:]
        fresh, unread, built = self._read(stale, stamps, started, max_seconds, read_map, strings)
        fresh, built = {**prefetched[0], **fresh}, {**prefetched[1], **built}
        pending = unread + pending

        rows = {rel: row for rel, row in cached.items() if rel in stamps}
        rows.update(fresh)
        parsed = {rel: header for rel, header in known.parsed.items() if rel in rows and rel not in fresh}
        parsed.update(built)
        headers: list[DicomFile] = []
        unreadable: dict[Path, str] = {}
        waiting = set(pending)
        for rel in stamps:
            row = rows.get(rel)
            if rel.lower().endswith(_PAIR_SUFFIXES) or rel in waiting or row is None:
                continue
            if row[-1] is not None:
                unreadable[self.inbox / rel] = row[-1]
                continue
            header = parsed.get(rel)
            if header is None:
                header = parsed[rel] = cached_header(self.inbox / rel, row)
            headers.append(header)
        gone = [rel for rel in cached if rel not in stamps]
        relisted = {p: item for p, item in walk.listings.items() if item is not known.listings.get(p)}
        removed = [p for p in known.listings if p not in walk.listings]
        new_unusable = None if set(unusable) == known.reported else list(unusable)

        has_pairs = any(rel.lower().endswith(_PAIR_IMAGE_SUFFIXES) for rel in stamps)
        snapshot = self._group(group_headers(headers, unreadable), stamps, set(fresh), has_pairs)
        snapshot.pending = pending
        snapshot.header_reads = len(fresh)
        snapshot.folders_listed = walk.listed
        snapshot.ignored.update(unusable)
        snapshot.new_ignored.update({name: why for name, why in unusable.items() if name not in known.reported})
        blocked = {_top_folder(rel) for rel in pending}
        if blocked:
            snapshot.waiting_for_headers = {
                key
                for key, entry in snapshot.patients.items()
                if any(_top_folder(f.path) in blocked for f in entry.files)
            }
        # Image/mask pairs are matched by a walk of their own with settings that may change between calls.
        reusable = not has_pairs and not pending
        grouping = (
            _GroupingWrite(snapshot.n_files, whole=True, patients=snapshot.patients.values(), ignored=snapshot.ignored)
            if reusable
            else None
        )
        generation, current = self._write(
            con, known.generation, relisted, removed, list(fresh.values()), gone, full_ns, new_unusable, grouping
        )
        if not current:  # another process wrote meanwhile: the next call starts from the index file
            _KNOWN.pop(str(self.path), None)
            return snapshot
        rels_of_id = _rels_of_id(rows) if reusable else None
        _KNOWN[str(self.path)] = _KnownIndex(
            generation=generation,
            listings=walk.listings,
            rows=rows,
            parsed=parsed,
            strings=strings,
            last_full_ns=full_ns or known.last_full_ns,
            reported=frozenset(unusable),
            snapshot=snapshot if reusable else None,
            rels_of_id=rels_of_id,
            ids_of_key=ids_of_key(rels_of_id, rows, _ISSUER) if rels_of_id is not None else None,
        )
        return snapshot

    def _with_stored_rows(self, con: sqlite3.Connection, known: _KnownIndex) -> _KnownIndex:
        """``known`` with the index file's header rows, so that a process's first change regroups only what it
        touches: the stored grouping is that of the stored rows (one transaction wrote both), unless another
        process changed the index since this call read the grouping (then without the grouping)."""
        strings: dict[str, str] = {}
        with con:
            con.execute("BEGIN")
            current = _generation(con)
            rows = _stored_rows(con, strings)
        if current != known.generation:
            return replace(known, rows=rows, strings=strings, snapshot=None)
        listed = {prefix + f[0] for prefix, listing in known.listings.items() for f in listing.files}
        rows = {rel: row for rel, row in rows.items() if rel in listed}  # as the full path keeps them
        rels_of_id = _rels_of_id(rows)
        return replace(
            known, rows=rows, strings=strings, rels_of_id=rels_of_id, ids_of_key=ids_of_key(rels_of_id, rows, _ISSUER)
        )

    def _update_changed(
        self,
        con: sqlite3.Connection,
        known: _KnownIndex,
        walk: InboxWalk,
        change: InboxChange,
        started: float,
        max_header_reads: int | None,
        max_seconds: float | None,
        read_map: Callable | None,
    ) -> tuple[InboxSnapshot | None, tuple[dict[str, tuple], dict[str, DicomFile]]]:
        """The update of a complete previous grouping after a change: the changed files' headers read, and only
        the patients in the change's scope grouped again (``inbox_delta``).

        Returns the snapshot, or None with the rows read and headers built so far when the whole inbox must be
        grouped (a change too large, the read budget reached, or a new key equal to a patient's outside the scope,
        whose conflict the whole inbox decides)."""
        old, old_rows = known.snapshot, known.rows
        assert old is not None and old_rows is not None and known.rels_of_id is not None
        assert known.ids_of_key is not None
        stamps = {rel: FileStamp(rel, *stamp) for rel, stamp in change.files.items() if stamp is not None}
        stale = [
            rel
            for rel, stamp in stamps.items()
            if rel not in old_rows or old_rows[rel][1:3] != (stamp.size, stamp.mtime_ns)
        ]
        if len(stale) > (MAX_SCOPE_FILES if max_header_reads is None else min(MAX_SCOPE_FILES, max_header_reads)):
            return None, ({}, {})
        fresh, unread, built = self._read(stale, stamps, started, max_seconds, read_map, known.strings)
        if unread:
            return None, (fresh, built)
        rows = dict(old_rows)
        for rel, stamp in change.files.items():
            if stamp is None:
                rows.pop(rel, None)
        rows.update(fresh)
        rels_of_id = _moved_headers(known.rels_of_id, change.files, old_rows, rows)
        touched = {_header_id(old_rows.get(rel)) for rel in change.files} | {
            _header_id(rows.get(rel)) for rel in change.files
        }
        touched.discard(None)

        def old_files(key: str) -> list[str]:
            return [f.path for f in old.patients[key].files] if key in old.patients else []

        scope = change_scope(
            change, old_rows, rows, known.rels_of_id, rels_of_id, old_files, known.ids_of_key, walk.listings, _ISSUER
        )
        if scope is None:
            return None, (fresh, built)
        parsed = dict(known.parsed)
        for rel in change.files:
            parsed.pop(rel, None)
        parsed.update(built)
        headers = []
        for patient_id in scope.patient_ids:
            for rel in rels_of_id.get(patient_id, ()):
                header = parsed.get(rel)
                if header is None:
                    header = parsed[rel] = cached_header(self.inbox / rel, rows[rel])
                headers.append(header)
        in_scope = {
            prefix + name: FileStamp(prefix + name, *stamp)
            for prefix in scope.folders
            if prefix in walk.listings
            for name, *stamp in walk.listings[prefix].files
        }
        unreadable = {self.inbox / rel: rows[rel][-1] for rel in in_scope if rel in rows and rows[rel][-1] is not None}
        scan = group_headers(headers, unreadable)
        if not scan.patients.keys().isdisjoint(old.patients.keys() - scope.old_keys):
            return None, (fresh, built)
        part = self._group(scan, in_scope, set(fresh), has_pairs=False)
        patients = {key: entry for key, entry in old.patients.items() if key not in scope.old_keys}
        patients.update(part.patients)
        unusable = walk.unusable()
        ignored = {rel: why for rel, why in old.ignored.items() if folder_of(rel) not in scope.folders}
        ignored.update(part.ignored)
        ignored.update(unusable)
        part.new_ignored.update({name: why for name, why in unusable.items() if name not in known.reported})
        snapshot = InboxSnapshot(
            patients=patients,
            ignored=ignored,
            new_ignored=part.new_ignored,
            pending=[],
            header_reads=len(fresh),
            n_files=old.n_files + change.added,
            folders_listed=walk.listed,
        )
        grouping = _GroupingWrite(
            snapshot.n_files,
            removed_keys=scope.old_keys,
            patients=part.patients.values(),
            removed_ignored=[rel for rel in old.ignored if rel not in ignored],
            ignored={rel: why for rel, why in ignored.items() if old.ignored.get(rel) != why},
        )
        generation, current = self._write(
            con,
            known.generation,
            {p: item for p, item in walk.listings.items() if item is not known.listings.get(p)},
            [p for p in known.listings if p not in walk.listings],
            list(fresh.values()),
            [rel for rel, stamp in change.files.items() if stamp is None and rel in old_rows],
            False,
            None if set(unusable) == known.reported else list(unusable),
            grouping,
        )
        if not current:  # another process wrote meanwhile: the next call starts from the index file
            _KNOWN.pop(str(self.path), None)
            return snapshot, ({}, {})
        _KNOWN[str(self.path)] = replace(
            known,
            generation=generation,
            listings=walk.listings,
            rows=rows,
            parsed=parsed,
            reported=frozenset(unusable),
            snapshot=snapshot,
            rels_of_id=rels_of_id,
            ids_of_key=moved_ids_of_key(
                known.ids_of_key, touched, (known.rels_of_id, old_rows), (rels_of_id, rows), _ISSUER
            ),
        )
        return snapshot, ({}, {})

    def _read(
        self,
        stale: list[str],
        stamps: dict[str, FileStamp],
        started: float,
        max_seconds: float | None,
        read_map: Callable | None,
        strings: dict[str, str],
    ) -> tuple[dict[str, tuple], list[str], dict[str, DicomFile]]:
        """Index rows of the ``stale`` files read within ``max_seconds`` of ``started``, those left unread, and
        the headers of the rows read (built while a pool reads on).

        Read here, the time budget is checked before every read; read by a pool, in chunks of READ_CHUNK
        files (each chunk's rows come back as plain tuples: cheap to send between processes), after every
        chunk. A pool of ``read_workers()`` processes is started for the call when ``read_map`` is None and at
        least PARALLEL_MIN_READS headers are to be read."""
        fresh: dict[str, tuple] = {}
        built: dict[str, DicomFile] = {}

        def keep(rows: list[tuple]) -> None:
            for row in rows:
                row = fresh[row[0]] = _shared(row, strings)
                if row[-1] is None:
                    built[row[0]] = cached_header(self.inbox / row[0], row)

        items = [(rel, stamps[rel].size, stamps[rel].mtime_ns) for rel in stale]
        workers = read_workers() if read_map is None and len(stale) >= PARALLEL_MIN_READS else 1
        if workers == 1 and read_map in (None, map):
            for done, item in enumerate(items):
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    return fresh, stale[done:], built
                keep(_read_rows(str(self.inbox), [item]))
            return fresh, [], built
        with contextlib.ExitStack() as stack:
            if read_map is None:
                # A fork starts at once (a spawned worker imports the package first, ~2 s of CPU each), but copies
                # other threads' locks mid-use: the sensor runs in a threaded server, so there workers are spawned.
                single_thread = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
                context = multiprocessing.get_context("fork" if single_thread else "spawn")
                pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=context))
                stack.callback(pool.shutdown, wait=False, cancel_futures=True)
                read_map = pool.map
            # A given map may batch tasks itself (``radiomics-assets run``: 32 per batch): smaller tasks keep the
            # batches small enough to spread over its workers.
            size = READ_CHUNK if workers > 1 else GIVEN_POOL_CHUNK
            chunks = [items[start : start + size] for start in range(0, len(items), size)]
            results = read_map(_read_rows_task, [(str(self.inbox), chunk) for chunk in chunks])
            for done, rows in enumerate(results):
                keep(rows)
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    return fresh, stale[(done + 1) * size :], built
        return fresh, [], built

    def _write(
        self,
        con: sqlite3.Connection,
        expected_generation: str | None,
        relisted: dict[str, FolderListing],
        removed: list[str],
        rows: list[tuple],
        gone: list[str],
        full_ns: int | bool,
        unusable: list[str] | None,
        grouping: _GroupingWrite | None,
    ) -> tuple[str, bool]:
        """Store the changes of one call in one transaction; returns the index's new generation and whether this
        call's state is the index's (False: another writer wrote since the call read it).

        The stored grouping is changed as ``grouping`` says, or no longer valid (None: it cannot be reused). A grouping
        is stored only over the index this call started from: when another process (or thread) wrote the index since
        (its generation is not ``expected_generation``), this call's walk may be older than that write, so the
        stored grouping is dropped instead; a change of part of it also needs the stored grouping to be the one the
        call started from. The caller then forgets what it knew of the index (``_KNOWN``), also when it had no
        grouping to store (its memory would be written over the other writer's listings later), and the next call,
        in any process, loads the index file and groups the whole inbox."""
        generation = uuid.uuid4().hex
        with con:
            con.execute("BEGIN IMMEDIATE")  # no other writer between the check and the writes
            meta = dict(con.execute("SELECT name, value FROM meta"))
            current = meta.get("generation") == expected_generation and (
                grouping is None or grouping.whole or meta.get("grouping_generation") == expected_generation
            )
            if not current:
                grouping = None
            con.executemany(f"INSERT OR REPLACE INTO headers VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
            con.executemany("DELETE FROM headers WHERE path = ?", [(rel,) for rel in gone])
            con.executemany(
                "INSERT OR REPLACE INTO folders VALUES (?, ?)",
                [(prefix, _listing_json(listing)) for prefix, listing in relisted.items()],
            )
            con.executemany("DELETE FROM folders WHERE prefix = ?", [(prefix,) for prefix in removed])
            if unusable is not None:
                con.execute("DELETE FROM unusable_names")
                con.executemany("INSERT INTO unusable_names VALUES (?)", [(name,) for name in unusable])
            if full_ns:
                con.execute("INSERT OR REPLACE INTO meta VALUES ('last_full_ns', ?)", (str(full_ns),))
            con.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (generation,))
            if grouping is None:
                con.execute("DELETE FROM meta WHERE name = 'grouping_generation'")
                return generation, current
            if grouping.whole:
                con.execute("DELETE FROM grouping_patients")
                con.execute("DELETE FROM grouping_ignored")
            con.executemany("DELETE FROM grouping_patients WHERE key = ?", [(key,) for key in grouping.removed_keys])
            con.executemany("DELETE FROM grouping_ignored WHERE path = ?", [(rel,) for rel in grouping.removed_ignored])
            con.executemany(
                "INSERT OR REPLACE INTO grouping_patients VALUES (?, ?)",
                [(entry.key, _entry_json(entry)) for entry in grouping.patients],
            )
            con.executemany("INSERT OR REPLACE INTO grouping_ignored VALUES (?, ?)", list(grouping.ignored.items()))
            con.execute("INSERT OR REPLACE INTO meta VALUES ('grouping_generation', ?)", (generation,))
            con.execute("INSERT OR REPLACE INTO meta VALUES ('grouping_n_files', ?)", (str(grouping.n_files),))
        return generation, True

    def _group(
        self, scan: InboxScan, stamps: dict[str, FileStamp], read_now: set[str], has_pairs: bool
    ) -> InboxSnapshot:
        prefix = len(str(self.inbox)) + 1

        def rel(path: Path) -> str:  # every path here was built as inbox / relative path; slicing is fast
            return str(path)[prefix:]

        patients: dict[str, PatientEntry] = {}
        used: set[str] = set()
        for key, files in scan.patients.items():
            dicom = [rel(p) for p in files.paths] + [rel(p) for p in files.unreadable]
            why = {rel(p): reason for p, reason in files.unreadable.items()}
            patients[key] = PatientEntry(key=key, dicom=sorted(dicom), pair=None, files=[], unreadable=why)
            used.update(dicom)
        pairs, incomplete = (
            scan_file_pairs(self.inbox, accept_maskless=self.accept_maskless) if has_pairs else ({}, {})
        )  # skip a second walk
        for key, pair in pairs.items():
            if key in patients:
                # DICOM files and an image/mask pair with one key: the DICOM patient is read, the pair listed.
                for path in pair.paths:
                    incomplete[path] = pair_beside_dicom(path, key)
                continue
            entry = patients.setdefault(key, PatientEntry(key=key, dicom=[], pair=None, files=[], unreadable={}))
            entry.pair = {
                "kind": pair.kind,
                "image": rel(pair.image),
                "masks": [rel(p) for p in pair.masks],
                "sidecar": rel(pair.sidecar) if pair.sidecar else None,
            }
            used.update(rel(p) for p in pair.paths)
        for entry in patients.values():
            names = entry.dicom + (_pair_paths(entry.pair) if entry.pair else [])
            entry.files = [stamps[name] for name in sorted(set(names)) if name in stamps]
        ignored = {rel(p): why for p, why in {**scan.ignored, **incomplete}.items() if rel(p) not in used}
        return InboxSnapshot(
            patients=patients,
            ignored=ignored,
            new_ignored={r: ignored[r] for r in sorted(read_now) if r in ignored},
            pending=[],
            header_reads=0,
            n_files=len(stamps),
        )


def _pair_paths(pair: dict) -> list[str]:
    return [pair["image"], *pair["masks"], *([pair["sidecar"]] if pair["sidecar"] else [])]


def cached_rows(root: DataRoot, rels: list[str]) -> dict[str, tuple]:
    """The index's rows for these inbox-relative paths (none when there is no index yet)."""
    if not rels or not index_path(root).exists():
        return {}
    con = sqlite3.connect(index_path(root), timeout=60)
    try:
        rows = {}
        for start in range(0, len(rels), 500):  # SQLite's limit on bound parameters
            chunk = rels[start : start + 500]
            query = f"SELECT {', '.join(_COLUMNS)} FROM headers WHERE path IN ({', '.join('?' * len(chunk))})"
            rows.update({row[0]: row for row in con.execute(query, chunk)})
        return rows
    except sqlite3.OperationalError:  # an index written by another version: the cache is only a shortcut
        return {}
    finally:
        con.close()
