"""Synthetic feature studies with a known signal, one per outcome type, for tests and benchmarks.

A study is what the modelling stage reads: a feature table (``patient_id`` + numeric columns, imported from
``<data root>/feature_tables/synthetic.csv``), ``labels.csv`` (``patient_id``, the outcome, clinical columns) and
``study.yaml`` typing the outcome. Nothing here touches images, Dagster or the warehouse.

Generative model (``spec`` = :class:`SyntheticStudy`; ``N(m, s)`` normal with SD ``s``; ``z`` standardised with the
population mean and SD, so that the truth is exact, not estimated):

* Radiomics features ``feat_000``, ``feat_001``, ... With ``correlated_blocks`` (like real radiomics, where many
  features measure the same thing) the first ``5 * F`` features form ``F = max(10, n_informative)`` correlated
  groups, assigned round-robin (feature ``j`` belongs to factor ``j mod F``):
  ``z_j = a_j * L_(j mod F) + sqrt(1 - a_j^2) * e_j`` with latent factors ``L ~ N(0, 1)``, loadings
  ``a_j ~ U(0.75, 0.95)`` (within-group correlations 0.56-0.90) and ``e_j ~ N(0, 1)``; the remaining features are
  independent ``N(0, 1)`` noise. Without ``correlated_blocks`` every feature is independent. Each feature is then
  put on a radiomics-like scale: ``feat_j = loc_j + scale_j * z_j`` with ``scale_j = 10^U(-2, 3)`` and
  ``loc_j = scale_j * U(-1, 5)``. The informative features ``feat_000 .. feat_(k-1)`` (``k = n_informative``) lie
  in distinct factors, so they are independent of each other; their group mates carry part of the signal too.
* Clinical columns (``covariates=True``): ``age`` in whole years, ``round(N(62, 10))`` clipped to 18-95,
  ``z_age = (age - 62) / 10``; ``sex`` M/F with probability 1/2 each, no signal; ``stage`` I/II/III with
  probabilities 0.40/0.35/0.25 and effect ``s_stage`` = -0.5/+0.1/+0.66 (mean 0, variance 0.21). About 3 % of
  ``age`` and of ``stage`` are then blanked (missing completely at random, after the outcome is drawn).
* The true linear predictor (log-odds / latent-score / mean / log-hazard scale, mean 0)::

      eta = effect * (z_000 + ... + z_(k-1)) / sqrt(k) + clinical_effect * (z_age + s_stage)

  ``Var(eta) = effect^2 + 1.21 * clinical_effect^2`` (1 + 1.21 = 2.21 at the defaults with covariates, 1 without).
  ``effect = 0`` with ``clinical_effect = 0`` (or with ``covariates=False``) gives ``eta = 0``: no signal at all.

Outcomes (``s = LOGIT_SCALE = 1.5``):

* ``binary``: ``P(malignant) = sigmoid(s * eta + b)``, the intercept ``b`` solved so that the mean probability on
  the cohort is 0.40; ``label`` is ``malignant`` or ``benign`` (the study says ``positive: malignant``).
* ``multiclass``: latent ``s * eta + e`` with standard logistic noise ``e``, cut at its sample quantiles
  ``1/K .. (K-1)/K`` (tertiles for K = 3) into ordered grades ``G1 .. GK`` of near-equal size; the true class
  probabilities are those of the ordered-logit model with these cut points.
* ``continuous``: ``label = eta + N(0, 1)`` rounded to 4 decimals, so the true model's R² is
  ``Var(eta) / (Var(eta) + 1)``: 0.50 without covariates, 0.69 with them.
* ``survival`` (months): event time ``T ~ Exponential(h)`` with hazard ``h = (ln 2 / 24) * exp(eta)`` per month
  (median 24 months at ``eta = 0``), censoring time ``C ~ Exponential(c)`` independent of ``T``, administrative
  censoring at ``MAX_FOLLOW_UP_MONTHS = 60``. ``c`` is solved so that the expected censored share
  ``1 - mean_i h_i / (h_i + c) * (1 - exp(-(h_i + c) * 60))`` equals ``censoring`` (0 when administrative
  censoring alone already reaches it). ``time_to_event = max(round(min(T, C, 60), 1), 0.1)``, ``event = 1`` when
  ``T`` came first. Horizons 12, 24 and 36 months all lie inside the follow-up.

Oracle figures: the metric of the true ``eta`` on the generated patients (:func:`oracle_metric`), i.e. the best a
model can do on that cohort, for judging what the pipeline recovers. Mean (SD) over seeds 0-19 at the defaults
(100 features, 3 informative, ``effect = clinical_effect = 1``, censoring 0.35):

=============  =============  ======================  ======================
outcome        metric         no covariates           with covariates
=============  =============  ======================  ======================
binary         AUC            0.79 (0.03)             0.88 (0.02)
multiclass     macro AUC      0.76 (0.02)             0.82 (0.02)
continuous     R²             0.50 (0.06)             0.69 (0.05)
survival       Harrell's C    0.73 (0.02)             0.79 (0.01)
survival n600  Harrell's C    0.73 (0.01)             0.80 (0.01)
=============  =============  ======================  ======================

(n = 200 unless stated; censored share 0.35 (0.02-0.03), about a quarter of the patients still followed at 36
months.) With ``effect = clinical_effect = 0`` ``eta`` is constant and nothing predicts the outcome: any model's
figure centres on chance (0.5; R² a little below 0). A model sees only ``k`` informative features among noise and
must estimate their weights, so its cross-validated figure is below the oracle, by more at small n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml

OutcomeName = Literal["binary", "multiclass", "continuous", "survival"]
OUTCOMES: tuple[str, ...] = ("binary", "multiclass", "continuous", "survival")

FEATURE_TABLE = "synthetic.csv"
"""The file written under ``<data root>/feature_tables/``."""
LABELS_FILE = "labels.csv"
STUDY_FILE = "study.yaml"
ID_PREFIX = "SYN-T"

N_FACTORS = 10
"""Latent factors of the correlated feature groups (more when ``n_informative`` is larger)."""
GROUP_SIZE = 5
"""Features per latent factor; features beyond ``GROUP_SIZE * factors`` are independent noise."""
LOADING_RANGE = (0.75, 0.95)
LOGIT_SCALE = 1.5
"""``s``: binary log-odds and multiclass latent score are ``s * eta`` (+ noise)."""
POSITIVE_SHARE = 0.40
CONTINUOUS_NOISE_SD = 1.0
BASE_HAZARD_PER_MONTH = math.log(2) / 24.0
"""Hazard at ``eta = 0``: median event time 24 months."""
MAX_FOLLOW_UP_MONTHS = 60.0
HORIZONS_MONTHS = (12, 24, 36)
AGE_MEAN, AGE_SD = 62.0, 10.0
STAGE_PROBABILITIES = {"I": 0.40, "II": 0.35, "III": 0.25}
STAGE_EFFECT = {"I": -0.5, "II": 0.1, "III": 0.66}
"""Log-scale effect of each stage; mean 0 under :data:`STAGE_PROBABILITIES`."""
MISSING_SHARE = 0.03
"""Share of ``age`` and of ``stage`` values left blank (missing completely at random)."""

# Independent random streams: the features of a seed are the same whatever the outcome type.
_FEATURE_STREAM, _CLINICAL_STREAM, _OUTCOME_STREAM, _MISSING_STREAM = 1, 2, 3, 4
_SITE_STREAM = 5


@dataclass(frozen=True, kw_only=True)
class SyntheticStudy:
    """What to generate; the generative model and its formulas are in the module docstring."""

    outcome: OutcomeName
    n_patients: int = 200
    n_features: int = 100
    n_informative: int = 3
    """Features ``feat_000 ..`` that carry the signal (in distinct latent factors)."""
    effect: float = 1.0
    """Weight of the radiomics signal in ``eta`` (SD of its part); 0 = none."""
    covariates: bool = True
    """Clinical columns ``age`` (signal), ``sex`` (none), ``stage`` (signal), ~3 % missing in age and stage."""
    clinical_effect: float = 1.0
    """Weight of the clinical part ``z_age + s_stage`` in ``eta``; 0 = clinical columns without signal."""
    censoring: float = 0.35
    """Survival: target share of censored patients (exponential censoring plus administrative at 60 months)."""
    n_classes: int = 3
    """Multiclass: number of ordered grades ``G1 .. GK`` (latent score cut at quantiles)."""
    correlated_blocks: bool = True
    """Features in correlated groups around latent factors (like real radiomics) plus independent noise."""
    sites: int = 1
    """Scanners / sites (issue 27): patients assigned round-robin, column ``site`` (``S1 ..``) of labels.csv and
    ``batch: {column: site}`` in the study when > 1."""
    site_shift: float = 0.0
    """Size of each site's scanner effect on every feature, on the standardised scale: ``z -> z * m + d`` with
    ``d ~ N(0, site_shift)`` (additive) and ``log m ~ N(0, site_shift / 2)`` (multiplicative), drawn per site and
    feature; independent of the outcome, so the truth (``eta``) is unchanged. 0 = no effect."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {list(OUTCOMES)}, got {self.outcome!r}")
        if self.n_patients < 10:
            raise ValueError(f"n_patients must be at least 10, got {self.n_patients}")
        if self.n_features < 1 or not 0 <= self.n_informative <= self.n_features:
            raise ValueError(
                f"need 0 <= n_informative <= n_features and n_features >= 1, got {self.n_informative} "
                f"and {self.n_features}"
            )
        if not 0.0 <= self.censoring < 0.95:
            raise ValueError(f"censoring must be a share in [0, 0.95), got {self.censoring}")
        if self.sites < 1 or self.site_shift < 0:
            raise ValueError(f"need sites >= 1 and site_shift >= 0, got {self.sites} and {self.site_shift}")
        if self.n_classes < 3:
            raise ValueError(f"n_classes must be at least 3 (two classes: outcome='binary'), got {self.n_classes}")

    def describe(self) -> str:
        """``SyntheticStudy(outcome='survival', n_patients=200, ...)`` with every field, for file headers."""
        values = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"SyntheticStudy({values})"


