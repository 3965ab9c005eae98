"""Several serving workers (serving/workers.py, serving/metrics.py): one set of metrics from their files.

Real worker stand-ins: separate Python processes with PROMETHEUS_MULTIPROC_DIR set (prometheus_client picks
its multiprocess mode at import, so it cannot be switched on inside this process), each with a
ServingMetrics counting its own requests, versions and log records; this process merges their files as
/metrics does. tests/integration/test_serving_workers.py runs the real `serve --workers 2`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from airflow_mlops.exceptions import MLOpsError
from airflow_mlops.serving import workers
from airflow_mlops.serving.metrics import render_dir, workers_in

pytestmark = pytest.mark.unit

WORKER = Path(__file__).resolve().parents[1] / "support" / "programs" / "serving_metrics_worker.py"


def run_worker(directory: Path, requests: int, versions: list[str], written: int) -> int:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run([sys.executable, str(WORKER), json.dumps([requests, versions, written])], env=env,
                          capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["multiprocess"], "prometheus_client took its multiprocess mode from the variable"
    return int(report["pid"])


def samples(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(render_dir(str(directory)).decode())
            for s in family.samples}


def test_metrics_of_two_workers_merge_and_a_dead_one_leaves_the_live_series(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    first = run_worker(tmp_path, requests=3, versions=["1", "2"], written=5)  # followed the alias to v2
    second = run_worker(tmp_path, requests=4, versions=["1"], written=7)  # still on v1
    got = samples(tmp_path)
    requests = {dict(labels)["version"]: value for (name, labels), value in got.items()
                if name == "mlops_serving_requests_total"}
    assert requests == {"2": 3, "1": 4}
    v1_timed = ("mlops_serving_request_seconds_count", (("model", "rides"), ("route", "primary"), ("version", "1")))
    assert got[v1_timed] == 4
    written = ("mlops_serving_prediction_log_written_total", (("model", "rides"),))
    assert got[written] == 12, "summed over workers"
    info = {dict(labels)["version"]: value for (name, labels), value in got.items()
            if name == "mlops_serving_model_info"}
    assert info == {"1": 1.0, "2": 1.0}, "v1 still served by one live worker, v2 by the other"
    assert {name for name, _ in got if not name.startswith("mlops_serving_")} == set(), "ours only, as one process"
    assert workers_in(str(tmp_path), "rides") == {first: {"primary": "2"}, second: {"primary": "1"}}
    assert workers_in(str(tmp_path), "other_model") == {}

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    workers.mark_dead(second)  # what the supervisor does when a worker is gone
    got = samples(tmp_path)
    info = {dict(labels)["version"]: value for (name, labels), value in got.items()
            if name == "mlops_serving_model_info"}
    assert info == {"1": 0.0, "2": 1.0}, "no live worker serves v1 (the first left its v1 series at 0)"
    assert workers_in(str(tmp_path), "rides") == {first: {"primary": "2"}}
    assert got[written] == 12, "a dead worker's counts stay"
    assert sum(v for (name, _), v in got.items() if name == "mlops_serving_requests_total") == 7


def test_metrics_dir_is_fresh_per_server_or_the_given_one_wiped(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(workers.MULTIPROC_ENV, raising=False)
    with workers.metrics_dir(1) as none:
        assert none is None and workers.MULTIPROC_ENV not in os.environ, "one worker: the in-process registry"
    with workers.metrics_dir(2) as fresh:
        assert fresh is not None and fresh.is_dir() and not any(fresh.iterdir())
        assert os.environ[workers.MULTIPROC_ENV] == str(fresh)
    assert not fresh.exists() and workers.MULTIPROC_ENV not in os.environ, "removed with the server"

    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"an earlier run")
    (given / "notes.txt").write_text("not ours")
    monkeypatch.setenv(workers.MULTIPROC_ENV, str(given))
    for count in (1, 3):
        with workers.metrics_dir(count) as used:
            assert used == given and sorted(p.name for p in given.iterdir()) == ["notes.txt"]
    assert given.is_dir(), "a directory the user gave is kept"


def test_one_process_swaps_versions_without_a_warning_when_feast_exported_the_variable(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow_mlops.serving.metrics import ServingMetrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # as importing feast.metrics does
    metrics = ServingMetrics("rides")
    assert metrics.multiprocess_dir is None, "this process's prometheus_client keeps its values in memory"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.set_versions("1", None)
        metrics.set_versions("2", None)
    text = metrics.render()[0].decode()
    assert 'slot="primary",version="2"} 1.0' in text and 'version="1"' not in text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_workers_env_must_be_a_whole_number(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(workers.WORKERS_ENV, value)
    with pytest.raises(MLOpsError, match=r"MLOPS_SERVING_WORKERS=.*must be a whole number >= 1"):
        workers.workers_from_env()


def test_workers_env_defaults_to_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(workers.WORKERS_ENV, raising=False)
    assert workers.workers_from_env() == 1
    monkeypatch.setenv(workers.WORKERS_ENV, "4")
    assert workers.workers_from_env() == 4
