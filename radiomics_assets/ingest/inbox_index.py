"""Incremental index of the inbox: which files belong to which patient, without re-reading unchanged files.

Every call walks the inbox and ``stat``s each file (cheap), but reads a DICOM header only for a file that is new
or whose size or modification time changed since the previous call; the parsed headers are cached in
``<data root>/index/inbox.sqlite`` (a small SQLite file of its own, so the sensor never waits for the warehouse's
write lock). Header reads per call are capped; files beyond the cap stay *pending* and are read by later calls,
so an inbox of many thousands of files is indexed over several calls that each end in bounded time.

Per patient key the index gives the files (DICOM files plus unreadable files in their folders, or the
image/mask file pair), a fingerprint of those files (path, size, mtime) and the time of the newest change.
When a patient is registered or re-run, its files are written to a *manifest*
(``<data root>/manifests/<key>.json``): the patient's partition then reads only those files instead of
scanning the whole inbox, so its cost does not grow with the number of other patients.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from radiomics_assets.ingest.dicom_headers import DicomFile, InboxScan, group_headers, header_or_error
from radiomics_assets.ingest.file_pairs import PNG_SUFFIX, VOLUME_SUFFIXES, pair_beside_dicom, scan_file_pairs
from radiomics_assets.ingest.inbox import inbox_entries
from radiomics_assets.paths import DataRoot

DEFAULT_HEADER_READS = 2000
"""Header reads per call: ~0.4 ms each from a local disk, far more from a cold network share."""
DEFAULT_READ_SECONDS = 20.0
"""Stop reading headers after this long even below the count, so a slow share cannot hit the sensor timeout."""
READ_CHUNK = 256
"""Headers read between two checks of the time budget."""
_PAIR_SUFFIXES = (*VOLUME_SUFFIXES, PNG_SUFFIX, ".json")
_HEADER_COLUMNS = tuple(f.name for f in fields(DicomFile) if f.name != "path")
_COLUMNS = ("path", "size", "mtime_ns", *_HEADER_COLUMNS, "error")
_SCHEMA = f"""CREATE TABLE IF NOT EXISTS headers (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    {", ".join(f"{c} TEXT" for c in _HEADER_COLUMNS)}, error TEXT)"""


def index_path(root: DataRoot) -> Path:
    return root.path / "index" / "inbox.sqlite"


@dataclass(frozen=True)
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

    @property
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


def cached_header(path: Path, row: tuple) -> DicomFile:
    """The header of ``path`` from its row in the index (columns as in ``_COLUMNS``)."""
    return DicomFile(path, **dict(zip(_HEADER_COLUMNS, row[3:-1], strict=True)))


def _top_folder(rel: str) -> str:
    return rel.split("/", 1)[0]


def _header_row(rel: str, size: int, mtime_ns: int, header: DicomFile | None, error: str | None) -> tuple:
    values = tuple(getattr(header, c) for c in _HEADER_COLUMNS) if header else (None,) * len(_HEADER_COLUMNS)
    return (rel, size, mtime_ns, *values, error)


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
        return con

    def update(
        self,
        max_header_reads: int | None = DEFAULT_HEADER_READS,
        max_seconds: float | None = DEFAULT_READ_SECONDS,
        read_map: Callable = map,
    ) -> InboxSnapshot:
        """Walk the inbox, read the headers of new or changed files (within the budget) and group by patient.

        ``read_map`` maps the header reader over a list of paths: a process pool's ``map`` reads on all cores.
        """
        started = time.monotonic()
        unusable: dict[str, str] = {}
        stamps = {
            rel: FileStamp(rel, st.st_size, st.st_mtime_ns, max(st.st_mtime_ns, st.st_ctime_ns))
            for rel, st in inbox_entries(self.inbox, unusable)
        }

        con = self._connect()
        try:
            cached = {row[0]: row for row in con.execute(f"SELECT {', '.join(_COLUMNS)} FROM headers")}
            headers: list[DicomFile] = []
            unreadable: dict[Path, str] = {}
            pending: list[str] = []
            stale = [
                rel
                for rel, stamp in stamps.items()
                if not rel.lower().endswith(_PAIR_SUFFIXES)  # image/mask pairs are found by name, see scan_file_pairs
                and (rel not in cached or cached[rel][1:3] != (stamp.size, stamp.mtime_ns))
            ]
            if max_header_reads is not None:
                stale, pending = stale[:max_header_reads], stale[max_header_reads:]
            fresh: dict[str, tuple] = {}
            # The time budget is checked between steps: before every read when reading here, every READ_CHUNK
            # reads when a pool reads; without a budget everything goes to the pool at once.
            step = max(len(stale), 1) if max_seconds is None else 1 if read_map is map else READ_CHUNK
            for start in range(0, len(stale), step):
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    pending = stale[start:] + pending
                    break
                chunk = stale[start : start + step]
                results = read_map(header_or_error, [self.inbox / rel for rel in chunk])
                for rel, (header, error) in zip(chunk, results, strict=True):
                    fresh[rel] = _header_row(rel, stamps[rel].size, stamps[rel].mtime_ns, header, error)
            read_now, fresh_rows, reads = set(fresh), list(fresh.values()), len(fresh)
            waiting = set(pending)
            for rel in stamps:
                row = fresh[rel] if rel in fresh else cached.get(rel)
                if rel.lower().endswith(_PAIR_SUFFIXES) or rel in waiting or row is None:
                    continue
                path = self.inbox / rel
                if row[-1] is not None:
                    unreadable[path] = row[-1]
                else:
                    headers.append(cached_header(path, row))
            gone = [(rel,) for rel in cached if rel not in stamps]
            reported = {row[0] for row in con.execute("SELECT name FROM unusable_names")}
            with con:
                con.executemany(f"INSERT OR REPLACE INTO headers VALUES ({', '.join('?' * len(_COLUMNS))})", fresh_rows)
                con.executemany("DELETE FROM headers WHERE path = ?", gone)
                con.execute("DELETE FROM unusable_names")
                con.executemany("INSERT INTO unusable_names VALUES (?)", [(name,) for name in unusable])
        finally:
            con.close()

        has_pairs = any(rel.lower().endswith(_PAIR_SUFFIXES) for rel in stamps)
        snapshot = self._group(group_headers(headers, unreadable), stamps, read_now, has_pairs)
        snapshot.pending = pending
        snapshot.header_reads = reads
        snapshot.ignored.update(unusable)
        snapshot.new_ignored.update({name: why for name, why in unusable.items() if name not in reported})
        blocked = {_top_folder(rel) for rel in pending}
        snapshot.waiting_for_headers = {
            key for key, entry in snapshot.patients.items() if any(_top_folder(f.path) in blocked for f in entry.files)
        }
        return snapshot

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