@dataclass(frozen=True)
class Oracle:
    """The metric of the true linear predictor ``eta`` on the generated (or given) outcomes."""

    metric: str
    """``auc`` (binary), ``macro_auc`` (multiclass, one-vs-rest), ``r2`` (continuous), ``harrell_c`` (survival)."""
    value: float
    chance: float
    n_patients: int

    def __str__(self) -> str:
        return (
            f"oracle {self.metric} {self.value:.3f} (true linear predictor on {self.n_patients} patients; "
            f"chance {self.chance:g})"
        )


@dataclass(frozen=True)
class _Draw:
    features: pd.DataFrame
    labels: pd.DataFrame
    study: dict
    eta: pd.Series
    cut_points: tuple[float, ...] = ()


def feature_names(n_features: int) -> list[str]:
    """``feat_000``, ``feat_001``, ... (more digits from 1001 features on)."""
    width = max(3, len(str(n_features - 1)))
    return [f"feat_{j:0{width}d}" for j in range(n_features)]


def patient_ids(n_patients: int) -> list[str]:
    """``SYN-T0001``, ``SYN-T0002``, ..."""
    width = max(4, len(str(n_patients)))
    return [f"{ID_PREFIX}{i:0{width}d}" for i in range(1, n_patients + 1)]


def _standard_features(spec: SyntheticStudy, rng: np.random.Generator) -> np.ndarray:
    """(n_patients, n_features) standard-normal features, grouped around latent factors when asked."""
    n, p = spec.n_patients, spec.n_features
    noise = rng.standard_normal((n, p))
    if not spec.correlated_blocks:
        return noise
    factors = max(N_FACTORS, spec.n_informative)
    grouped = min(p, GROUP_SIZE * factors)
    latent = rng.standard_normal((n, factors))
    loading = rng.uniform(*LOADING_RANGE, size=grouped)
    z = noise.copy()
    members = np.arange(grouped)
    z[:, :grouped] = loading * latent[:, members % factors] + np.sqrt(1 - loading**2) * noise[:, :grouped]
    return z


