"""Walk the inbox: every file under it, following symlinked folders, each real folder once.

Two walks give the same files: :func:`inbox_entries` lists every folder and ``stat``s every file;
:func:`walk_inbox` with the listings of a previous walk lists again only the folders that may have changed and
keeps the stored entries of the others, so a walk of an unchanged inbox costs one ``stat`` per folder, not one
per file. A folder is listed again when

* its modification time (or the real folder behind its path) changed: a file or subfolder was added, removed or
  renamed in it;
* its previous listing was *racy*: taken less than ``RACY_SECONDS`` after the folder's modification time, so a
  change within the same timestamp tick (file systems with coarse times) could hide behind an equal time, as in
  git's index;
* it saw a change less than ``recent_seconds`` ago (its own time, or the mtime/ctime of a file in it): a file
  still being written changes no folder time, so the files of a folder are ``stat``ed on every walk while it is
  busy, and left alone once it has been quiet for that long.

What only a ``stat`` of the file itself can show, a file rewritten in place (same name) in a folder that has
been quiet longer than ``recent_seconds``, or the target of a symlinked file changing, is seen by the next full
walk (``walk_inbox`` without listings), which the inbox index runs periodically. Times come from the file
system and are compared with this machine's clock: a share whose clock runs behind by more than
``recent_seconds`` is quiet sooner.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

RACY_SECONDS = 2.0
"""A listing taken closer than this to its folder's modification time is not trusted on the next walk (FAT and
some network shares keep times in steps of 1-2 s)."""


def printable_name(name: str) -> str:
    """A file or folder name that is safe to print, log and store: bytes that are not UTF-8 shown as ``\\xe9``.

    Python keeps such bytes as lone surrogates (``os.fsdecode``), which no UTF-8 log, JSON file or SQLite text
    accepts.
    """
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def inbox_entries(inbox: Path, unusable: dict[str, str] | None = None) -> list[tuple[str, os.stat_result]]:
    """Every non-hidden file under ``inbox`` as (path relative to ``inbox`` with ``/``, ``stat``), sorted.

    Symlinked folders are followed (studies are often linked in), but each real folder is listed once, so a link
    loop or two links to the same study cannot repeat files (entries are taken in name order, so which of two
    links to one folder is used does not depend on the file system's listing order). Files that vanish or cannot
    be stat'ed are skipped. A file or folder whose name is not valid UTF-8 is left out (with what is under it)
    and, when ``unusable`` is given, recorded there as printable relative path -> why, so that one badly named
    folder costs only its own files, never the scan. Plain strings, not ``Path`` objects: this lists the whole
    inbox (full scans, image/mask pairs); the inbox index uses :func:`walk_inbox`.
    """
    found: list[tuple[str, os.stat_result]] = []
    visited: set[tuple[int, int]] = set()
    stack = [(str(inbox), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            folder_stat = os.stat(folder)
            if (folder_stat.st_dev, folder_stat.st_ino) in visited:
                continue
            visited.add((folder_stat.st_dev, folder_stat.st_ino))
            with os.scandir(folder) as listing:
                entries = sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if not _is_utf8(entry.name):
                if unusable is not None:
                    shown = printable_name(prefix + entry.name)
                    unusable[shown] = (
                        f"inbox/{shown}: name is not valid UTF-8; not read (with everything under it): rename it"
                    )
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    stack.append((entry.path, f"{prefix}{entry.name}/"))
                elif entry.is_file(follow_symlinks=True):
                    found.append((prefix + entry.name, entry.stat(follow_symlinks=True)))
            except OSError:  # removed while listing, or a broken link
                continue
    return sorted(found, key=lambda item: item[0].split("/"))


def inbox_files(inbox: Path, unusable: dict[str, str] | None = None) -> list[Path]:
    """Every non-hidden file under ``inbox``, following symlinked folders (see :func:`inbox_entries`)."""
    return [Path(inbox) / rel for rel, _ in inbox_entries(inbox, unusable)]


@dataclass(frozen=True)
class FolderListing:
    """One inbox folder as a walk listed it (see the module docstring for when it is listed again)."""

    dev: int
    ino: int
    mtime_ns: int
    listed_ns: int
    """This machine's clock when the listing started."""
    files: tuple[tuple[str, int, int, int], ...]
    """(name, size, mtime_ns, changed_ns) of each file, by name; changed_ns is the later of mtime and ctime."""
    folders: tuple[str, ...]
    """Subfolders (symlinked ones included), by name."""
    unusable: tuple[str, ...]
    """Printable names of entries that are not valid UTF-8 (left out, with everything under them)."""

    @property
    def newest_ns(self) -> int:
        return max([self.mtime_ns, *(f[3] for f in self.files)])

    def same_entries(self, other: FolderListing) -> bool:
        """The same folder with the same entries (the listing time aside)."""
        return (self.dev, self.ino, self.mtime_ns, self.files, self.folders, self.unusable) == (
            other.dev,
            other.ino,
            other.mtime_ns,
            other.files,
            other.folders,
            other.unusable,
        )


@dataclass
class InboxWalk:
    listings: dict[str, FolderListing]
    """Folder prefix ("" for the inbox, else "a/b/") -> its listing, for every folder reached."""
    listed: int
    """Folders listed by this walk (the others kept their previous listing)."""
    changed: bool
    """Whether any folder's entries differ from the previous listings (always True without them)."""

    def files(self) -> dict[str, tuple[int, int, int]]:
        """Inbox-relative path -> (size, mtime_ns, changed_ns), in :func:`inbox_entries`' order."""
        found = [
            (prefix + name, (size, mtime_ns, changed_ns))
            for prefix, listing in self.listings.items()
            for name, size, mtime_ns, changed_ns in listing.files
        ]
        # Ordered as the lists of path parts, cheaper: no name holds "\0", which sorts before every character.
        return dict(sorted(found, key=lambda item: item[0].replace("/", "\0")))

    def unusable(self) -> dict[str, str]:
        """Printable inbox-relative path -> why, for names that are not UTF-8 (as :func:`inbox_entries`)."""
        return {
            prefix + name: f"inbox/{prefix + name}: name is not valid UTF-8; not read (with everything under it): "
            "rename it"
            for prefix, listing in self.listings.items()
            for name in listing.unusable
        }


def _list_folder(folder: str, stat: os.stat_result) -> FolderListing | None:
    listed_ns = time.time_ns()
    try:
        with os.scandir(folder) as listing:
            entries = sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError:
        return None
    files, folders, unusable = [], [], []
    for entry in entries:
        if not _is_utf8(entry.name):
            unusable.append(printable_name(entry.name))
            continue
        try:
            if entry.is_dir(follow_symlinks=True):
                folders.append(entry.name)
            elif entry.is_file(follow_symlinks=True):
                st = entry.stat(follow_symlinks=True)
                files.append((entry.name, st.st_size, st.st_mtime_ns, max(st.st_mtime_ns, st.st_ctime_ns)))
        except OSError:  # removed while listing, or a broken link
            continue
    return FolderListing(
        stat.st_dev, stat.st_ino, stat.st_mtime_ns, listed_ns, tuple(files), tuple(folders), tuple(unusable)
    )


def walk_inbox(
    inbox: Path,
    previous: dict[str, FolderListing] | None = None,
    *,
    recent_seconds: float = 120.0,
    now_ns: int | None = None,
) -> InboxWalk:
    """Every folder under ``inbox`` listed, or kept from ``previous`` where it cannot have changed (see the
    module docstring); the same files as :func:`inbox_entries` (symlinked folders followed, each real folder
    once, hidden entries left out, names that are not UTF-8 in ``unusable``)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    recent_ns, racy_ns = int(recent_seconds * 1e9), int(RACY_SECONDS * 1e9)
    listings: dict[str, FolderListing] = {}
    visited: set[tuple[int, int]] = set()
    listed, changed = 0, previous is None
    stack = [(str(inbox), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            stat = os.stat(folder)
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) in visited:
            continue
        visited.add((stat.st_dev, stat.st_ino))
        old = previous.get(prefix) if previous else None
        if (
            old is not None
            and (old.dev, old.ino, old.mtime_ns) == (stat.st_dev, stat.st_ino, stat.st_mtime_ns)
            and old.listed_ns - old.mtime_ns >= racy_ns
            and now_ns - old.newest_ns >= recent_ns
        ):
            listing = old
        else:
            listing = _list_folder(folder, stat)
            if listing is None:
                continue
            listed += 1
            changed = changed or old is None or not listing.same_entries(old)
        listings[prefix] = listing
        stack.extend((f"{folder}/{name}", f"{prefix}{name}/") for name in listing.folders)
    if previous is not None and not changed:
        changed = listings.keys() != previous.keys()
    return InboxWalk(listings=listings, listed=listed, changed=changed)
