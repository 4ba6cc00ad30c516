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
from datetime import UTC, datetime
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
        r"not a DICOM file|unreadable DICOM|incomplete DICOM header|unreadable RTSTRUCT|unreadable DICOM-SEG"
        r"|pixel data unreadable",
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
        r"empty mask|is empty on series|ROI '.*' is empty",
        "draw the lesion in the mask (or remove the patient: a mask without lesion gives no features)",
    ),
    KnownProblem(
        r"parameter file not found|invalid PyRadiomics parameter file|no parameter file for modality",
        "fix or add the PyRadiomics parameter file (RADIOMICS_PARAMS_DIR holds one <modality>.yaml each)",
    ),
    KnownProblem(
        r"no RTSTRUCT or DICOM-SEG in .* automated segmentation is off|no mask file beside it",
        "add the patient's RTSTRUCT/DICOM-SEG (or <id>_mask file) to the inbox, or set auto_segmentation "
        "(RADIOMICS_AUTO_SEGMENTATION) and, for seeded methods, a seed in seeds.csv",
    ),
    KnownProblem(
        r"has a contour at slice index .* outside the image",
        "the RTSTRUCT was drawn on another series: add that series to the inbox, or re-export the contours on this "
        "series from the planning system",
    ),
    KnownProblem(
        r"grey levels, more than the maximum",
        "check the series' units and the parameter file's binWidth for this modality (RADIOMICS_PARAMS_DIR), or "
        "raise max_grey_levels (RADIOMICS_MAX_GREY_LEVELS)",
    ),
    KnownProblem(r"labels file not found", "write labels.csv (patient_id,label) in the data root"),
    KnownProblem(
        r"feature store busy",
        "close or stop the process named (notebooks should open radiomics.duckdb read-only, e.g. with "
        "radiomics_assets.open_features(), never the working store in .radiomics/), then re-run the patient; "
        "a long write of another pipeline process: raise RADIOMICS_WAREHOUSE_LOCK_TIMEOUT",
    ),
)
"""Known problems, first match wins (a corrupt file first: it also makes its series look incomplete).
Messages that already say their fix (``resample_masks_to_image``, ``auto_segmentation``, "delete it to rescan")
need no entry."""

FIX_SEPARATOR = "; fix: "


INLINE_FIX_VERBS = frozenset(
    "add choose convert correct delete export give move raise re-export remove rename resample set use".split()
)
"""First words of a fix a message already ends with (``...: a cine loop of 12 frames; choose one in ...``)."""


def fix_hint(message: str) -> str | None:
    """What fixes the problem ``message`` describes: a known problem's fix, else the fix the message itself ends
    with (a last ``; <verb> ...`` clause, e.g. the PET and ultrasound checks write their own), else None."""
    for problem in KNOWN_PROBLEMS:
        if re.search(problem.pattern, message):
            return problem.fix
    if FIX_SEPARATOR in message:
        return message.rsplit(FIX_SEPARATOR, 1)[1].strip() or None
    last = message.rsplit("; ", 1)[-1].strip() if "; " in message else ""
    if last and last.split(" ", 1)[0].lower().rstrip(",") in INLINE_FIX_VERBS:
        return last
    return None


def with_fix(message: str) -> str:
    """``message`` with its fix appended (``<message>; fix: <hint>``) when known; unchanged if it already has it."""
    hint = fix_hint(message)
    if hint is None or FIX_SEPARATOR in message or hint in message:
        return message
    return f"{message}{FIX_SEPARATOR}{hint}"


LOGGED_BY_TAG = "radiomics/failure_logged_by"
"""Run tag of runs whose failure the launching process logs itself (``radiomics-assets run``); the run-failure
sensor skips them, so a daemon on the same instance does not log them twice."""


def run_errors(step_failures) -> list[str]:
    """``<step>: <problem>[; fix: <hint>]`` for each failed step, one entry per failed patient (the batch step's
    message has a line each). ``step_failures``: (step key, Dagster error info) pairs."""
    return [
        f"{step}: {with_fix(line)}"
        for step, error in step_failures
        if error is not None
        for line in domain_error_message(error).splitlines()
    ]


def run_record(run_id: str, job: str, partition: str | None, failed_steps: list[str], errors: list[str]) -> dict:
    """The one line of a failed run, the same whether the sensor or the headless CLI writes it."""
    return {
        "logged_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
        "job": job,
        "partition": partition,
        "failed_steps": failed_steps,
        "errors": errors,
    }


@dataclass(frozen=True)
class PatientFailure:
    """One failed patient read back from a log line: ``<step>: <patient> <stage>: <problem>[; fix: <hint>]``."""

    logged_at: str
    patient: str
    stage: str
    problem: str
    fix: str


_PATIENT_ERROR = re.compile(
    r"^(?P<step>[\w.]+): (?P<patient>[A-Za-z0-9_-]+) (?P<stage>studies|roi_masks|features|dicom_exports): "
    r"(?P<message>.*)$",
    re.S,
)


def patient_failures(log_path: Path) -> list[PatientFailure]:
    """Every failed patient in the log, oldest first (lines that are not JSON, or errors of other steps, skipped)."""
    log_path = Path(log_path)
    if not log_path.exists():
        return []
    found = []
    for text in log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(text)
        except ValueError:
            continue
        for error in record.get("errors") or []:
            matched = _PATIENT_ERROR.match(str(error))
            if matched:
                problem, _, fix = matched["message"].partition(FIX_SEPARATOR)
                fix = fix or fix_hint(problem) or ""
                found.append(
                    PatientFailure(str(record.get("logged_at", "")), matched["patient"], matched["stage"], problem, fix)
                )
    return found


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
