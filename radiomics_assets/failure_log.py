"""The operators' failure log: one JSON line per failed run in ``<data root>/logs/failures.log``.

Optionally each line is also handed to a notification command on stdin, so e-mail or chat needs no code:
``mail -s "radiomics run failed" ops@example.org`` or
``curl -sS -X POST -H "Content-Type: application/json" --data-binary @- https://chat.example.org/hooks/...``.
"""

from __future__ import annotations

import json
import shlex
import subprocess
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
