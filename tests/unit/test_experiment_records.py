"""Online experiments, the core wiring: spec rules, per-row metric values, the record, one look and many.

The statistics themselves are proven in test_experiment_stats.py; here the readout (core/experiment_readout.py)
is driven on generated labelled predictions with a known true effect, with the running state carried through
the record's JSON from look to look exactly as the registry tag carries it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm

from airflow_mlops.core.experiment_readout import EXTEND, PROMOTE, ROLLBACK, UPDATE, after_look, take_look
from airflow_mlops.core.experiment_stats import spending_bootstrap_difference
from airflow_mlops.core.experiments import (
    PROMOTED,
    RUNNING,
    TAG,
    ExperimentRecord,
    experiment_metric,
    new_record,
    rank_auc,
    read_record,
    row_values,
)
from airflow_mlops.core.spec import Experiment, parse_spec, spec_problems, spec_sha256
from support.spec_edits import read_with_fields

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
DEMO_SPEC = "include/models/ride_completion.yaml"


def _spec_with(experiment: dict[str, Any], **changes: Any) -> dict[str, Any]:
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / DEMO_SPEC
    data = read_with_fields(path, **changes)
    data.setdefault("serving", {})["target"] = "local"
    data["promotion"]["experiment"] = experiment
    return data


def _problems(data: dict[str, Any]) -> list[str]:
    return spec_problems(yaml.safe_dump(data), "/specs/ride_completion.yaml")


# ------------------------------------------------------------------------------------------- spec
def test_a_spec_with_an_experiment_parses_and_others_keep_their_hash() -> None:
    data = _spec_with({"type": "ab", "traffic": 0.2, "metric": "accuracy", "max_duration": "3d"})
    spec = parse_spec(yaml.safe_dump(data), "/specs/ride_completion.yaml")
    assert spec.promotion.experiment == Experiment(type="ab", traffic=0.2, metric="accuracy", max_duration="3d")
    from pathlib import Path

    shipped = parse_spec((Path(__file__).resolve().parents[2] / DEMO_SPEC).read_text(), "ride_completion.yaml")
    # the shipped spec has no experiment: its hash is the one it had before the field existed (test_fairness too)
    assert spec_sha256(shipped) == "4e653087194043d50640808f171e8ff97ef6367122737472091801e404d753da"


@pytest.mark.parametrize(("experiment", "changes", "fragment"), [
    ({"type": "ab"}, {"serving__target": "none"}, "needs serving.target 'local'"),
    ({"type": "ab"}, {"promotion__canary": {"traffic": 0.1}}, "promotion.canary both decide"),
    ({"type": "ab", "policy": "ucb"}, {}, "['policy'] do not apply to type 'ab'"),
    ({"type": "bandit", "traffic": 0.3}, {}, "['traffic'] do not apply to type 'bandit'"),
    ({"type": "bandit", "metric": "roc_auc"}, {}, "not a mean of per-row values"),
    ({"type": "ab", "metric": "rmse"}, {}, "'rmse' is not a binary metric"),
    ({"type": "bandit", "arms": 11}, {}, "a bandit has 2 to 10 arms"),
    ({"type": "bandit", "arms": [3, 3]}, {}, "distinct registered version numbers"),
    ({"type": "bandit", "arms": 4, "min_share": 0.3}, {}, "lower it to at most 0.25"),
    ({"type": "ab", "max_duration": "a week"}, {}, "promotion.experiment.max_duration"),
])
def test_bad_experiment_specs_are_refused_naming_the_field_and_the_fix(experiment: dict[str, Any],
                                                                        changes: dict[str, Any], fragment: str) -> None:
    data = _spec_with(experiment)
    for path, value in changes.items():
        section, field = path.split("__")
        data.setdefault(section, {})[field] = value
    problems = _problems(data)
    assert any(fragment in p for p in problems), problems


def test_a_bandit_defaults_to_a_per_row_metric_and_an_ab_to_the_primary_one() -> None:
    assert experiment_metric(Experiment(type="bandit"), "binary", "roc_auc") == "accuracy"
    assert experiment_metric(Experiment(type="bandit"), "binary", "log_loss") == "log_loss"
    assert experiment_metric(Experiment(type="ab"), "binary", "roc_auc") == "roc_auc"
    assert experiment_metric(Experiment(type="bandit"), "regression", "r2") == "rmse"


# ------------------------------------------------------------------------------- per-row values
def test_per_row_values_average_to_the_metric_sklearn_computes() -> None:
    rng = np.random.default_rng(4)
    y, p = rng.integers(0, 2, 500), rng.random(500)
    assert row_values("binary", "accuracy", y, p).mean() == pytest.approx(skm.accuracy_score(y, p >= 0.5))
    assert row_values("binary", "log_loss", y, p).mean() == pytest.approx(skm.log_loss(y, p))
    assert row_values("binary", "brier", y, p).mean() == pytest.approx(skm.brier_score_loss(y, p))
    target, guess = rng.normal(10, 2, 500), rng.normal(10, 2, 500)
    assert math.sqrt(row_values("regression", "rmse", target, guess).mean()) == pytest.approx(
        math.sqrt(skm.mean_squared_error(target, guess)))
    assert row_values("regression", "mae", target, guess).mean() == pytest.approx(
        skm.mean_absolute_error(target, guess))
    assert row_values("regression", "mape", target, guess).mean() == pytest.approx(
        skm.mean_absolute_percentage_error(target, guess))
    with pytest.raises(ValueError, match="roc_auc of a binary model is not a mean of per-row values"):
        row_values("binary", "roc_auc", y, p)


def test_the_bootstraps_rank_auc_equals_sklearn_ties_included() -> None:
    rng = np.random.default_rng(11)
    y, p = rng.integers(0, 2, 700), np.round(rng.random(700), 2)  # rounded: many tied scores
    assert rank_auc(np.column_stack([y, p])) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert math.isnan(rank_auc(np.column_stack([np.ones(5), p[:5]])))


# ----------------------------------------------------------------------------------- the record
def _record(**experiment: Any) -> ExperimentRecord:
    defaults = {"traffic": 0.5} if experiment.get("type", "ab") == "ab" else {}
    spec = Experiment(**{"type": "ab", "min_labels": 100, **defaults, **experiment})
    arms = ["1", "2", "3"] if spec.type == "bandit" and spec.arms == 3 else ["1", "2"]
    return new_record(spec, task="binary", primary_metric="roc_auc", champion="1", candidate="2", arms=arms,
                      at=T0, started_by={"dag_id": "m__train", "run_id": "r1"})


def test_the_record_round_trips_through_its_tag_and_a_broken_tag_is_no_experiment() -> None:
    record = _record(traffic=0.1)
    assert record.arms == {"1": 0.9, "2": 0.1} and record.status == RUNNING and record.metric == "roc_auc"
    assert record.id == "v2-20261101T080000" and record.route == "experiment:v2-20261101T080000"
    assert read_record({TAG: record.to_json()}) == record
    assert read_record({TAG: "{not json"}) is None and read_record({}) is None
    assert record.deadline() == T0 + timedelta(days=7)
    assert record.information(T0 + timedelta(days=3, hours=12)) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------ one look
def labelled(rng: np.random.Generator, accuracy: dict[str, float], rows: int) -> pd.DataFrame:
    """`rows` labelled predictions per arm, right with probability accuracy[version]."""
    parts = []
    for version, rate in accuracy.items():
        p = rng.random(rows)
        right = rng.random(rows) < rate
        parts.append(pd.DataFrame({"model_version": version, "prediction": p,
                                   "_label": np.where(right, p >= 0.5, p < 0.5).astype(int)}))
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "roc_auc"])
def test_a_clearly_better_new_version_is_promoted_with_the_reason(metric: str) -> None:
    record = _record(metric=metric)
    look = take_look(record, labelled(np.random.default_rng(1), {"2": 0.85, "1": 0.7}, 1000), T0 + timedelta(days=2),
                     served={"1": 1200, "2": 1100})
    assert look.decision == PROMOTE and look.winner == "2", look.reason
    assert look.to_dict()["served"] == {"1": 1200, "2": 1100} and look.labels == {"1": 1000, "2": 1000}
    assert look.reason.startswith(f"{metric} v2 - v1: difference +") and "the new version is better" in look.reason
    ended = after_look(record, look, {"dag_id": "m__experiment", "run_id": "r9"})
    assert (ended.status, ended.decision, ended.looks, ended.ended_by["run_id"]) == (PROMOTED, PROMOTE, 1, "r9")


def test_too_few_labels_extend_then_keep_the_champion_at_max_duration() -> None:
    record = _record(metric="accuracy", min_labels=500)
    frame = labelled(np.random.default_rng(2), {"2": 0.95, "1": 0.5}, 300)
    early = take_look(record, frame, T0 + timedelta(days=1))
    assert early.decision == EXTEND and "min_labels 500 per arm" in early.reason and early.interval is None
    late = take_look(record, frame, T0 + timedelta(days=8))
    assert late.decision == ROLLBACK and "inconclusive, the champion stays" in late.reason


def test_a_worse_new_version_is_rolled_back_and_no_difference_keeps_the_champion_at_the_end() -> None:
    worse = take_look(_record(metric="accuracy"), labelled(np.random.default_rng(3), {"2": 0.6, "1": 0.8}, 1500),
                      T0 + timedelta(days=1))
    assert worse.decision == ROLLBACK and "the new version is worse" in worse.reason
    same = labelled(np.random.default_rng(5), {"2": 0.7, "1": 0.7}, 1500)
    assert take_look(_record(metric="accuracy"), same, T0 + timedelta(days=1)).decision == EXTEND
    final = take_look(_record(metric="accuracy"), same, T0 + timedelta(days=7))
    assert final.decision == ROLLBACK and "at max_duration: inconclusive, the champion stays" in final.reason


def _run_ab(rng: np.random.Generator, accuracy: dict[str, float], looks: int = 10, step: int = 150) -> str:
    """A whole A/B: a look a day over `looks` days, the record through its JSON between looks (as the tag)."""
    record = _record(metric="accuracy", max_duration=f"{looks}d")
    frame = labelled(rng, accuracy, looks * step)  # each arm's rows in arrival order
    arms = {v: frame[frame["model_version"] == v] for v in accuracy}
    for day in range(1, looks + 1):
        seen = pd.concat([rows.iloc[: day * step] for rows in arms.values()], ignore_index=True)
        look = take_look(record, seen, T0 + timedelta(days=day))
        record = ExperimentRecord.from_json(after_look(record, look, {}).to_json())
        if not record.running:
            interval = record.interval or {}
            low, high = interval.get("low"), interval.get("high")
            decisive = (low is not None and low > 0) or (high is not None and high < 0)
            return str(record.decision) if decisive else "undecided"
    raise AssertionError("the final look must end the experiment")


def test_with_no_effect_the_wired_readout_holds_its_false_positive_rate_over_many_runs() -> None:
    rng, runs, alpha = np.random.default_rng(21), 100, 0.05
    outcomes = [_run_ab(rng, {"2": 0.7, "1": 0.7}) for _ in range(runs)]
    false = sum(o in (PROMOTE, ROLLBACK) for o in outcomes) / runs
    assert false <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs), outcomes


def test_with_a_known_effect_the_wired_readout_promotes() -> None:
    rng = np.random.default_rng(8)
    outcomes = [_run_ab(rng, {"2": 0.78, "1": 0.7}) for _ in range(30)]
    assert outcomes.count(PROMOTE) >= 24 and ROLLBACK not in outcomes, outcomes


def test_an_early_bootstrap_look_is_as_wide_as_its_tiny_alpha_asks() -> None:
    """A percentile interval stops near the extreme resample (~3 standard errors out of 400 resamples); the
    alpha a look at t=0.2 may spend (~1e-5) asks for ~4.4: the interval uses the bootstrap standard error."""
    from statistics import NormalDist

    rng = np.random.default_rng(12)
    new, champion = rng.normal(0, 1, 800), rng.normal(0, 1, 800)
    interval = spending_bootstrap_difference(np.mean, new, champion, information=0.2, spent_before=0.0,
                                             samples=400, seed=3)
    assert interval.alpha_spent is not None and interval.alpha_spent < 2e-5
    z = NormalDist().inv_cdf(1 - interval.alpha_spent / 2)
    assert (interval.high - interval.low) / 2 == pytest.approx(z * math.sqrt(2 / 800), rel=0.15)


# --------------------------------------------------------------------------------------- bandits
def test_bandit_shares_move_to_the_better_arm_keep_the_floor_and_the_best_becomes_champion() -> None:
    record = _record(type="bandit", metric="accuracy", min_share=0.1, arms=3)
    frame = labelled(np.random.default_rng(6), {"1": 0.7, "2": 0.8, "3": 0.65}, 400)
    look = take_look(record, frame, T0 + timedelta(days=1))
    assert look.decision == UPDATE and look.shares is not None
    assert max(look.shares, key=look.shares.__getitem__) == "2" and look.shares["2"] > 0.7
    assert min(look.shares.values()) >= 0.1 - 1e-12 and sum(look.shares.values()) == pytest.approx(1.0)
    assert after_look(record, look, {}).arms == look.shares
    final = take_look(record, frame, T0 + timedelta(days=7))
    assert final.decision == PROMOTE and final.winner == "2" and "best arm with probability" in final.reason
    same = take_look(record, labelled(np.random.default_rng(7), {"1": 0.7, "2": 0.7, "3": 0.7}, 400),
                     T0 + timedelta(days=7))
    assert same.decision == ROLLBACK and "champion" in same.reason


def test_ucb_gives_the_leader_all_but_the_floor() -> None:
    record = _record(type="bandit", metric="log_loss", policy="ucb", min_share=0.05)
    look = take_look(record, labelled(np.random.default_rng(9), {"1": 0.6, "2": 0.9}, 2000), T0 + timedelta(days=1))
    assert look.shares == pytest.approx({"1": 0.05, "2": 0.95})