def _ordered_logit_probabilities(score: np.ndarray, cut_points: tuple[float, ...]) -> np.ndarray:
    """(n, K) class probabilities of the ordered-logit model ``P(Y <= k) = sigmoid(c_k - score)``."""
    cumulative = 1.0 / (1.0 + np.exp(-(np.asarray(cut_points)[None, :] - score[:, None])))
    cumulative = np.column_stack([np.zeros(len(score)), cumulative, np.ones(len(score))])
    return np.diff(cumulative, axis=1)


def _censoring_rate(hazard: np.ndarray, target: float, follow_up: float) -> float:
    """Exponential censoring rate ``c`` whose expected censored share (with administrative censoring) is ``target``."""

    def censored(rate: float) -> float:
        total = hazard + rate
        return float(1.0 - np.mean(hazard / total * (1.0 - np.exp(-total * follow_up))))

    if censored(0.0) >= target:
        return 0.0
    low, high = 0.0, 1.0
    while censored(high) < target:
        high *= 2.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if censored(middle) < target else (low, middle)
    return (low + high) / 2


def _binary_intercept(score: np.ndarray, share: float) -> float:
    """``b`` with ``mean(sigmoid(score + b)) = share`` (bisection; the mean is increasing in ``b``)."""
    low, high = -50.0, 50.0
    for _ in range(200):
        middle = (low + high) / 2
        mean = float(np.mean(1.0 / (1.0 + np.exp(-(score + middle)))))
        low, high = (middle, high) if mean < share else (low, middle)
    return (low + high) / 2


