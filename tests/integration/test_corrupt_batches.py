"""The bad-input corpus through `dag.test()` of the real feature DAG (`mlops_features`, built from the shipped specs).

One subprocess with its own migrated Airflow metadata DB and MLOPS_HOME runs, in order:

1. a good demo batch (both datasets) through validate → land → feast apply → materialize;
2. the same again with nothing new: a no-op (validation sees no file, materialize skips);
3. each corrupt batch of `tests/data/corrupt` alone in the landing dir: `validate_raw_batches` fails,
   land/apply/materialize never run, the file is in quarantine with its report, and the offline store,
   Feast registry and online store are byte-identical (sha256 of every file before/after);
4. a good next-day CSV batch together with a bad parquet: the run fails, the bad file is quarantined,
   the CSV waits; the next run lands the CSV and materializes it.

The runner reads task states and XComs from the metadata DB after each run (fine in a test, never in a task).
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from data.corrupt.batches import CORRUPTIONS, RIDES, STATS, Corruption, base_frames, write_corpus
from support.airflow_db import migrated_airflow_home
from support.dag_runs import program, run_script

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PROJECT = Path(__file__).resolve().parents[2]
GOOD_START = datetime(2026, 10, 1, tzinfo=UTC)
ASSET_URL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", re.I)

RUNNER = program("corrupt_batches_runner")


# Cases that need the landed history of the "good" step: (label, dataset, files, what the message must say).
HISTORY_CASES = (
    ("resent_rows", STATS, ["resent.csv"], "column 'driver_id+event_timestamp': rule row_key_unique"),
    ("conflicting_backfill", RIDES, ["backfill.parquet"], "column 'ride_id': rule no_conflicting_corrections"),
    ("repeated_across_files", STATS, ["part_a.parquet", "part_b.parquet"], "also in an earlier file of this run"),
    ("before_landed_history", STATS, ["old.parquet"], "column 'event_timestamp': rule timestamps_within_backfill_span"),
)


def _history_cases(tmp_path: Path, good: dict[str, Any]) -> list[dict[str, Any]]:
    """The files of HISTORY_CASES, written from the good batch that the first step lands."""
    import pandas as pd

    stats, rides = good[STATS], good[RIDES]
    later = base_frames(datetime(2026, 10, 20, tzinfo=UTC), days=1, seed=13)[STATS]
    year_before = stats.head(48).assign(event_timestamp=lambda f: f["event_timestamp"] - pd.Timedelta(days=400),
                                        created=lambda f: f["created"] - pd.Timedelta(days=400))
    frames = {"resent.csv": stats.head(40), "backfill.parquet": rides.head(20).assign(completed=1 - rides["completed"]),
              "part_a.parquet": later.iloc[:120], "part_b.parquet": later.iloc[100:], "old.parquet": year_before}
    for name, frame in frames.items():
        writer = frame.to_csv if name.endswith(".csv") else frame.to_parquet
        writer(tmp_path / name, index=False)
    return [{"label": label, "drops": [[dataset, str(tmp_path / f)] for f in files], "clear": True}
            for label, dataset, files, _ in HISTORY_CASES]


def _plan(tmp_path: Path) -> list[dict[str, Any]]:
    good = base_frames(GOOD_START, days=3, seed=11)
    for dataset, frame in good.items():
        frame.to_parquet(tmp_path / f"{dataset}.parquet", index=False)
    corpus = write_corpus(tmp_path / "corpus", datetime(2026, 10, 10, tzinfo=UTC))
    next_day = base_frames(datetime(2026, 10, 4, tzinfo=UTC), days=1, seed=12)[STATS]
    next_day.to_csv(tmp_path / "next_day.csv", index=False)
    next_day.assign(conv_rate=3.0).to_parquet(tmp_path / "next_day_bad.parquet", index=False)
    return [
        {"label": "good", "drops": [[d, str(tmp_path / f"{d}.parquet")] for d in good]},
        {"label": "again", "drops": []},
        *[{"label": c.case, "drops": [[c.dataset, str(corpus[c.case])]]} for c in CORRUPTIONS],
        *_history_cases(tmp_path, good),
        {"label": "mixed", "drops": [[STATS, str(tmp_path / "next_day.csv")],
                                     [STATS, str(tmp_path / "next_day_bad.parquet")]], "clear": True},
        {"label": "next", "drops": []},
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp_path = tmp_path_factory.mktemp("corrupt_dag")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(_plan(tmp_path)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "MLOPS_"))}
    # dag.test() syncs the DAG from the dags folder's bundle: the project's own DAG file.
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT / "dags"), MLOPS_HOME=str(tmp_path / "home"))
    migrated_airflow_home(Path(env["AIRFLOW_HOME"]))  # one migrate per session, copied
    done = run_script(RUNNER, str(plan), env=env, cwd=tmp_path, timeout=800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (done.stdout + done.stderr)[-6000:]
    results = json.loads(lines[-1][len("RESULT "):])
    return {r["label"]: {**r, "home": tmp_path / "home"} for r in results}


def test_the_feature_pipeline_passes_on_demo_data(runs: dict[str, dict[str, Any]]) -> None:
    good = runs["good"]
    assert good["state"] == "success" and set(good["tasks"].values()) == {"success"}, good
    assert sorted(good["validation"]["passed"]) == ["driver_hourly_stats/driver_hourly_stats.parquet",
                                                    "rides/rides.parquet", "trips/trips.parquet"]
    assert any(s.startswith("offline/rides/") for s in good["stores"])
    assert any(s.startswith("feast/online") for s in good["stores"]), "materialized to the online store"
    assert good["link"].startswith("/mlops/reports/validation/_runs/mlops_features/"), good["link"]


def test_a_second_run_with_the_same_batch_is_a_no_op(runs: dict[str, dict[str, Any]]) -> None:
    again = runs["again"]
    assert again["state"] == "success" and again["unchanged"], again
    assert again["validation"]["files"] == 0 and again["tasks"]["materialize"] == "skipped"


@pytest.mark.parametrize("corruption", CORRUPTIONS, ids=lambda c: c.case)
def test_a_corrupt_batch_stops_at_validation_and_leaves_the_stores_untouched(
    runs: dict[str, dict[str, Any]], corruption: Corruption
) -> None:
    run = runs[corruption.case]
    assert run["state"] == "failed"
    assert run["tasks"] == {"validate_raw_batches": "failed", "land_raw_batches": "upstream_failed",
                            "feast_apply": "upstream_failed", "materialize": "upstream_failed",
                            "check_freshness": "upstream_failed"}, run["tasks"]
    assert run["unchanged"], "offline store, Feast registry and online store must be byte-identical"
    message = run["validation"]["message"]
    assert corruption.expected in message, message
    assert f"quarantine/{corruption.dataset}/{corruption.file_name}" in message and "full report:" in message
    assert f"{corruption.dataset}/{corruption.file_name}" in run["quarantine"]
    assert f"{corruption.dataset}/{corruption.file_name}.report.html" in run["quarantine"]
    assert run["landing"] == [], "the bad file left the landing dir"
    report = Path(run["validation"]["entries"][0]["report"]["html"]).read_text(encoding="utf-8")
    assert not ASSET_URL.search(report) and "https://" not in report and "http://" not in report


@pytest.mark.parametrize(("label", "dataset", "files", "expected"), HISTORY_CASES, ids=[c[0] for c in HISTORY_CASES])
def test_rows_that_clash_with_the_landed_history_stop_at_validation(
    runs: dict[str, dict[str, Any]], label: str, dataset: str, files: list[str], expected: str
) -> None:
    run = runs[label]
    assert run["state"] == "failed" and run["tasks"]["land_raw_batches"] == "upstream_failed", run["tasks"]
    assert run["unchanged"], "offline store, Feast registry and online store must be byte-identical"
    assert expected in run["validation"]["message"], run["validation"]["message"]
    assert f"{dataset}/{files[-1]}" in run["quarantine"] and f"{dataset}/{files[-1]}" not in run["landing"]


def test_good_files_wait_while_bad_ones_are_quarantined_and_land_on_the_next_run(
    runs: dict[str, dict[str, Any]]
) -> None:
    mixed, following = runs["mixed"], runs["next"]
    assert mixed["state"] == "failed" and mixed["unchanged"]
    assert mixed["landing"] == ["driver_hourly_stats/next_day.csv"]
    assert "driver_hourly_stats/next_day_bad.parquet" in mixed["quarantine"]
    assert "column 'conv_rate': rule expect_column_values_to_be_between" in mixed["validation"]["message"]

    assert following["state"] == "success" and set(following["tasks"].values()) == {"success"}, following["tasks"]
    assert following["validation"]["passed"] == ["driver_hourly_stats/next_day.csv"]
    assert not following["unchanged"] and following["landing"] == [], "the CSV was landed and materialized"
    assert any(s.startswith("offline/driver_hourly_stats/date=2026-10-04/") for s in following["stores"])
