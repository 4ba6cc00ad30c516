"""The report's section on the seeded ultrasound masks (issue 29): how far the one-click outlines can be trusted.

Shown only when the study has masks of kind ``auto:ultrasound``. The figures are ``masks.ultrasound_quality``'s
(``seeded_mask_quality``): the quartiles of the segmentation's own confidence (surround contrast), how many masks do
not record it, a gallery of the lowest-contrast masks and, where images have both an expert outline and a click in
``seeds.csv``, the Dice of the seeded outline against the expert's.
"""

from __future__ import annotations

import base64
import html

from radiomics_assets.modelling.plots import fmt
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse


def seeded_masks_section(root: DataRoot) -> tuple[dict | None, str]:
    """(figures for ``metrics.json``, HTML section); (None, "") when no mask of the study is seeded."""
    # Imported here: the masks package (SimpleITK, DICOM readers) is not needed by reports of other studies.
    from radiomics_assets.masks.autoseg import SEEDS_FILE, read_seeds
    from radiomics_assets.masks.sources import SEEDED_ULTRASOUND
    from radiomics_assets.masks.ultrasound_quality import seeded_mask_quality, worst_mask_pictures

    masks = Warehouse(root.warehouse).query(
        "SELECT m.patient_id, m.roi, m.source_kind, m.mask_path, s.volume_path FROM masks m "
        "JOIN series s USING (patient_id, series_uid) ORDER BY m.patient_id, m.roi"
    )
    if not (masks.source_kind == SEEDED_ULTRASOUND).any():
        return None, ""
    seeds_path = root.path / SEEDS_FILE
    quality = seeded_mask_quality(masks, read_seeds(seeds_path) if seeds_path.is_file() else None)
    contrast, dice = quality.contrast_quartiles(), quality.dice_quartiles()
    figures = {
        "n_seeded_masks": len(quality.confidence),
        "contrast_quartiles": list(contrast) if contrast else None,
        "confidence_not_recorded": quality.not_recorded,
        "worst_masks": quality.worst[["patient_id", "roi", "contrast"]].to_dict(orient="records"),
        "expert_dice_quartiles": list(dice) if dice else None,
        "expert_dice": quality.expert_dice.to_dict(orient="records"),
    }
    return figures, _section_html(figures, worst_mask_pictures(quality))


def _quartiles(values: list[float] | None) -> str:
    if not values:
        return "n/a"
    return f"median {fmt(values[1], 2)} (quartiles {fmt(values[0], 2)} to {fmt(values[2], 2)})"


def _section_html(figures: dict, pictures: list[tuple[str, bytes]]) -> str:
    parts = [
        "<h2>Seeded masks</h2>",
        f"<p>{figures['n_seeded_masks']} masks were segmented from one click (<code>auto:ultrasound</code>). The "
        "segmentation's own confidence, the surround contrast of the outline it chose (how much darker the lesion is "
        "than the band around it, in pooled standard deviations; low values flag outlines to look at): "
        f"{_quartiles(figures['contrast_quartiles'])}; not recorded (masks stored by an older version): "
        f"{figures['confidence_not_recorded']}.</p>",
    ]
    if pictures:
        parts.append("<p>The masks of lowest contrast, first the worst:</p>")
        for caption, png in pictures:
            text = html.escape(caption)
            parts.append(
                f'<figure style="display:inline-block;margin:0.3em"><img alt="{text}" '
                f'src="data:image/png;base64,{base64.b64encode(png).decode()}"><figcaption>{text}</figcaption></figure>'
            )
    if figures["expert_dice"]:
        rows = "".join(
            f"<tr><td>{html.escape(str(r['patient_id']))}</td><td>{html.escape(str(r['roi']))}</td>"
            f"<td>{fmt(r['dice'])}</td><td>{fmt(r['contrast'], 2)}</td></tr>"
            for r in figures["expert_dice"]
        )
        parts.append(
            "<p>Images with an expert outline and a click: the outline segmented from the click against the "
            f"expert's, Dice {_quartiles(figures['expert_dice_quartiles'])}.</p>"
            "<table><tr><th>patient</th><th>ROI</th><th>Dice</th><th>contrast</th></tr>" + rows + "</table>"
        )
    else:
        parts.append(
            "<p>No image has both an expert outline and a click in seeds.csv, so the seeded outlines' accuracy in "
            "this study is not measured (add a click for images a radiologist outlined to measure it).</p>"
        )
    return "".join(parts)