def _study_document(spec: SyntheticStudy) -> dict:
    outcome: dict
    if spec.outcome == "binary":
        outcome = {"type": "binary", "column": "label", "positive": "malignant"}
    elif spec.outcome == "multiclass":
        outcome = {"type": "multiclass", "column": "label", "classes": [f"G{k}" for k in range(1, spec.n_classes + 1)]}
    elif spec.outcome == "continuous":
        outcome = {"type": "continuous", "column": "label"}
    else:
        outcome = {
            "type": "survival",
            "time": "time_to_event",
            "event": "event",
            "unit": "months",
            "horizons": list(HORIZONS_MONTHS),
        }
    document: dict = {"outcome": outcome}
    if spec.covariates:
        document["covariates"] = {"numeric": ["age"], "categorical": ["sex", "stage"]}
        document["predictors"] = "compare"
    if spec.sites > 1:
        document["batch"] = {"column": "site"}
    return document


def _simulate(spec: SyntheticStudy) -> _Draw:
    n, k = spec.n_patients, spec.n_informative
    ids = patient_ids(n)

    rng = np.random.default_rng([spec.seed, _FEATURE_STREAM])
    z = _standard_features(spec, rng)
    scale = 10.0 ** rng.uniform(-2, 3, size=spec.n_features)
    loc = scale * rng.uniform(-1, 5, size=spec.n_features)
    eta_z = z[:, :k].copy()  # the truth is defined before any scanner effect
    site = np.arange(n) % spec.sites
    if spec.sites > 1 and spec.site_shift > 0:
        shift_rng = np.random.default_rng([spec.seed, _SITE_STREAM])
        additive = shift_rng.normal(0, spec.site_shift, size=(spec.sites, spec.n_features))
        multiplicative = np.exp(shift_rng.normal(0, spec.site_shift / 2, size=(spec.sites, spec.n_features)))
        z = z * multiplicative[site] + additive[site]
    features = pd.DataFrame(loc + scale * z, columns=feature_names(spec.n_features))
    features.insert(0, "patient_id", ids)
    eta = spec.effect * eta_z.sum(axis=1) / math.sqrt(k) if k else np.zeros(n)

    labels = pd.DataFrame({"patient_id": ids})
    clinical = pd.DataFrame(index=range(n))
    if spec.covariates:
        rng = np.random.default_rng([spec.seed, _CLINICAL_STREAM])
        age = np.clip(np.rint(rng.normal(AGE_MEAN, AGE_SD, size=n)), 18, 95)
        sex = rng.choice(np.array(["F", "M"]), size=n)
        stage = rng.choice(np.array(list(STAGE_PROBABILITIES)), size=n, p=list(STAGE_PROBABILITIES.values()))
        eta = eta + spec.clinical_effect * ((age - AGE_MEAN) / AGE_SD + np.vectorize(STAGE_EFFECT.get)(stage))
        missing = np.random.default_rng([spec.seed, _MISSING_STREAM])
        clinical["age"] = pd.Series(age, dtype="Int64").mask(missing.uniform(size=n) < MISSING_SHARE)
        clinical["sex"] = sex
        clinical["stage"] = pd.Series(stage, dtype=object).mask(missing.uniform(size=n) < MISSING_SHARE)

    rng = np.random.default_rng([spec.seed, _OUTCOME_STREAM])
    cut_points: tuple[float, ...] = ()
    if spec.outcome == "binary":
        score = LOGIT_SCALE * eta
        probability = 1.0 / (1.0 + np.exp(-(score + _binary_intercept(score, POSITIVE_SHARE))))
        labels["label"] = np.where(rng.uniform(size=n) < probability, "malignant", "benign")
    elif spec.outcome == "multiclass":
        latent = LOGIT_SCALE * eta + rng.logistic(size=n)
        cut_points = tuple(float(c) for c in np.quantile(latent, np.arange(1, spec.n_classes) / spec.n_classes))
        grade = np.searchsorted(np.asarray(cut_points), latent, side="right")
        labels["label"] = [f"G{g + 1}" for g in grade]
    elif spec.outcome == "continuous":
        labels["label"] = np.round(eta + CONTINUOUS_NOISE_SD * rng.standard_normal(n), 4)
    else:
        hazard = BASE_HAZARD_PER_MONTH * np.exp(eta)
        rate = _censoring_rate(hazard, spec.censoring, MAX_FOLLOW_UP_MONTHS)
        event_time = rng.exponential(1.0 / hazard)
        censor_time = rng.exponential(1.0 / rate, size=n) if rate > 0 else np.full(n, np.inf)
        observed = np.minimum(np.minimum(event_time, censor_time), MAX_FOLLOW_UP_MONTHS)
        labels["time_to_event"] = np.maximum(np.round(observed, 1), 0.1)
        labels["event"] = (event_time <= np.minimum(censor_time, MAX_FOLLOW_UP_MONTHS)).astype(int)
    labels = pd.concat([labels, clinical], axis=1)
    if spec.sites > 1:
        labels["site"] = [f"S{s + 1}" for s in site]
    return _Draw(
        features=features,
        labels=labels,
        study=_study_document(spec),
        eta=pd.Series(eta, index=pd.Index(ids, name="patient_id"), name="eta"),
        cut_points=cut_points,
    )


