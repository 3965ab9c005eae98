"""Every page type is an autoescaped template: a hostile user value comes out as text, never as markup.

Model names and descriptions come from spec files, column names and slice values from data, run ids
and versions from Airflow and MLflow: each page below gets `<script>alert(1)</script>` in such a
field and must show it escaped. `ESCAPED` has no quote, so Jinja's spelling of quotes does not matter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from jinja2 import UndefinedError
from starlette.requests import Request

from airflow_mlops.core import drift, evaluation_report, model_card, validation, validation_report
from airflow_mlops.core.evaluation import evaluate
from airflow_mlops.core.spec import Drift
from airflow_mlops.core.suites import load_suite
from airflow_mlops.core.templating import environment, render
from airflow_mlops.plugin import ui

pytestmark = pytest.mark.adapter

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def assert_escaped(page: str, times: int = 1) -> None:
    assert HOSTILE not in page
    assert page.count(ESCAPED) >= times, page


@pytest.fixture(scope="module")
def result() -> dict:
    """A real evaluation whose slice column, one slice value and the challenger version are hostile."""
    rng = np.random.default_rng(3)
    y = (rng.random(600) < 0.5).astype(int)
    p = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.2, 600), 0.01, 0.99)
    frame = pd.DataFrame({HOSTILE: rng.choice(["north", HOSTILE], 600).astype(object)})
    return evaluate(y, p, 1 - p, metrics=["roc_auc"], primary_metric="roc_auc", bootstrap_samples=50,
                    slices=[{"column": HOSTILE}], slice_frame=frame, champion_version="1",
                    challenger_version=HOSTILE).to_dict()


def test_evaluation_report(result: dict) -> None:
    page = evaluation_report.render_html(result, title=f"{HOSTILE} report")
    # title (twice), version, slice heading, group cell, bar labels, SVG aria-label and tick titles
    assert_escaped(page, times=8)


def test_model_card_html_and_markdown(result: dict) -> None:
    card = model_card.build_model_card(
        model={"name": HOSTILE, "description": HOSTILE, "tags": [HOSTILE]}, version=HOSTILE, run_id=HOSTILE,
        lineage={"feature_service": HOSTILE}, evaluation=result, training={"feature_columns": [HOSTILE]})
    assert_escaped(model_card.render_html(card), times=6)
    assert_escaped(model_card.render_markdown(card), times=6)


def test_validation_report_and_run_index(tmp_path: Path) -> None:
    frame = pd.DataFrame({"driver_id": [1001], "event_timestamp": pd.to_datetime(["2026-10-01"], utc=True),
                          "conv_rate": [1.5], "acc_rate": [0.5], HOSTILE: [1]})
    result = validation.validate_frame(frame, load_suite("driver_hourly_stats"),
                                       now=datetime(2026, 11, 1, tzinfo=UTC), batch_id="b1", source=HOSTILE)
    assert_escaped(validation_report.render_html(result), times=2)  # source and the columns line
    entry = {**result, "report": validation_report.write_report(result, tmp_path), "quarantined_to": HOSTILE}
    written = validation_report.write_run_index(
        [entry], tmp_path, dag_id="d", run_id=HOSTILE, task_id="t", title=HOSTILE,
        unconsumed=[{"file": HOSTILE, "reason": HOSTILE}])
    assert_escaped(Path(written["html"]).read_text(), times=6)


def test_drift_page(tmp_path: Path) -> None:
    reference = pd.DataFrame({HOSTILE: np.arange(50.0)})
    result = drift.check_drift(reference, pd.DataFrame({"other": np.arange(50.0)}), [HOSTILE], Drift())
    assert result.snapshot is None  # nothing comparable: the page is ours alone
    saved = drift.save_report(result, tmp_path, ["m", "d", "r"], context={"model": HOSTILE})
    assert_escaped(Path(saved["html"]).read_text(), times=3)  # summary, column cell, model fact


def test_ui_shell_and_empty_document() -> None:
    request = Request({"type": "http", "root_path": "/mlops", "headers": [], "method": "GET", "path": "/"})
    shell = ui.page(request, "model", f"Model {HOSTILE}", model=HOSTILE).body.decode()
    assert_escaped(shell, times=2)  # <title> and data-model
    assert 'data-model="&lt;script&gt;' in shell and shell.count("<script") == 1  # only mlops.js
    empty = ui._empty_document(HOSTILE, f"v{HOSTILE}", "model_card", HOSTILE)
    assert empty.status_code == 404
    assert_escaped(empty.body.decode(), times=3)


def test_every_template_compiles_and_is_autoescaped() -> None:
    env = environment()
    names = [n for n in env.list_templates() if n.endswith(".j2")]
    assert len(names) >= 12
    for name in names:
        env.get_template(name)  # a syntax error names the file here rather than in a DAG run
    assert env.autoescape is True


def test_a_missing_variable_is_an_error_not_an_empty_cell() -> None:
    with pytest.raises(UndefinedError, match="label"):
        render("ui_empty_document.html.j2", name="m", which="v1", run_id="r", artifact="a.html")
