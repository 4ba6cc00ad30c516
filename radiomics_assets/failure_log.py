"""The operators' failure log: one JSON line per failed run in ``<data root>/logs/failures.log``.

Optionally each line is also handed to a notification command on stdin, so e-mail or chat needs no code:
``mail -s "radiomics run failed" ops@example.org`` or
``curl -sS -X POST -H "Content-Type: application/json" --data-binary @- https://chat.example.org/hooks/...``.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path


def innermost_error(error):
    """The innermost error that is not Dagster's own wrapper (``SerializableErrorInfo``-like: cls_name/cause)."""
    while error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    return error


def domain_error_message(error) -> str:
    """The message of :func:`innermost_error`, without the exception class for a deliberate ``Failure``."""
    error = innermost_error(error)
    message = error.message.strip()
    if error.cls_name == "Failure":  # dg.Failure raised on purpose: its description is the whole message
        message = message.split(": ", 1)[-1]
    return message


@dataclass(frozen=True)
class KnownProblem:
    """A problem recognised in an error message (``pattern``, a regular expression) and what fixes it."""

    pattern: str
    fix: str


KNOWN_PROBLEMS = (
    KnownProblem(
        r"no ROI matches|no segment label matches",
        "set `roi_pattern` (the radiomics resource) to a regular expression matching one of the names present",
    ),
    KnownProblem(r"needs a seed", "add a seed for this patient: a row patient_id,x,y,z,modality (mm) in seeds.csv"),
    KnownProblem(
        r"seed .* lies outside the image|did not include the seed",
        "move this patient's seed in seeds.csv inside the lesion (patient coordinates, mm)",
    ),
    KnownProblem(
        r"not a DICOM file|unreadable DICOM|incomplete DICOM header|unreadable RTSTRUCT|unreadable DICOM-SEG",
        "copy the file again from its source (it is truncated or corrupt), or remove it from the inbox",
    ),
    KnownProblem(
        r"a slice is missing or out of place",
        "re-export the complete series, or remove the stray slice from the inbox",
    ),
    KnownProblem(
        r"duplicate slice at position", "remove the duplicate file (the series was copied into the inbox twice?)"
    ),
    KnownProblem(
        r"missing image geometry",
        "remove the file (a secondary capture, dose report or scout has no image geometry) or re-export the series",
    ),
    KnownProblem(
        r"orientation .* differs from|rows/columns/pixel spacing .* differ from",
        "the folder holds two series under one SeriesInstanceUID: re-export them as separate series",
    ),
    KnownProblem(
        r"no image series of this patient has that frame of reference|no series fits its contours",
        "add the image series the contours were drawn on (same FrameOfReferenceUID) to the patient's inbox folder",
    ),
    KnownProblem(r"several series fit its contours", "keep only the series the contours were drawn on in the inbox"),
    KnownProblem(
        r"mask size .* differs from its image",
        "use the mask exported with this image (same rows and columns)",
    ),
    KnownProblem(r"multi-component image", "convert the image to one channel (greyscale) before dropping it in"),
    KnownProblem(r"multi-component mask", "convert the mask to a single-channel label image"),
    KnownProblem(
        r"empty mask|is empty on series",
        "draw the lesion in the mask (or remove the patient: a mask without lesion gives no features)",
    ),
    KnownProblem(
        r"parameter file not found|invalid PyRadiomics parameter file|no parameter file for modality",
        "fix or add the PyRadiomics parameter file (RADIOMICS_PARAMS_DIR holds one <modality>.yaml each)",
    ),
    KnownProblem(r"labels file not found", "write labels.csv (patient_id,label) in the data root"),
)
"""Known problems, first match wins (a corrupt file first: it also makes its series look incomplete).
Messages that already say their fix (``resample_masks_to_image``, ``auto_segmentation``, "delete it to rescan")
need no entry."""

FIX_SEPARATOR = "; fix: "


def fix_hint(message: str) -> str | None:
    """What fixes the problem ``message`` describes, when it is a known one."""
    for problem in KNOWN_PROBLEMS:
        if re.search(problem.pattern, message):
            return problem.fix
    return None


def with_fix(message: str) -> str:
    """``message`` with its fix appended (``<message>; fix: <hint>``) when known; unchanged if it already has it."""
    hint = fix_hint(message)
    if hint is None or FIX_SEPARATOR in message:
        return message
    return f"{message}{FIX_SEPARATOR}{hint}"


def append(log_path: Path, record: dict) -> str:
    """Append ``record`` as one JSON line (created with its folder if missing); returns the line."""
    line = json.dumps(record, default=str, sort_keys=False)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as fh:
        fh.write(line + "\n")
    return line


def notify(command: str, line: str, timeout_s: float = 60) -> str | None:
    """Run ``command`` (shell-style words, no shell) with ``line`` on stdin; returns a problem or None."""
    try:
        done = subprocess.run(
            shlex.split(command), input=line + "\n", text=True, capture_output=True, timeout=timeout_s, check=False
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as error:
        return f"notification command {command!r} failed: {error}"
    if done.returncode != 0:
        return f"notification command {command!r} exited {done.returncode}: {done.stderr.strip()[:500]}"
    return None
