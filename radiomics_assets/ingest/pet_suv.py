"""PET pixel values to body-weight SUV (SUVbw, g/ml), by the QIBA vendor-neutral procedure.

Why: PET features are only comparable across patients in SUV, and the usual export is activity concentration
(``Units = BQML``). Stored values that are not SUV would silently give other features (and, with an SUV bin
width, hundreds of thousands of grey levels). So a PET series is converted from its own header tags or refused
with the file and the missing tag named; nothing is assumed.

The procedure (QIBA "Vendor-neutral pseudo-code for SUV calculation", SUVbw):

- ``Units`` GML: already SUVbw, factor 1. BQML: converted as below. Anything else (CNTS, ...) is refused.
- The image must be attenuation corrected (``ATTN`` in CorrectedImage) and, unless ``DecayCorrection`` is
  NONE, decay corrected (``DECY``).
- Scan start: SeriesDate/SeriesTime, unless that is after the earliest AcquisitionDate/AcquisitionTime of
  the series (post-processed series), then that earliest acquisition.
- Injection: RadiopharmaceuticalStartTime on the scan date (as QIBA; the dose is measured then), or
  RadiopharmaceuticalStartDateTime when no start time is given or the time of day would put the injection
  after the scan (midnight in between).
- Decay time ``dt`` (s) from the injection to the time the values are decay corrected to: the scan start for
  ``DecayCorrection`` START, 0 for ADMIN (corrected to the administration), and each slice's own acquisition
  for NONE (each slice then gets its own factor).
- ``SUV = value * weight_g / (dose_Bq * 2 ** (-dt / half_life_s))`` with PatientWeight (kg),
  RadionuclideTotalDose (Bq) and RadionuclideHalfLife (s) of the first RadiopharmaceuticalInformationSequence
  item.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pydicom
from pydicom.valuerep import DA, DT, TM

from radiomics_assets.errors import DicomInputError

SUV_UNITS = "GML"
"""PET Units of values already in SUVbw (g/ml)."""
ACTIVITY_UNITS = "BQML"
"""PET Units of activity concentration (Bq/ml), converted to SUVbw."""
DECAY_CORRECTIONS = ("START", "ADMIN", "NONE")


@dataclass(frozen=True)
class SuvConversion:
    """How a PET series' stored values (after rescale) become SUVbw: ``SUV = value * factors[slice]``."""

    units: str
    """The series' Units as exported (GML or BQML)."""
    factors: tuple[float, ...]
    """Per slice, in the order the datasets were given (g/Bq for BQML, 1.0 for GML)."""
    decay_correction: str = ""
    """DecayCorrection of a BQML series (START, ADMIN or NONE); empty for GML."""

    @property
    def series_factor(self) -> float:
        """The factor of the first slice: the series' factor, except with DecayCorrection NONE (per slice)."""
        return self.factors[0]


def _where(ds: pydicom.Dataset) -> str:
    return str(getattr(ds, "filename", None) or "PET slice")


def _required(ds: pydicom.Dataset, keyword: str, fix: str, parent: pydicom.Dataset | None = None) -> object:
    value = ds.get(keyword)
    if value is None or value == "":
        where = " in RadiopharmaceuticalInformationSequence" if parent is not None else ""
        raise DicomInputError(
            f"{_where(parent if parent is not None else ds)}: PET in {ACTIVITY_UNITS} lacks {keyword}{where}, "
            f"needed to convert it to SUV; {fix}"
        )
    return value


def _positive(ds: pydicom.Dataset, keyword: str, unit: str, fix: str, parent: pydicom.Dataset | None = None) -> float:
    value = _required(ds, keyword, fix, parent)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0:
        raise DicomInputError(
            f"{_where(parent if parent is not None else ds)}: {keyword} {value!r} is not a positive number of {unit}; "
            f"{fix}"
        )
    return number


