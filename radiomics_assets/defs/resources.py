"""The one resource: where the data lives and how to process it, built once from the environment."""

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import dagster as dg

from radiomics_assets import environment
from radiomics_assets.batch import PatientSettings
from radiomics_assets.features import DEFAULT_MAX_GREY_LEVELS, PARAMS_DIR, params_by_modality
from radiomics_assets.masks import AutoSegmentation, MaskOptions
from radiomics_assets.masks.autoseg import METHODS, maskless_images_accepted
from radiomics_assets.modelling.choices import ModelFamily, SelectionMethod
from radiomics_assets.modelling.settings import ModellingSettings
from radiomics_assets.modelling.study import Study, load_study
from radiomics_assets.paths import DataRoot, data_root
from radiomics_assets.warehouse import Warehouse

DUCKDB_WRITES = "duckdb_writes"
"""Concurrency pool of the assets that write DuckDB; its limit is set in dagster_instance.yaml."""


CandidateModel = ModelFamily
"""A model family the launchpad accepts in ``candidate_models`` (a list of Literal is not a Dagster config type);
which ones fit depends on the study's outcome type (``consensus``: binary, multiclass; ``linear``: continuous;
``coxnet``: survival)."""
SelectionMethodName = SelectionMethod
"""A selection method the launchpad accepts in ``selection_methods``."""
SelectionMethodOrDefault = Literal["", *(m.value for m in SelectionMethod)]
"""One selection method, or "" for the outcome type's default."""
AutoSegmentationMethod = Literal["", *METHODS]
"""An automated segmentation method (``masks.autoseg.METHODS``), or "" for off."""
RegressionPolicy = Literal["warn", "block"]


