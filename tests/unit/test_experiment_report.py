"""The experiment readout page: arms, the difference and its interval per look, bandit shares, the trail."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from airflow_mlops.core.audit import AuditEvent
from airflow_mlops.core.experiment_report import render_readout
from airflow_mlops.core.experiments import new_record
from airflow_mlops.core.spec import Experiment

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _event(action: str, reason: str) -> AuditEvent:
    return AuditEvent(action=action, version="2", previous="1", actor="airflow:scheduled", trigger="scheduled",
                      dag_id="m__experiment", run_id="r", at="2026-11-02T00:00:00+00:00", reason=reason, seq=3)


def test_an_ab_readout_draws_the_difference_band_and_shares_and_escapes_what_users_wrote() -> None:
    record = new_record(Experiment(type="ab", traffic=0.3, metric="accuracy"), task="binary",
                        primary_metric="roc_auc", champion="1", candidate="2", arms=["1", "2"], at=T0,
                        started_by={})
    looks = [{"step": 0, "arms": {"1": {"share": 0.7}, "2": {"share": 0.3}}},
             {"step": 1, "arms": {"1": {"share": 0.7, "labels": 250.0}, "2": {"share": 0.3, "labels": 240.0}}},
             {"step": 2, "difference": 0.04, "ci_low": -0.01, "ci_high": 0.09,
              "arms": {"1": {"share": 0.7, "labels": 500.0}, "2": {"share": 0.3, "labels": 480.0}}},
             {"step": 3, "difference": 0.05, "ci_low": 0.01, "ci_high": 0.09,
              "arms": {"1": {"share": 0.7, "labels": 800.0}, "2": {"share": 0.3, "labels": 790.0}}}]
    html = render_readout("<rides>", record, looks, [_event("experiment_start", "ab <b>started</b>"),
                                                     _event("approve", "not an experiment entry")])
    assert "&lt;rides&gt;" in html and "<rides>" not in html and "ab &lt;b&gt;started&lt;/b&gt;" in html
    assert "not an experiment entry" not in html
    [line] = re.findall(r'<polyline fill="none" stroke="#0969da" stroke-width="2" points="([^"]+)"/>', html)
    assert len(line.split()) == 2  # the two looks that reached min_labels
    assert len(re.findall(r"<polygon points=\"([^\"]+)\"", html)[0].split()) == 4  # band: 2 highs + 2 lows
    shares = re.findall(r'stroke-width="2" points="([^"]+)"><title>v(\d)</title>', html)
    assert [(len(points.split()), version) for points, version in shares] == [(4, "1"), (4, "2")]
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")


def test_without_an_experiment_the_page_says_how_one_starts() -> None:
    html = render_readout("rides", None, [], [])
    assert "No online experiment for rides" in html and "promotion.experiment" in html