def _date_time(date: object, time: object) -> dt.datetime | None:
    """A DA and a TM value as one datetime; None when either is absent or malformed."""
    if not date or not time:
        return None
    try:
        day, moment = DA(str(date).strip()), TM(str(time).strip())
    except ValueError:
        return None
    if day is None or moment is None:
        return None
    return dt.datetime.combine(day, moment)


def _naive(value: dt.datetime) -> dt.datetime:
    # DICOM DT may carry a UTC offset; the TM/DA tags it is compared with are local times without one.
    return value.replace(tzinfo=None)


def scan_start(slices: Sequence[pydicom.Dataset]) -> dt.datetime:
    """The time (local, as in the header) the series' values refer to for DecayCorrection START (QIBA)."""
    first = slices[0]
    series = _date_time(first.get("SeriesDate"), first.get("SeriesTime"))
    acquisitions = [
        moment
        for ds in slices
        if (moment := _date_time(ds.get("AcquisitionDate") or first.get("SeriesDate"), ds.get("AcquisitionTime")))
    ]
    earliest = min(acquisitions) if acquisitions else None
    if series is not None and (earliest is None or series <= earliest):
        return series
    if earliest is None:
        raise DicomInputError(
            f"{_where(first)}: PET in {ACTIVITY_UNITS} lacks SeriesDate/SeriesTime and AcquisitionDate/"
            "AcquisitionTime, needed for the decay correction to SUV; export the series with its original header"
        )
    return earliest


def injection_time(ds: pydicom.Dataset, scan: dt.datetime) -> dt.datetime:
    """Radiopharmaceutical start (injection) as a datetime, on the scan date unless the header says otherwise."""
    fix = "export the series with its radiopharmaceutical information (or in SUV, Units GML)"
    info = _radiopharmaceutical(ds, fix)
    start_time, start_date_time = info.get("RadiopharmaceuticalStartTime"), info.get("RadiopharmaceuticalStartDateTime")
    full = None
    if start_date_time:
        try:
            full = _naive(DT(str(start_date_time).strip()))
        except ValueError:
            full = None
    if start_time:
        try:
            moment = TM(str(start_time).strip())
        except ValueError:
            moment = None
        if moment is not None:
            on_scan_day = dt.datetime.combine(scan.date(), moment)
            if on_scan_day <= scan or full is None:
                return on_scan_day
    if full is not None:
        return full
    raise DicomInputError(
        f"{_where(ds)}: PET in {ACTIVITY_UNITS} lacks a valid RadiopharmaceuticalStartTime (or "
        f"RadiopharmaceuticalStartDateTime) in RadiopharmaceuticalInformationSequence, needed to convert it to SUV; "
        f"{fix}"
    )


def _radiopharmaceutical(ds: pydicom.Dataset, fix: str) -> pydicom.Dataset:
    sequence = ds.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise DicomInputError(
            f"{_where(ds)}: PET in {ACTIVITY_UNITS} lacks RadiopharmaceuticalInformationSequence "
            f"(dose, half-life, injection time), needed to convert it to SUV; {fix}"
        )
    return sequence[0]


def suv_factor(ds: pydicom.Dataset, decay_time_s: float) -> float:
    """SUVbw factor (g/Bq) of one slice whose values are decay corrected to ``decay_time_s`` after injection.

    ``weight_g / (dose_Bq * 2 ** (-decay_time_s / half_life_s))``.
    """
    fix = "export the series with its radiopharmaceutical information (or in SUV, Units GML)"
    info = _radiopharmaceutical(ds, fix)
    dose = _positive(info, "RadionuclideTotalDose", "Bq", fix, parent=ds)
    half_life = _positive(info, "RadionuclideHalfLife", "s", fix, parent=ds)
    weight = _positive(ds, "PatientWeight", "kg", "the patient's weight (kg) is needed for SUVbw; export it")
    return weight * 1000.0 / (dose * 2.0 ** (-decay_time_s / half_life))


