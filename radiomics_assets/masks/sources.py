"""Where a mask came from: the ``masks.source_kind`` column, defined once.

A mask is drawn by hand in an RTSTRUCT, a DICOM SEG or a label file beside its image, or made by one of the
automated segmentation methods (``auto:<method>``, the method names of ``masks.autoseg.METHODS``). The report,
the checklist, the DICOM exports and the candidate-feature option read the kind; none of them spells it out.
"""

from __future__ import annotations

from enum import StrEnum

AUTOMATED_PREFIX = "auto:"


class MaskSource(StrEnum):
    """The hand-drawn kinds; automated masks are ``automated_source(method)``."""

    RTSTRUCT = "rtstruct"
    SEG = "seg"
    FILE = "file"


def automated_source(method: str) -> str:
    """``masks.source_kind`` of a mask made by the automated segmentation ``method``."""
    return f"{AUTOMATED_PREFIX}{method}"


def is_automated(source_kind: object) -> bool:
    return str(source_kind).startswith(AUTOMATED_PREFIX)


def automated_method(source_kind: object) -> str:
    """The method of an ``auto:<method>`` kind (empty for a hand-drawn kind)."""
    return str(source_kind).removeprefix(AUTOMATED_PREFIX) if is_automated(source_kind) else ""


SEEDED_ULTRASOUND = automated_source("ultrasound")
"""The one-click ultrasound segmentation's masks (``masks.ultrasound``)."""
