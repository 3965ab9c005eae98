"""core.drift on synthetic data with known shifts, against the real Evidently 0.7."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.drift import (
    DEFAULT_THRESHOLDS,
    EMPTY_IN_CURRENT,
    MISSING_IN_CURRENT,
    check_drift,
    column_methods,
    is_drifted,
    save_report,
)
from airflow_mlops.core.spec import Drift

pytestmark = pytest.mark.unit

ROWS = 3000
# Mean shifts in standard deviations: from none (same distribution) to obvious. The middle ones
# land near the thresholds, where a wrong comparison direction would show.
SHIFTS = {"stable": 0.0, "s03": 0.03, "s06": 0.06, "s10": 0.1, "s20": 0.2, "s40": 0.4, "s100": 1.0}


def _frames(seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame({name: rng.normal(0.0, 1.0, ROWS) for name in SHIFTS})
    current = pd.DataFrame({name: rng.normal(shift, 1.0, ROWS) for name, shift in SHIFTS.items()})
    return reference, current


def test_the_decision_direction_is_p_value_below_for_ks_and_distance_at_or_above_for_the_rest() -> None:
    assert is_drifted("ks", 0.001, 0.05) and not is_drifted("ks", 0.2, 0.05) and not is_drifted("ks", 0.05, 0.05)
    for method in ("psi", "wasserstein", "jensenshannon"):
        assert is_drifted(method, 0.3, 0.2) and is_drifted(method, 0.2, 0.2) and not is_drifted(method, 0.1, 0.2)
    with pytest.raises(ValueError, match="unknown drift method 'chisquare'"):
        is_drifted("chisquare", 0.1, 0.1)


@pytest.mark.parametrize("method", ["ks", "psi", "wasserstein", "jensenshannon"])
def test_known_shifts_are_found_and_our_decision_agrees_with_evidentlys_test_status(method: str) -> None:
    reference, current = _frames()
    threshold = DEFAULT_THRESHOLDS[method]
    result = check_drift(reference, current, list(SHIFTS), Drift(method=method, threshold=threshold, drift_share=0.5))
    by_name = {c.column: c for c in result.columns}
    assert not by_name["stable"].drifted and by_name["s100"].drifted
    for column in result.columns:
        assert column.method == method and column.threshold == threshold and column.score is not None
        assert column.drifted == is_drifted(method, column.score, threshold)
        assert column.evidently_status == ("FAIL" if column.drifted else "SUCCESS"), column
    if method == "ks":  # p-values: the bigger the shift, the smaller p
        assert by_name["s100"].score < 1e-12 < threshold < by_name["stable"].score
        assert by_name["s100"].score_kind == "p_value" and "p-value" in by_name["s100"].reason
    else:  # distances: the bigger the shift, the larger
        assert by_name["stable"].score < threshold <= by_name["s100"].score
        assert by_name["s100"].score_kind == "distance"
    drifted = sum(c.drifted for c in result.columns)
    assert result.share == pytest.approx(drifted / len(SHIFTS))
    assert result.detected == (result.share >= 0.5)
    assert set(result.drifted_columns) == {c.column for c in result.columns if c.drifted}


def test_thresholds_follow_the_method_they_belong_to() -> None:
    drift = Drift(method="psi", threshold=0.25, columns={
        "a": {"method": "ks"},                       # own method, no threshold -> ks default (a p-value)
        "b": {"threshold": 0.4},                     # global method, own threshold
        "c": {"method": "wasserstein", "threshold": 0.3},
        "d": {"method": "psi"},                      # same as global -> the global threshold
    })
    types = {"a": "numerical", "b": "numerical", "c": "categorical", "d": "numerical", "e": "categorical"}
    got = column_methods(drift, list(types), types)
    assert got == {"a": ("ks", 0.05), "b": ("psi", 0.4), "c": ("jensenshannon", 0.1), "d": ("psi", 0.25),
                   "e": ("psi", 0.25)}


def test_a_column_missing_or_empty_in_current_data_is_drifted_with_its_name_not_a_crash() -> None:
    reference, current = _frames()
    reference["surge"] = 1.0 + reference["stable"].abs()
    current = current.drop(columns=["s100"]).assign(stable=np.nan)
    columns = ["s100", "stable", "surge", "s03"]
    result = check_drift(reference, current, columns, Drift(method="psi", threshold=0.2, drift_share=0.5))
    by_name = {c.column: c for c in result.columns}
    assert by_name["s100"].drifted and by_name["s100"].score is None and by_name["s100"].reason == MISSING_IN_CURRENT
    assert by_name["stable"].drifted and by_name["stable"].reason == EMPTY_IN_CURRENT
    assert by_name["surge"].reason == "missing in current data" and not by_name["s03"].drifted
    assert result.share == 0.75 and result.detected
    assert result.drifted_columns["s100"] == {"method": "psi", "score": None, "threshold": 0.2,
                                              "reason": MISSING_IN_CURRENT}
    assert "s100" in result.summary() and "drift detected: 3 of 4" in result.summary()


def test_nothing_comparable_still_gives_a_verdict_and_a_report(tmp_path: Path) -> None:
    reference, current = _frames()
    result = check_drift(reference, current.drop(columns=["s10", "s20"]), ["s10", "s20"],
                         Drift(drift_share=1.0))
    assert result.snapshot is None and result.share == 1.0 and result.detected
    saved = save_report(result, tmp_path, ["m", "d", "r"])
    assert "missing in current data" in Path(saved["html"]).read_text()


def test_both_sides_are_sampled_with_a_fixed_seed_and_the_sampling_is_stated(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 10_000), "y": rng.normal(0, 1, 10_000)})
    current = pd.DataFrame({"x": rng.normal(0.5, 1, 8_000), "y": rng.normal(0, 1, 8_000)})
    drift = Drift(method="ks", threshold=0.05, drift_share=0.5, sample_rows=1000)
    first = check_drift(reference, current, ["x", "y"], drift, seed=3, current_total=80_000)
    again = check_drift(reference, current, ["x", "y"], drift, seed=3, current_total=80_000)
    sampling = first.sampling
    assert (sampling.reference_rows, sampling.reference_total) == (1000, 10_000)
    assert (sampling.current_rows, sampling.current_total) == (1000, 80_000) and sampling.sampled
    assert [c.score for c in first.columns] == [c.score for c in again.columns]  # same seed, same sample
    assert "seed 3" in sampling.statement() and "current 1,000 of 80,000 rows" in sampling.statement()
    unsampled = check_drift(reference, current, ["x", "y"], drift, sample_rows=None)
    assert unsampled.sampling.reference_rows == 10_000 and not unsampled.sampling.sampled
    assert "no sampling" in unsampled.sampling.statement()

    parts = ["rides", "rides__monitor", "scheduled__2026-11-25T10:00:00+00:00"]  # run ids carry ':' and '+'
    saved = save_report(first, tmp_path, parts, context={"model": "rides", "model_version": "3"})
    assert saved["relpath"] == "rides/rides__monitor/scheduled__2026-11-25T10_00_00_00_00/report.html"
    assert saved["url"] == "/mlops/reports/drift/" + saved["relpath"]
    page = Path(saved["html"]).read_text()
    assert sampling.statement() in html.unescape(page) and 'id="airflow-mlops-drift"' in page
    stored = json.loads(Path(saved["json"]).read_text())
    assert stored["sampling"]["statement"] == sampling.statement() and stored["model_version"] == "3"
    assert stored["detected"] == first.detected and stored["drifted_columns"] == first.drifted_columns
    value_drifts = [m for m in stored["evidently"]["metrics"] if "ValueDrift" in m["metric_name"]]
    assert {m["config"]["column"] for m in value_drifts} == {"x", "y"}
    assert not [p.name for p in tmp_path.rglob(".*")]  # no temp file left behind


def test_categorical_columns_get_a_method_that_handles_categories() -> None:
    rng = np.random.default_rng(2)
    reference = pd.DataFrame({"zone": rng.choice(["a", "b", "c"], 2000), "flag": rng.random(2000) < 0.5})
    current = pd.DataFrame({"zone": rng.choice(["a", "b", "c"], 2000, p=[0.8, 0.1, 0.1]),
                            "flag": rng.random(2000) < 0.5})
    result = check_drift(reference, current, ["zone", "flag"], Drift(method="ks", threshold=0.05, drift_share=0.5))
    zone, flag = result.columns
    assert (zone.column_type, zone.method, zone.drifted, zone.evidently_status) == (
        "categorical", "jensenshannon", True, "FAIL")
    assert (flag.column_type, flag.method, flag.drifted) == ("numerical", "ks", False)  # bools compare as 0/1
    assert result.share == 0.5 and result.detected  # share == drift_share counts as drift
