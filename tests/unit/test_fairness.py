"""Fairness across groups: fairlearn's numbers, breaches named, small groups listed rather than compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fairlearn import metrics as fm

from airflow_mlops.core.fairness import evaluate_fairness, fairness_metric_names
from airflow_mlops.core.spec import parse_spec, spec_problems, spec_sha256
from support.spec_edits import read_with_fields

pytestmark = pytest.mark.unit

DEMO_SPEC = Path(__file__).resolve().parents[2] / "include" / "models" / "ride_completion.yaml"
CONFIG = {"groups": ["city"], "metrics": ["demographic_parity_difference", "equal_opportunity_difference",
                                          "demographic_parity_ratio"],
          "max": 0.1, "min_ratio": 0.8, "min_group_rows": 30}


def _rows(seed: int = 0, rows: int = 2000) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"city": rng.choice(["north", "south"], rows), "x": rng.normal(size=rows)})
    y = (frame["x"] + rng.normal(0, 0.5, rows) > 0).astype(int).to_numpy()
    return frame, y


def test_a_challenger_biased_against_one_group_breaches_and_a_fair_one_does_not() -> None:
    frame, y = _rows()
    fair = (frame["x"] > 0).astype(int).to_numpy()
    biased = np.where(frame["city"] == "south", 0, fair)  # never selects anyone in the south
    result = evaluate_fairness(CONFIG, task="binary", y_true=y, challenger_pred=biased, champion_pred=fair,
                               frame=frame)
    assert {b.split(":")[1].split()[1] for b in result.breaches} == {
        "demographic_parity_difference", "equal_opportunity_difference", "demographic_parity_ratio"}
    parity = next(g for g in result.groups if g["metric"] == "demographic_parity_difference")
    assert parity["challenger"] == pytest.approx(
        fm.demographic_parity_difference(y, biased, sensitive_features=frame["city"]))
    assert parity["champion"] < 0.1 and not _breached_for(fair, frame, y)
    assert [row["group"] for row in result.tables["city"]] and "champion_selection_rate" in result.tables["city"][0]


def _breached_for(pred: np.ndarray, frame: pd.DataFrame, y: np.ndarray) -> list[str]:
    return evaluate_fairness(CONFIG, task="binary", y_true=y, challenger_pred=pred, champion_pred=None,
                             frame=frame).breaches


def test_regression_gaps_are_the_task_metric_per_group() -> None:
    frame, _ = _rows()
    y = frame["x"].to_numpy() * 10
    worse_in_south = y + np.where(frame["city"] == "south", 5.0, 0.5)
    config = {**CONFIG, "metrics": ["mae_difference"], "max": 1.0}
    result = evaluate_fairness(config, task="regression", y_true=y, challenger_pred=worse_in_south,
                               champion_pred=None, frame=frame)
    assert result.groups[0]["challenger"] == pytest.approx(4.5)
    assert result.breaches == ["fairness city: challenger mae_difference 4.5 breaks evaluation.fairness.max 1.0"]


def test_groups_too_small_are_listed_not_compared_and_a_missing_column_is_named() -> None:
    frame, y = _rows(rows=400)
    frame.loc[:4, "city"] = "tiny"
    result = evaluate_fairness(CONFIG, task="binary", y_true=y, challenger_pred=y, champion_pred=None, frame=frame)
    assert result.skipped_groups == {"city": ["tiny"]} and not result.breaches
    with pytest.raises(ValueError, match="evaluation.fairness.groups: column 'gender' is not in the held-out rows"):
        evaluate_fairness({**CONFIG, "groups": ["gender"]}, task="binary", y_true=y, challenger_pred=y,
                          champion_pred=None, frame=frame)


def test_spec_takes_the_task_fairness_metrics_only_and_an_absent_block_keeps_the_hash() -> None:
    assert "mae_difference" in fairness_metric_names("regression")
    assert "demographic_parity_difference" not in fairness_metric_names("regression")
    data = read_with_fields(DEMO_SPEC, evaluation__fairness={"groups": ["pickup_hour"], "metrics": ["mae_difference"]})
    (problem,) = spec_problems(yaml.safe_dump(data), "/specs/ride_completion.yaml")
    assert "evaluation.fairness.metrics: ['mae_difference'] are not fairness metrics of a binary model" in problem
    plain = parse_spec(DEMO_SPEC.read_text(encoding="utf-8"), str(DEMO_SPEC))
    assert spec_sha256(plain) == "4e653087194043d50640808f171e8ff97ef6367122737472091801e404d753da"
