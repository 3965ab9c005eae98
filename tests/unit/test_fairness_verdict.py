"""Fairness in the promotion decision: evaluate()'s verdict, the evaluation report and the model card sections.

Real fairlearn numbers on generated rows; a challenger that never selects anyone in the south is the biased one.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as fm

from airflow_mlops.core import evaluation_report
from airflow_mlops.core.evaluation import evaluate
from airflow_mlops.core.fairness import fairness_metric_names, missing_group_columns
from airflow_mlops.core.model_card import build_model_card, render_html, render_markdown

pytestmark = pytest.mark.unit

Rows = tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]

ROWS = 2000
FAIRNESS: dict[str, Any] = {
    "groups": ["city"], "metrics": ["demographic_parity_difference", "equal_opportunity_difference"], "max": 0.1,
    "min_ratio": 0.8, "min_group_rows": 30}


@pytest.fixture(scope="module")
def rows() -> Rows:
    """Held-out rows with a group column (plus a 5-row group), labels, a fair and a biased probability."""
    rng = np.random.default_rng(3)
    city = np.append(rng.choice(["north", "south"], ROWS - 5), ["east"] * 5)
    x = rng.normal(size=ROWS)
    y = (x + rng.normal(0, 0.5, ROWS) > 0).astype(int)
    fair = 1 / (1 + np.exp(-3 * x))
    biased = np.where(city == "south", fair * 0.4, fair)  # south rarely crosses 0.5
    return pd.DataFrame({"city": city, "x": x}), y, fair, biased


def judge(rows: Rows, challenger: str, champion: str | None = None,
          fairness: dict[str, Any] | None = FAIRNESS) -> dict[str, Any]:
    frame, y, fair, biased = rows
    chosen = {"fair": fair, "biased": biased}
    result = evaluate(y, chosen[challenger], None if champion is None else chosen[champion], metrics=["roc_auc"],
                      primary_metric="roc_auc", thresholds={"roc_auc": {"min": 0.6}}, rule="non_regression",
                      max_regression=0.5, bootstrap_samples=50, slice_frame=frame, fairness=fairness)
    return result.to_dict()


def test_a_biased_challenger_is_not_promoted_and_the_reason_names_column_metric_value_and_bound(rows: Rows) -> None:
    frame, y, _, biased = rows
    result = judge(rows, "biased", champion="fair")
    verdict = result["verdict"]
    assert verdict["promote"] is False and verdict["passed_fairness"] is False
    assert verdict["passed_thresholds"] is True and verdict["beats_champion"] is True  # only fairness blocks it
    kept = frame["city"] != "east"
    expected = fm.demographic_parity_difference(y[kept], (biased[kept] >= 0.5).astype(int),
                                                sensitive_features=frame["city"][kept])
    assert (f"fairness city: challenger demographic_parity_difference {expected:.4g} breaks "
            "evaluation.fairness.max 0.1") in verdict["reasons"]
    assert result["fairness"]["skipped_groups"] == {"city": ["east"]}
    parity = next(g for g in result["fairness"]["groups"] if g["metric"] == "demographic_parity_difference")
    assert parity["champion"] < 0.1 < parity["challenger"]


def test_the_same_challenger_without_a_fairness_block_promotes_and_its_report_keeps_the_old_keys(rows: Rows) -> None:
    result = judge(rows, "biased", champion="fair", fairness=None)
    assert result["verdict"]["promote"] is True
    assert "fairness" not in result and "passed_fairness" not in result["verdict"]


def test_a_fair_challenger_passes_with_a_reason(rows: Rows) -> None:
    verdict = judge(rows, "fair")["verdict"]
    assert verdict["promote"] is True and verdict["passed_fairness"] is True
    assert "fairness: 2 metric(s) on group column(s) ['city'] within evaluation.fairness bounds" in verdict["reasons"]


def test_a_missing_group_column_names_the_column_the_spec_file_and_the_available_columns(rows: Rows) -> None:
    frame = rows[0]
    problem = missing_group_columns({**FAIRNESS, "groups": ["city", "gender"]}, frame, source="include/models/m.yaml")
    assert problem is not None and problem.startswith(
        "include/models/m.yaml: evaluation.fairness.groups: column(s) ['gender'] are not on the held-out rows")
    assert "available columns: ['city', 'x']" in problem and "request feature" in problem
    assert missing_group_columns(FAIRNESS, frame, source="x") is None
    with pytest.raises(ValueError, match=re.escape("column 'gender' is not in the held-out rows")):
        judge(rows, "fair", fairness={**FAIRNESS, "groups": ["gender"]})


def test_the_report_shows_each_metric_against_its_bound_with_the_breach_and_the_small_groups(rows: Rows) -> None:
    result = judge(rows, "biased", champion="fair")
    page = evaluation_report.render_html(result, title="fairness")
    section = page[page.index("<h2>Fairness</h2>"):]
    assert "fairness <span class=\"badge bad\">breached</span>" in page
    assert section.count('<tr class="breach">') == 2  # both metrics breached by the challenger
    assert "equal_opportunity_difference" in section and "≤ 0.1 (max)" in section
    assert "Not compared (too few rows): east" in section
    assert "challenger selection rate" in section and "<td>north</td>" in section
    fair_page = evaluation_report.render_html(judge(rows, "fair"), title="fair")
    assert '<tr class="breach">' not in fair_page and "within bounds" in fair_page
    assert "<h2>Fairness</h2>" not in evaluation_report.render_html(judge(rows, "fair", fairness=None), title="x")


def test_the_model_card_has_a_fairness_section_and_caveats_for_breaches_and_small_groups(rows: Rows) -> None:
    card = build_model_card(model={"name": "m"}, version="2", run_id="r", lineage=None,
                            evaluation=judge(rows, "biased", champion="fair"))
    caveats = "\n".join(card["caveats"])
    assert "fairness city: challenger demographic_parity_difference" in caveats
    assert "the challenger is not promoted on this evidence" in caveats
    assert "fairness city: group(s) ['east'] have fewer than evaluation.fairness.min_group_rows rows" in caveats
    markdown = render_markdown(card)
    section = markdown[markdown.index("## Fairness"):markdown.index("## Comparison with the champion")]
    assert "| city | demographic_parity_difference |" in section and "| breached |" in section
    assert "- city: east" in section
    assert "<h2>Fairness</h2>" in render_html(card)


def test_a_card_without_fairness_has_no_section_and_a_fair_one_only_the_small_group_caveat(rows: Rows) -> None:
    plain = build_model_card(model={"name": "m"}, version="1", run_id="r", lineage=None,
                             evaluation=judge(rows, "fair", fairness=None))
    assert plain["fairness"] is None and "## Fairness" not in render_markdown(plain)
    fair = build_model_card(model={"name": "m"}, version="1", run_id="r", lineage=None,
                            evaluation=judge(rows, "fair"))
    assert [c for c in fair["caveats"] if "fairness" in c] == [
        "fairness city: group(s) ['east'] have fewer than evaluation.fairness.min_group_rows rows and were not "
        "compared; fairness toward them is unmeasured"]
    assert "| within |" in render_markdown(fair)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_metric_name_the_spec_accepts_is_computed_through_evaluate(task: str) -> None:
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"city": rng.choice(["north", "south"], 400)})
    classes = ["a", "b", "c"]
    if task == "binary":
        y, pred = rng.integers(0, 2, 400), rng.uniform(size=400)
    elif task == "multiclass":
        y, pred = rng.choice(classes, 400), rng.dirichlet([1, 1, 1], 400)
    else:
        y, pred = rng.normal(10, 2, 400), rng.normal(10, 2, 400)
    names = fairness_metric_names(task)
    result = evaluate(y, pred, pred, metrics=[], primary_metric={"binary": "roc_auc", "multiclass": "f1_macro",
                                                                  "regression": "rmse"}[task],
                      task=task, classes=classes if task == "multiclass" else None, bootstrap_samples=50,
                      slice_frame=frame, fairness={**FAIRNESS, "metrics": list(names), "max": 100.0}).to_dict()
    assert [g["metric"] for g in result["fairness"]["groups"]] == list(names)
    assert all(g["challenger"] == g["champion"] for g in result["fairness"]["groups"])
