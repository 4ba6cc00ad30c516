"""Model history and promotion: every trained model is kept, and a regression check decides which one serves.

Layout under ``<data root>/models/``:

- ``<version>/`` one folder per trained model (version = UTC training time, ``20261127T031500Z``), holding a
  copy of every file training wrote at the top level (``model.pkl``, ``model_card.json``, ``cv_results.pkl``).
- ``history.jsonl`` one JSON line per decision: trained, promoted or kept as a candidate, with both AUCs.
- ``current`` the version that serves (plain text, one line).
- the top-level files are always the *current* model's: ``predictions``, ``selected_features`` and
  ``validation_report`` read them, so they use the promoted model without knowing about versions.

Regression rule: the new model's cross-validated primary metric (binary: AUC; multiclass: macro AUC; continuous:
R²; survival: Harrell's c-index; higher is better for each) is compared with the current model's; more than
``margin`` below it is a regression. Models of another outcome type or metric are not compared (the first model of
a new study is promoted). Policy ``warn`` promotes anyway (the check warns); ``block`` keeps the
new model as a candidate and restores the current one. ``promote`` makes any kept version current
(rollback or accepting a candidate by hand): ``radiomics-assets models promote <version>``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

HISTORY = "history.jsonl"
CURRENT = "current"
POLICIES = ("warn", "block")
_REGISTRY_FILES = {HISTORY, CURRENT}


@dataclass(frozen=True)
class Decision:
    version: str
    cv_value: float
    """The new model's cross-validated primary metric."""
    previous_version: str | None
    previous_value: float | None
    margin: float
    policy: str
    regressed: bool
    promoted: bool
    current_version: str
    metric: str = "auc"

    @property
    def cv_auc(self) -> float:
        """The name of earlier, binary-only releases."""
        return self.cv_value

    @property
    def previous_auc(self) -> float | None:
        return self.previous_value

    def summary(self) -> str:
        label = f"CV {self.metric}"
        if self.previous_value is None:
            return f"first model {self.version} ({label} {self.cv_value:.3f}) promoted"
        change = (
            f"{label} {self.cv_value:.3f} vs {self.previous_value:.3f} of {self.previous_version} "
            f"(margin {self.margin})"
        )
        if not self.regressed:
            return f"{self.version} promoted: {change}"
        if self.promoted:
            return f"{self.version} promoted despite a regression (policy warn): {change}"
        return f"{self.version} kept as a candidate, {self.previous_version} stays current (policy block): {change}"


def card_metric(card: dict) -> tuple[str, float]:
    """(name, value) of the cross-validated primary metric a model card reports (binary cards of earlier
    releases: the AUC)."""
    primary = card.get("primary_metric") or card["cv_estimate"].get("primary_metric")
    if primary:
        return str(primary["name"]), float(primary["value"])
    return "auc", float(card["cv_estimate"]["auc"])


def card_auc(card: dict) -> float:
    """The card's cross-validated primary metric value (the AUC for a binary outcome)."""
    return card_metric(card)[1]


def current_version(models_dir: Path) -> str | None:
    pointer = Path(models_dir) / CURRENT
    if not pointer.exists():
        return None
    return pointer.read_text().strip() or None


def versions(models_dir: Path) -> list[str]:
    """Kept versions, oldest first."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if p.is_dir() and (p / "model_card.json").exists())


def load_card(models_dir: Path, version: str) -> dict:
    return json.loads((Path(models_dir) / version / "model_card.json").read_text())


def history(models_dir: Path) -> list[dict]:
    path = Path(models_dir) / HISTORY
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def register(models_dir: Path, card: dict, margin: float = 0.05, policy: str = "warn") -> Decision:
    """Keep the model just trained (top-level files of ``models_dir``) as a new version and decide promotion."""
    if policy not in POLICIES:
        raise ValueError(f"regression policy must be one of {POLICIES}, got {policy!r}")
    if margin < 0:
        raise ValueError(f"regression margin must be >= 0, got {margin}")
    models_dir = Path(models_dir)
    version = _new_version(models_dir, card.get("trained_at"))
    folder = models_dir / version
    folder.mkdir()
    for path in _artefacts(models_dir):
        shutil.copy2(path, folder / path.name)
    (folder / "model_card.json").write_text(json.dumps(card, indent=2, default=str))

    metric, new_value = card_metric(card)
    previous = current_version(models_dir)
    previous_value = None
    if previous:
        previous_card = load_card(models_dir, previous)
        previous_metric, value = card_metric(previous_card)
        same_study = previous_metric == metric and previous_card.get("task", "binary") == card.get("task", "binary")
        previous_value = value if same_study else None
    regressed = previous_value is not None and new_value < previous_value - margin
    promoted = not (regressed and policy == "block")
    if promoted:
        _set_current(models_dir, version)
    else:
        _restore_top_level(models_dir, previous)  # training overwrote them; the current model keeps serving
    decision = Decision(
        version,
        new_value,
        previous,
        previous_value,
        margin,
        policy,
        regressed,
        promoted,
        version if promoted else previous,
        metric,
    )
    _append_history(
        models_dir,
        {
            "event": "trained",
            "model_id": card.get("model_id"),
            "model": card.get("model"),
            "trained_at": card.get("trained_at"),
            **asdict(decision),
            "cv_auc": decision.cv_value,  # the key of earlier releases: the primary metric's value
            "previous_auc": decision.previous_value,
        },
    )
    return decision


def promote(models_dir: Path, version: str) -> None:
    """Make a kept version current (rollback, or accept a blocked candidate); its files become the top level."""
    models_dir = Path(models_dir)
    if version not in versions(models_dir):
        raise ValueError(f"{models_dir}: no kept model version {version!r}; kept: {versions(models_dir)}")
    previous = current_version(models_dir)
    _restore_top_level(models_dir, version)
    _set_current(models_dir, version)
    _append_history(
        models_dir,
        {
            "event": "promoted",
            "version": version,
            "previous_version": previous,
            "cv_value": card_auc(load_card(models_dir, version)),
            "cv_auc": card_auc(load_card(models_dir, version)),
        },
    )


def _artefacts(models_dir: Path) -> list[Path]:
    return [
        p
        for p in sorted(models_dir.iterdir())
        if p.is_file() and p.name not in _REGISTRY_FILES and not p.name.startswith(".")
    ]


def _new_version(models_dir: Path, trained_at: str | None) -> str:
    moment = datetime.fromisoformat(trained_at) if trained_at else datetime.now(UTC)
    stamp = moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    version, n = stamp, 1
    while (models_dir / version).exists():  # two trainings within one second (tests, quick re-runs)
        n += 1
        version = f"{stamp}-{n}"
    return version


def _restore_top_level(models_dir: Path, version: str) -> None:
    for path in _artefacts(models_dir):
        path.unlink()
    for path in sorted((models_dir / version).iterdir()):
        if path.is_file():
            shutil.copy2(path, models_dir / path.name)


def _set_current(models_dir: Path, version: str) -> None:
    tmp = models_dir / f".{CURRENT}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, models_dir / CURRENT)  # atomic: readers see the old or the new pointer


def _append_history(models_dir: Path, entry: dict) -> None:
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **entry}
    with open(models_dir / HISTORY, "a") as fh:
        fh.write(json.dumps(entry, default=str) + "\n")