def make_study(spec: SyntheticStudy) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(features, labels, study document) of ``spec``; deterministic for ``spec.seed``.

    ``features``: ``patient_id`` + ``feat_000 ..`` (floats). ``labels``: ``patient_id``, the outcome (``label``;
    survival ``time_to_event`` in months > 0 and ``event`` 0/1) and, with covariates, ``age`` (years, nullable
    integer), ``sex`` (M/F), ``stage`` (I/II/III, None when missing). The document is ``study.yaml``'s content
    (``predictors: compare`` with covariates).
    """
    draw = _simulate(spec)
    return draw.features, draw.labels, draw.study


def true_risk(spec: SyntheticStudy) -> pd.Series:
    """The true linear predictor ``eta`` per patient id (the module docstring gives its formula)."""
    return _simulate(spec).eta


def harrell_c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index: higher ``risk`` should mean an earlier event.

    A pair (i, j) is comparable when ``event_i = 1`` and ``time_i < time_j`` (or ``time_i = time_j`` with j
    censored); it counts 1 when ``risk_i > risk_j``, 1/2 on a risk tie. Same convention as scikit-survival's
    ``concordance_index_censored``; O(n²) time, memory in row chunks.
    """
    time, event, risk = (np.asarray(v, dtype=float) for v in (time, event, risk))
    concordant = comparable = 0.0
    cases = np.flatnonzero(event == 1)
    for start in range(0, len(cases), 512):
        i = cases[start : start + 512]
        pairs = (time[i, None] < time[None, :]) | ((time[i, None] == time[None, :]) & (event[None, :] == 0))
        higher = risk[i, None] > risk[None, :]
        tied = risk[i, None] == risk[None, :]
        comparable += pairs.sum()
        concordant += (pairs & higher).sum() + 0.5 * (pairs & tied).sum()
    if comparable == 0:
        raise ValueError("no comparable pair (no event before another patient's follow-up ends)")
    return float(concordant / comparable)


