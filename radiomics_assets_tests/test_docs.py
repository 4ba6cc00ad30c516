"""The documentation against the code: the configuration reference names exactly the settings the code reads, the
study.yaml reference exactly the keys the loader accepts, and every measured figure is what its stored result
renders (issues 26 and 28)."""

import ast
import dataclasses
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from radiomics_assets.modelling.settings import ModellingSettings
from radiomics_assets.modelling.study import _COVARIATE_KEYS, _OUTCOME_KEYS, _TOP_KEYS

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = PROJECT / "radiomics_assets"
DOCS = PROJECT / "docs"
CONFIGURATION = DOCS / "reference" / "configuration.md"
STUDY_PAGE = DOCS / "reference" / "study-yaml.md"
ENV_NAME = re.compile(r"\b(?:RADIOMICS|DAGSTER)_[A-Z0-9_]+")


def _env_names(text: str) -> set[str]:
    """RADIOMICS_* / DAGSTER_* names; a bare prefix (``DAGSTER_PG_`` + a computed part) is not a variable."""
    return {name for name in ENV_NAME.findall(text) if not name.endswith("_")}


def _names_in(paths) -> set[str]:
    return set().union(*(_env_names(path.read_text()) for path in paths))


def _table_after(text: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table whose header row starts with ``header`` (separator row skipped)."""
    lines = text[text.index(header) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _code_names(cell: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", cell))


def _render_figures():
    spec = importlib.util.spec_from_file_location("render_figures", PROJECT / "benchmarks" / "render_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_environment_variable_the_package_reads_is_documented_and_no_other():
    package = _names_in(PACKAGE.rglob("*.py"))
    page = _env_names(CONFIGURATION.read_text())
    # ./dev, CI and the tests read a few of their own (the UI's host and port, the screenshot folder).
    tooling = _names_in([PROJECT / "dev", PROJECT / ".ci" / "run", *(PROJECT / "radiomics_assets_tests").glob("*.py")])
    assert "RADIOMICS_DATA_DIR" in package and "DAGSTER_PG_URL" in package  # the scan finds the package's reads
    assert sorted(package - page) == [], "read by radiomics_assets/ but missing from docs/reference/configuration.md"
    assert sorted(page - package - tooling) == [], "named in docs/reference/configuration.md but read nowhere"


def test_the_environment_registry_is_the_one_loader_and_the_page_lists_it():
    from radiomics_assets import environment

    registered = {variable.name for variable in environment.VARIABLES}
    rows = _table_after(CONFIGURATION.read_text(), "| variable | default | what |")  # the first table: the package's
    documented = set().union(*(set(re.findall(r"`([A-Z][A-Z0-9_]+)`", row[0])) for row in rows))
    assert sorted(registered ^ documented) == [], "environment.VARIABLES and the configuration page differ"
    # No other module reads a setting from the process environment itself (os.environ is only passed on or set).
    readers = [
        str(path.relative_to(PROJECT))
        for path in PACKAGE.rglob("*.py")
        if path.name != "environment.py"
        and re.search(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[[^]]+\]\s*[^=\s]", path.read_text())
    ]
    assert readers == []
    assert environment.read(environment.PERMUTATIONS, {}) == "199"
    assert environment.read(environment.PERMUTATIONS, {"RADIOMICS_PERMUTATIONS": " 19 "}) == "19"
    assert environment.read(environment.PERMUTATIONS, {"RADIOMICS_PERMUTATIONS": " "}) == "199"
    with pytest.raises(ValueError, match="RADIOMICS_INBOX_RECENT_SECONDS='soon': not a number"):
        environment.read_number(environment.INBOX_RECENT_SECONDS, {"RADIOMICS_INBOX_RECENT_SECONDS": "soon"})


def test_every_resource_field_is_in_the_configuration_table_and_no_other():
    tree = ast.parse((PACKAGE / "defs" / "resources.py").read_text())
    config = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RadiomicsConfig")
    fields = {n.target.id for n in config.body if isinstance(n, ast.AnnAssign)}
    text = CONFIGURATION.read_text()
    tabled = set().union(*(_code_names(row[0]) for row in _table_after(text, "| field | default | meaning |")))
    assert {"data_dir", "roi_pattern", "max_grey_levels"} <= fields
    assert sorted(tabled - fields) == [], "the configuration table names fields RadiomicsConfig does not have"
    undocumented = sorted(f for f in fields if f"`{f}`" not in text)
    assert undocumented == [], "RadiomicsConfig fields missing from docs/reference/configuration.md"


def test_modelling_settings_table_lists_exactly_the_fields():
    fields = {f.name for f in dataclasses.fields(ModellingSettings)}
    rows = _table_after(CONFIGURATION.read_text(), "| `ModellingSettings` field |")
    assert {name for row in rows for name in _code_names(row[0])} == fields


def test_study_yaml_reference_names_exactly_the_keys_the_loader_accepts():
    text = STUDY_PAGE.read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.DOTALL).group(1)
    keys: dict[str, set[str]] = {"": set()}
    parent = ""
    for line in block.splitlines():
        match = re.match(r"^( *)(?:# *)?([a-z_]+):", line)
        if not match:
            continue
        if match.group(1) == "":
            parent = match.group(2)
            keys[""].add(parent)
        else:
            keys.setdefault(parent, set()).add(match.group(2))
    loader = (PACKAGE / "modelling" / "study.py").read_text()
    batch_keys = set(
        re.search(r"set\(raw\) - \{([^}]*)\}", loader).group(1).replace('"', "").replace(" ", "").split(",")
    )
    assert batch_keys == {"from_dicom", "column"}
    assert keys[""] == _TOP_KEYS
    assert keys["outcome"] == set().union(*_OUTCOME_KEYS.values())
    assert keys["covariates"] == _COVARIATE_KEYS
    assert keys["batch"] == batch_keys


def test_every_figure_is_what_its_stored_result_renders():
    render_figures = _render_figures()
    pages = [p for p in DOCS.rglob("*.md") if "<!-- figure:" in p.read_text()]
    assert len(pages) >= 4
    assert render_figures.stale_pages(write=False) == [], "run .venv/bin/python benchmarks/render_figures.py"


def test_a_changed_result_makes_its_page_stale_until_rendered(tmp_path):
    render_figures = _render_figures()
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs, ignore=shutil.ignore_patterns("screenshots"))
    result_path = docs / "results" / "radmlbench.json"
    result = json.loads(result_path.read_text())
    first = result["rows"][0]
    first["random_forest_500"] = 0.987  # now the best of the row
    result_path.write_text(json.dumps(result))
    page = docs / "design" / "default-model.md"
    assert render_figures.stale_pages(docs, docs / "results") == [page]
    assert render_figures.stale_pages(docs, docs / "results", write=True) == [page]
    row = next(line for line in page.read_text().splitlines() if line.startswith(f"| {first['table']} |"))
    assert row.endswith(f"| {first['procedure']:.3f} | {first['logreg_anova32']:.3f} | **0.987** |")
    assert render_figures.stale_pages(docs, docs / "results") == []


def test_a_figure_without_its_result_file_fails_naming_the_page(tmp_path):
    render_figures = _render_figures()
    docs = tmp_path / "docs"
    (docs / "results").mkdir(parents=True)
    (docs / "page.md").write_text("<!-- figure: radmlbench -->\n<!-- /figure -->\n")
    with pytest.raises(render_figures.FigureError, match=r"page\.md.*radmlbench\.json"):
        render_figures.stale_pages(docs, docs / "results")


def test_the_demo_figure_imports_a_metrics_json(tmp_path):
    render_figures = _render_figures()
    results = tmp_path / "results"
    results.mkdir()
    metrics = {
        "task": "binary",
        "n_patients": 30,
        "primary_metric": {"name": "auc", "value": 0.8123, "ci_low": 0.61, "ci_high": 0.97, "chance": 0.5},
        "auc_fold_sd": 0.15,
        "auc_pooled": 0.8,
        "permutation_p_value": 0.2,
        "permutation": {"n_permutations": 9, "null_aucs": [0.5] * 9, "null_auc_mean": 0.49, "null_auc_sd": 0.1},
        "calibration_slope": 1.1,
        "calibration_intercept": 0.02,
        "chosen_per_outer_fold": ["consensus"] * 10,
        "model_comparison": {"consensus": {}},
    }
    source = tmp_path / "metrics.json"
    source.write_text(json.dumps(metrics))
    stored = json.loads(render_figures.import_demo(source, results).read_text())
    assert "model_comparison" not in stored["metrics"] and "null_aucs" not in stored["metrics"]["permutation"]
    rendered = render_figures.render("demo_metrics", results)
    assert "**0.812** (0.61-0.97)" in rendered and "consensus 10" in rendered and "0.2 (null mean 0.490" in rendered


def test_readme_stays_the_front_door():
    readme = (PROJECT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    assert "./dev demo" in readme and "./dev test" in readme
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith("http"):
            assert (PROJECT / target).exists(), f"README.md links to {target}, which does not exist"


def test_data_contract_names_every_column_of_the_warehouse_tables():
    from radiomics_assets.warehouse import SCHEMA

    text = (DOCS / "reference" / "data-contract.md").read_text()
    for table, columns in SCHEMA.items():
        start = text.index(f"\n- `{table}`")
        bullet = text[start : text.find("\n- ", start + 1)]
        names = [column.split()[0] for column in columns.split(",")]
        missing = [name for name in names if not re.search(rf"\b{name}\b", bullet)]
        assert missing == [], f"docs/reference/data-contract.md, table {table}: columns {missing} not described"
