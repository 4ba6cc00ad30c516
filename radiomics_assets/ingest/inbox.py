"""Walk the inbox: every file under it, following symlinked folders, each real folder once."""

from __future__ import annotations

import os
from pathlib import Path


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
    loop or two links to the same study cannot repeat files. Files that vanish or cannot be stat'ed are skipped.
    A file or folder whose name is not valid UTF-8 is left out (with what is under it) and, when ``unusable``
    is given, recorded there as printable relative path -> why, so that one badly named folder costs only its
    own files, never the scan. Plain strings, not ``Path`` objects: this runs on every sensor tick over the whole
    inbox.
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
                entries = [e for e in listing if not e.name.startswith(".")]
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