def oracle_metric(spec: SyntheticStudy, labels: pd.DataFrame | None = None) -> Oracle:
    """The metric of the true ``eta`` on ``labels`` (default: the generated ones; e.g. :func:`permuted` ones).

    binary: ROC AUC of ``eta`` for ``label == malignant``; multiclass: macro one-vs-rest AUC of the ordered-logit
    class probabilities; continuous: R² of ``eta`` as the prediction of ``label``; survival: Harrell's C of
    ``eta`` against (``time_to_event``, ``event``). On permuted labels the rank metrics centre on 0.5; R² is
    negative (``eta`` itself, not refitted, predicts worse than the mean: about ``-Var(eta) / Var(label)``).
    """
    from sklearn.metrics import r2_score, roc_auc_score

    draw = _simulate(spec)
    labels = draw.labels if labels is None else labels
    eta = draw.eta.reindex(labels["patient_id"]).to_numpy()
    if np.isnan(eta).any():
        raise ValueError("labels hold patient ids that the spec does not generate")
    n = len(labels)
    if spec.outcome == "binary":
        return Oracle("auc", float(roc_auc_score(labels["label"] == "malignant", eta)), 0.5, n)
    if spec.outcome == "multiclass":
        classes = draw.study["outcome"]["classes"]
        probabilities = _ordered_logit_probabilities(LOGIT_SCALE * eta, draw.cut_points)
        value = roc_auc_score(labels["label"], probabilities, multi_class="ovr", average="macro", labels=classes)
        return Oracle("macro_auc", float(value), 0.5, n)
    if spec.outcome == "continuous":
        return Oracle("r2", float(r2_score(labels["label"].astype(float), eta)), 0.0, n)
    return Oracle("harrell_c", harrell_c_index(labels["time_to_event"], labels["event"], eta), 0.5, n)


def outcome_columns(study: dict) -> list[str]:
    """The labels.csv columns that hold the outcome of a study document."""
    outcome = study["outcome"]
    if outcome["type"] == "survival":
        return [outcome.get("time", "time_to_event"), outcome.get("event", "event")]
    return [outcome.get("column", "label")]


def permuted(labels: pd.DataFrame, study: dict, seed: int) -> pd.DataFrame:
    """``labels`` with the outcome shuffled between patients (survival: each (time, event) pair moves together).

    Patient ids and clinical columns stay in place, so neither the features nor the covariates predict the
    permuted outcome: the null of a permutation benchmark.
    """
    columns = outcome_columns(study)
    order = np.random.default_rng(seed).permutation(len(labels))
    out = labels.copy()
    for column in columns:
        out[column] = labels[column].to_numpy()[order]
    return out


def _header(spec: SyntheticStudy) -> str:
    return f"# Generated by radiomics_assets.synth_tables.write_study from {spec.describe()}\n"


def write_study(spec: SyntheticStudy, data_dir: Path | str, *, overwrite: bool = False) -> Path:
    """Write ``feature_tables/synthetic.csv``, ``labels.csv`` and ``study.yaml`` under ``data_dir``; returns it.

    Refuses (``ValueError``, nothing written) when ``labels.csv``, ``study.yaml`` or the feature table exists
    already, unless ``overwrite``.
    """
    root = Path(data_dir)
    table = root / "feature_tables" / FEATURE_TABLE
    targets = [root / LABELS_FILE, root / STUDY_FILE, table]
    present = [str(path) for path in targets if path.exists()]
    if present and not overwrite:
        raise ValueError(f"{', '.join(present)} exist(s) already; pass overwrite=True (CLI: --overwrite) to replace")
    features, labels, study = make_study(spec)
    table.parent.mkdir(parents=True, exist_ok=True)
    features.to_csv(table, index=False)
    labels.to_csv(root / LABELS_FILE, index=False)
    (root / STUDY_FILE).write_text(_header(spec) + yaml.safe_dump(study, sort_keys=False))
    return root


__all__ = [
    "FEATURE_TABLE",
    "OUTCOMES",
    "Oracle",
    "SyntheticStudy",
    "feature_names",
    "harrell_c_index",
    "make_study",
    "oracle_metric",
    "outcome_columns",
    "patient_ids",
    "permuted",
    "true_risk",
    "write_study",
]