def _check_corrections(ds: pydicom.Dataset, decay_correction: str) -> None:
    corrected = ds.get("CorrectedImage")
    if corrected is None:
        raise DicomInputError(
            f"{_where(ds)}: PET in {ACTIVITY_UNITS} lacks CorrectedImage (0028,0051), so attenuation and decay "
            "correction are unknown and SUV cannot be computed; export the series with its original header"
        )
    values = {str(v).upper() for v in ([corrected] if isinstance(corrected, str) else corrected)}
    needed = ["ATTN"] + (["DECY"] if decay_correction != "NONE" else [])
    lacking = [v for v in needed if v not in values]
    if lacking:
        raise DicomInputError(
            f"{_where(ds)}: PET in {ACTIVITY_UNITS} is not {' and '.join(lacking)} corrected (CorrectedImage "
            f"{sorted(values)}, DecayCorrection {decay_correction}): SUV is undefined for it"
        )


def _decay_time_s(slice_ds: pydicom.Dataset, decay_correction: str, scan: dt.datetime, injected: dt.datetime) -> float:
    if decay_correction == "ADMIN":
        return 0.0
    if decay_correction == "START":
        reference = scan
    else:  # NONE: each slice holds the activity at its own acquisition
        reference = _date_time(
            slice_ds.get("AcquisitionDate") or scan.strftime("%Y%m%d"), slice_ds.get("AcquisitionTime")
        )
        if reference is None:
            raise DicomInputError(
                f"{_where(slice_ds)}: PET in {ACTIVITY_UNITS} with DecayCorrection NONE lacks AcquisitionTime, "
                "needed to decay-correct each slice to SUV; export the series with its original header"
            )
    seconds = (reference - injected).total_seconds()
    if seconds < 0:
        raise DicomInputError(
            f"{_where(slice_ds)}: injection at {injected:%Y-%m-%d %H:%M:%S} (RadiopharmaceuticalStartTime/DateTime) is "
            f"after the time the values refer to ({reference:%Y-%m-%d %H:%M:%S}): the decay time to SUV is negative; "
            "check the series' date and time tags"
        )
    return seconds


def suv_conversion(slices: Sequence[pydicom.Dataset]) -> SuvConversion:
    """How to turn a PET series' values into SUVbw, from its slices' full headers (pixels not needed).

    Raises :class:`DicomInputError` naming the file and the tag when the values are not SUV and cannot be
    converted by the vendor-neutral procedure.
    """
    first = slices[0]
    units = {str(ds.get("Units", "") or "").strip().upper() for ds in slices}
    if len(units) > 1:
        raise DicomInputError(f"{_where(first)}: PET slices of one series have different Units {sorted(units)}")
    (unit,) = units
    if not unit:
        raise DicomInputError(
            f"{_where(first)}: PET series lacks Units (0054,1001), so its values cannot be known to be SUV; "
            f"export it with its Units ({SUV_UNITS} for SUVbw or {ACTIVITY_UNITS} with the radiopharmaceutical tags)"
        )
    if unit == SUV_UNITS:
        return SuvConversion(units=unit, factors=(1.0,) * len(slices))
    if unit != ACTIVITY_UNITS:
        raise DicomInputError(
            f"{_where(first)}: PET Units {unit} cannot be converted to SUV by the vendor-neutral procedure (only "
            f"{ACTIVITY_UNITS} and {SUV_UNITS} can); export the series in Bq/ml or SUV"
        )
    decay_correction = str(_required(first, "DecayCorrection", "export the series with its original header")).upper()
    if decay_correction not in DECAY_CORRECTIONS:
        raise DicomInputError(
            f"{_where(first)}: DecayCorrection {decay_correction} is none of {', '.join(DECAY_CORRECTIONS)}"
        )
    _check_corrections(first, decay_correction)
    scan = scan_start(slices)
    injected = injection_time(first, scan)
    factors = tuple(suv_factor(ds, _decay_time_s(ds, decay_correction, scan, injected)) for ds in slices)
    return SuvConversion(units=unit, factors=factors, decay_correction=decay_correction)
