"""The inbox sensor's decision per patient: register, re-run, adopt or wait until its files are stable."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from radiomics_assets.errors import ManifestError
from radiomics_assets.ingest.inbox_index import InboxSnapshot
from radiomics_assets.ingest.manifests import manifest_fingerprint
from radiomics_assets.paths import DataRoot


@dataclass
class RegistrationPlan:
    """What the inbox sensor does this tick; ``seen`` is the cursor for the next tick."""

    register: list[str] = field(default_factory=list)
    """New patients whose files are stable: add the partition and run it."""
    rerun: list[str] = field(default_factory=list)
    """Registered patients whose stable files changed since their manifest (e.g. a series that arrived later)."""
    adopt: list[str] = field(default_factory=list)
    """Registered partitions without a manifest (data roots from before manifests): write it, do not re-run."""
    waiting: dict[str, str] = field(default_factory=dict)
    """Patient key -> why it is not registered or re-run yet."""
    seen: dict[str, str] = field(default_factory=dict)
    """Fingerprints of the patients still waiting, to compare with on the next tick."""


def plan_registrations(
    root: DataRoot,
    snapshot: InboxSnapshot,
    previous_seen: dict[str, str],
    known: set[str],
    settle_seconds: float,
    now_ns: int | None = None,
) -> RegistrationPlan:
    """Decide per patient: a patient is acted on only when its files are the same as on the previous tick
    (``previous_seen``) and none of them changed in the last ``settle_seconds``, so a study still being copied
    is left alone until the copy is finished."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    plan = RegistrationPlan()
    for key, entry in sorted(snapshot.patients.items()):
        fingerprint = entry.fingerprint
        try:
            registered = manifest_fingerprint(root, key) if key in known else None
        except ManifestError:  # a damaged manifest: write it again and re-run rather than stop every patient
            registered = ""
        if registered == fingerprint:
            continue  # registered, and its files are the ones its partition reads
        plan.seen[key] = fingerprint
        age_s = (now_ns - entry.newest_change_ns) / 1e9
        if key in snapshot.waiting_for_headers:
            plan.waiting[key] = "headers of files beside it are not read yet"
        elif previous_seen.get(key) != fingerprint:
            plan.waiting[key] = "files new or changed since the previous tick"
        elif age_s < settle_seconds:
            plan.waiting[key] = f"newest file changed {age_s:.0f} s ago (settle time {settle_seconds:g} s)"
        else:
            del plan.seen[key]
            if key not in known:
                plan.register.append(key)
            elif registered is None:
                plan.adopt.append(key)
            else:
                plan.rerun.append(key)
    return plan