class RadiomicsConfig(dg.ConfigurableResource):
    """Where the data lives and how to process it. ``from_env`` fills the defaults a deployment sets by environment
    variables; the launchpad can override any field per run (enumerated fields are validated there)."""

    data_dir: str = ""
    """Data root; empty = ``$RADIOMICS_DATA_DIR`` (read when the run needs it), else ``data/`` in the project."""
    roi_pattern: str = "GTV.*"
    params_dir: str = ""
    """Folder of per-modality parameter files (``ct.yaml``, ``mr.yaml``, ``pt.yaml``, ``us.yaml``); empty = shipped."""
    params_file: str = ""
    """One PyRadiomics parameter file for every modality, instead of ``params_dir``'s per-modality files."""
    label_column: str = "label"
    min_roi_voxels: int = 64
    """Below this many voxels texture features are unreliable; the check warns."""
    seed: int = 0
    workers: int = int(environment.WORKERS.default)
    """Worker processes for a run's patients (0 = one per usable core); each pins SimpleITK to its share."""
    dask_scheduler: str = ""
    """Dask scheduler (``tcp://host:8786``) whose workers run the patients' tasks instead of local processes; empty
    = the local pool. Every worker must see the data root at the same path (docs/tutorials/cluster.md)."""
    candidate_models: list[CandidateModel] = []
    """Candidate families; with several, the inner CV of each outer training set (and of the final fit) chooses
    among them. Empty = the study's default (binary and multiclass: consensus, the soft vote of a filtered logistic
    regression and a random forest; with clinical covariates: logreg, random_forest, svm, gradient_boosting;
    continuous: linear, random_forest, svm, gradient_boosting; survival: coxnet, random_forest,
    gradient_boosting)."""
    selection_method: SelectionMethodOrDefault = ""
    """Empty = the outcome type's default (anova; survival: cox). anova | mannwhitney | mutual_info | cox |
    concordance (filters, + correlation filter) | rfe | l1 | tree."""
    selection_methods: list[SelectionMethodName] = []
    """When set, every listed method is a candidate (x every model family) and ``selection_method`` is ignored."""
    cv_folds: int = 5
    cv_repeats: int = 2
    cv_inner_folds: int = 3
    permutations: int = int(environment.PERMUTATIONS.default)
    """Label permutations of the permutation test of the whole procedure (0 = off); p >= 1 / (1 + permutations).
    Each costs one outer-CV repeat; 199 let p fall below 0.01 (docs: "Permutation test" has the times)."""
    permutation_seconds: int = int(environment.PERMUTATION_SECONDS.default)
    """Time budget of the permutation test in seconds (0 = none): past it the test reports the permutations done."""
    group_column: str = "group"
    """labels.csv column whose equal values (e.g. lesions of one person) stay in one CV fold; optional."""
    duplicate_max_distance: int = 8
    """Perceptual-hash bits (of 64) at or below which two stored images are near duplicates (-1: exact only)."""
    robustness_icc_threshold: float = 0.0
    """Keep features with ICC(1,1) over perturbations >= this (training patients of each fold); 0 = off."""
    modelling_jobs: int = 2
    """Processes fitting outer folds and permutations in parallel."""
    standardise: bool = True
    """Z-score each feature inside the Pipeline (fitted on the training folds); off suits tree models only."""
    file_modality: str = "CT"
    """Modality of NIfTI/NRRD image files without a ``<id>.json`` sidecar (PNG images are ``US``)."""
    resample_masks_to_image: bool = False
    """Resample a NIfTI/NRRD mask on another grid than its image (nearest neighbour) instead of failing."""
    inbox_settle_seconds: int = int(environment.INBOX_SETTLE_SECONDS.default)
    """The inbox sensor registers a patient only when none of its files changed for this long (copy finished)."""
    auto_segmentation: AutoSegmentationMethod = ""
    """Segment series that have no RTSTRUCT/SEG: threshold | otsu | connected_threshold | confidence_connected |
    ultrasound (2D, from a seed). Empty = off (such a patient fails). Seeded methods read ``<data root>/seeds.csv``
    (patient_id,x,y,z[,modality]; for 2D images x = pixel column, y = pixel row, z empty)."""
    auto_threshold_lower: float = -100.0
    """Lower bound (image units, e.g. HU) of ``threshold`` and ``connected_threshold``."""
    auto_threshold_upper: float = 300.0
    """Upper bound (image units, e.g. HU) of ``threshold`` and ``connected_threshold``."""
    auto_confidence_multiplier: float = 2.5
    """``confidence_connected`` grows within region mean +/- this many standard deviations."""
    auto_roi_name: str = "auto"
    """ROI name of automated masks (name it like your contoured ROIs to pool them in one feature column)."""
    auc_regression_margin: float = float(environment.AUC_REGRESSION_MARGIN.default)
    """``auc_not_regressed`` fails when a new model's CV AUC is more than this below the current model's."""
    on_auc_regression: RegressionPolicy = "warn"
    """warn: promote the regressed model anyway (the check warns); block: keep it as a candidate, current stays."""
    failure_notify_command: str = ""
    """Run for each failed run with its JSON line on stdin, e.g. ``mail -s ...`` or ``curl ... --data-binary @-``."""
    max_grey_levels: int = DEFAULT_MAX_GREY_LEVELS
    """An extraction whose ROI the parameter file's binWidth/binCount would split into more grey levels fails
    (a units/parameter mismatch, e.g. PET in Bq/ml with an SUV bin width) instead of exhausting memory."""
    export_dicom: bool = False
    """``dicom_exports`` writes a SEG per automated mask and an SR per series under ``exports/<patient>/``."""
    export_deidentified: bool = False
    """Also write de-identified copies of the exports under ``exports_deidentified/<pseudonym>/`` (for sharing)."""
    ultrasound_candidate_features: bool = False
    """Store the features of seeded ultrasound masks (``auto:ultrasound``) as their means over the segmentation's
    candidate outlines instead of the chosen outline's (issue 29; one extraction per grown candidate: up to 12 per
    image, up to 36 for a re-seeded click)."""
    robustness_perturbations: int = int(environment.ROBUSTNESS_PERTURBATIONS.default)
    """``feature_robustness``: random draws of contour randomisation and of image noise per ROI (plus one erosion
    and one dilation); 0 = the stage is off."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "RadiomicsConfig":
        """The resource with the defaults a deployment sets in its environment (docs/reference/configuration.md)."""
        e = environment

        def read(variable: environment.Variable) -> str:
            return e.read(variable, environ)

        values = {
            "params_dir": read(e.PARAMS_DIR),
            "params_file": read(e.PARAMS_FILE),
            "workers": int(read(e.WORKERS)),
            "dask_scheduler": read(e.DASK_SCHEDULER),
            "inbox_settle_seconds": round(float(read(e.INBOX_SETTLE_SECONDS))),
            "auc_regression_margin": float(read(e.AUC_REGRESSION_MARGIN)),
            "on_auc_regression": read(e.ON_AUC_REGRESSION),
            "failure_notify_command": read(e.FAILURE_NOTIFY_COMMAND),
            "permutations": int(read(e.PERMUTATIONS)),
            "permutation_seconds": int(read(e.PERMUTATION_SECONDS)),
            "max_grey_levels": int(read(e.MAX_GREY_LEVELS)),
            "export_dicom": read(e.EXPORT_DICOM) == "1",
            "export_deidentified": read(e.EXPORT_DEIDENTIFIED) == "1",
            "auto_segmentation": read(e.AUTO_SEGMENTATION),
            "robustness_perturbations": int(read(e.ROBUSTNESS_PERTURBATIONS)),
            "ultrasound_candidate_features": read(e.ULTRASOUND_CANDIDATE_FEATURES) == "1",
        }
        return cls(**values)

    def data_root(self) -> DataRoot:
        return data_root(self.data_dir)

    def params(self) -> dict[str, Path]:
        """Parameter file per modality: ``params_file`` for all if set, else ``<params_dir>/{ct,mr,pt,us}.yaml``."""
        return params_by_modality(
            Path(self.params_dir) if self.params_dir else PARAMS_DIR,
            Path(self.params_file) if self.params_file else None,
        )

    def accept_maskless(self) -> Callable[[str], bool]:
        """Which image files without a mask file are patients (a seed, or automated segmentation on)."""
        return maskless_images_accepted(self.data_root().path, self.auto_segmentation)

    def warehouse(self) -> Warehouse:
        return Warehouse(self.data_root().warehouse)

    def export_settings(self):
        """How ``dicom_exports`` and ``radiomics-assets export`` write a patient's SEG and SR (the same settings)."""
        from radiomics_assets import __version__
        from radiomics_assets.exports import ExportSettings, Producer

        return ExportSettings(
            params=self.params(),
            producer=Producer(software_version=__version__),
            deidentify=self.export_deidentified,
        )

    def mask_options(self) -> MaskOptions:
        auto = AutoSegmentation(
            method=self.auto_segmentation,
            lower=self.auto_threshold_lower,
            upper=self.auto_threshold_upper,
            confidence_multiplier=self.auto_confidence_multiplier,
            roi_name=self.auto_roi_name,
        )
        return MaskOptions(
            roi_pattern=self.roi_pattern, resample_masks_to_image=self.resample_masks_to_image, auto=auto
        )

    def patient_settings(self) -> PatientSettings:
        return PatientSettings(
            data_dir=self.data_root().path,
            params=self.params(),
            file_modality=self.file_modality,
            mask_options=self.mask_options(),
            max_grey_levels=self.max_grey_levels,
            ultrasound_candidate_features=self.ultrasound_candidate_features,
        )

    def study(self) -> Study:
        """The study of the data root (``study.yaml``; without it a two-class ``label_column``)."""
        return load_study(self.data_root(), self.label_column)

    def modelling_settings(self) -> ModellingSettings:
        chosen = tuple(SelectionMethodName(m).value for m in self.selection_methods)
        return ModellingSettings(
            seed=self.seed,
            models=tuple(CandidateModel(m).value for m in self.candidate_models),
            selection_methods=chosen or ((self.selection_method,) if self.selection_method else ()),
            folds=self.cv_folds,
            repeats=self.cv_repeats,
            inner_folds=self.cv_inner_folds,
            standardise=self.standardise,
            permutations=self.permutations,
            permutation_seconds=self.permutation_seconds,
            group_column=self.group_column,
            duplicate_max_distance=self.duplicate_max_distance,
            robustness_icc_threshold=self.robustness_icc_threshold,
            n_jobs=self.modelling_jobs,
        )


CONFIGURED = RadiomicsConfig.from_env()
"""The resource as this code location configures it (the environment at load time); the features code version
is computed from it."""


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"radiomics": CONFIGURED})
