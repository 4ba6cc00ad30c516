"""Walk the inbox: every file under it, following symlinked folders, each real folder once."""

from __future__ import annotations

import os
from pathlib import Path


def inbox_entries(inbox: Path) -> list[tuple[str, os.stat_result]]:
    """Every non-hidden file under ``inbox`` as (path relative to ``inbox`` with ``/``, ``stat``), sorted.

    Symlinked folders are followed (studies are often linked in), but each real folder is listed once, so a link
    loop or two links to the same study cannot repeat files. Files that vanish or cannot be stat'ed are skipped.
    Plain strings, not ``Path`` objects: this runs on every sensor tick over the whole inbox.
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
            try:
                if entry.is_dir(follow_symlinks=True):
                    stack.append((entry.path, f"{prefix}{entry.name}/"))
                elif entry.is_file(follow_symlinks=True):
                    found.append((prefix + entry.name, entry.stat(follow_symlinks=True)))
            except OSError:  # removed while listing, or a broken link
                continue
    return sorted(found, key=lambda item: item[0].split("/"))


def inbox_files(inbox: Path) -> list[Path]:
    """Every non-hidden file under ``inbox``, following symlinked folders (see :func:`inbox_entries`)."""
    return [Path(inbox) / rel for rel, _ in inbox_entries(inbox)]
