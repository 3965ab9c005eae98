"""OpenLineage names, facets and operator hooks with real objects; the provider stays off unless configured.

The whole chain, emitted by the real listener during a demo run, is tests/integration/test_openlineage.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_mlops.core import lineage, lineage_names
from airflow_mlops.openlineage.record import recall, remember
from airflow_mlops.operators.features import LandRawBatchesOperator
from airflow_mlops.operators.promotion import MLflowPromoteModelOperator

pytestmark = pytest.mark.adapter


def _ti(run_id: str = "manual__1", try_number: int = 1) -> SimpleNamespace:
    return SimpleNamespace(dag_id="d", run_id=run_id, task_id="t", map_index=-1, try_number=try_number)


@pytest.mark.parametrize(("uri", "namespace"), [
    ("sqlite:////srv/mlops/mlflow/mlflow.db", "mlflow://sqlite:////srv/mlops/mlflow/mlflow.db"),
    ("postgresql+psycopg2://mlflow:secret@db:5432/mlflow?sslmode=require", "mlflow://postgresql+psycopg2://db:5432/mlflow"),
    ("http://user:token@mlflow.internal:5000", "mlflow://http://mlflow.internal:5000"),
])
def test_mlflow_namespaces_keep_the_store_and_drop_credentials(uri: str, namespace: str) -> None:
    assert lineage_names.model_version_name(uri, "m", 3) == (namespace, "models/m/versions/3")
    assert "secret" not in namespace and "token" not in namespace


def test_names_follow_the_documented_scheme(tmp_path: Path) -> None:
    assert lineage_names.file_name(tmp_path / "a.parquet") == ("file", str(tmp_path / "a.parquet"))
    offline = tmp_path / "offline"
    files = ["rides/date=2026-10-01/b1.parquet", "rides/date=2026-10-01/b2.parquet", "rides/date=2026-10-02/b1.parquet"]
    assert lineage_names.partition_names(offline, files) == [
        ("file", str(offline / "rides" / "date=2026-10-01")), ("file", str(offline / "rides" / "date=2026-10-02"))]
    assert lineage_names.feature_view_name("mlops", "driver_hourly_stats") == ("feast://mlops", "driver_hourly_stats")
    assert lineage_names.logged_model_name("sqlite:////x.db", "models:/m-abc")[1] == "logged_models/m-abc"
    assert lineage_names.serving_name("http://admin:pw@127.0.0.1:8000/", "m") == ("serving://127.0.0.1:8000", "m")


def test_a_record_belongs_to_one_task_instance_try() -> None:
    operator = SimpleNamespace()
    remember(operator, {"ti": _ti()}, {"rows": 1})
    assert recall(operator, _ti()) == {"rows": 1}
    assert recall(operator, _ti(try_number=2)) is None  # a later try that failed before recording
    assert recall(operator, _ti(run_id="manual__2")) is None
    assert recall(SimpleNamespace(), _ti()) is None


def test_land_reports_each_raw_file_and_its_partitions(tmp_path: Path) -> None:
    operator = LandRawBatchesOperator(task_id="land_raw_batches")
    assert operator.get_openlineage_facets_on_complete(_ti()) is None  # nothing recorded: nothing claimed
    summary = {"landed": 1, "already_landed": 0, "rows": 3, "batches": [
        {"dataset": "rides", "source": "b.parquet", "files": ["rides/date=2026-10-01/x.parquet"]}]}
    remember(operator, {"ti": _ti()}, {"summary": summary, "landing_dir": str(tmp_path / "landing"),
                                       "offline_dir": str(tmp_path / "offline")})
    found = operator.get_openlineage_facets_on_complete(_ti())
    assert [(d.namespace, d.name) for d in found.inputs] == [("file", str(tmp_path / "landing/rides/b.parquet"))]
    assert [d.name for d in found.outputs] == [str(tmp_path / "offline/rides/date=2026-10-01")]
    assert found.run_facets["airflowMlopsResult"].summary == {"landed": 1, "already_landed": 0, "rows": 3}


def test_promotion_reads_the_version_and_writes_it_as_champion() -> None:
    from openlineage.client.serde import Serde

    operator = MLflowPromoteModelOperator(task_id="promote", model_name="m", evaluation={}, version="2")
    result = {"version": "2", "run_id": "r", "action": "promote", "previous": "1", "audit_seq": 4}
    remember(operator, {"ti": _ti()}, {"result": result, "registry_uri": "sqlite:////x.db"})
    found = operator.get_openlineage_facets_on_complete(_ti())
    [read], [written] = found.inputs, found.outputs
    assert (read.namespace, read.name) == (written.namespace, written.name) == ("mlflow://sqlite:////x.db",
                                                                                "models/m/versions/2")
    facet = json.loads(Serde.to_json(written))["facets"]["airflowMlopsModelVersion"]
    assert facet["aliases"] == ["champion"] and facet["_schemaURL"].startswith("urn:airflow-mlops:")


def test_training_set_validation_becomes_plain_tags() -> None:
    record: dict[str, Any] = {"path": "/p.parquet", "sha256": "ab", "validation": {
        "suite": "s", "success": False, "result_id": "s/abc", "failed_expectations": 2, "failure_count": 3}}
    tags = lineage.training_set_tags(record)
    assert {k: tags[k] for k in lineage.VALIDATION_TAGS} == {
        lineage.TAG_VALIDATION_RESULT_ID: "s/abc", lineage.TAG_VALIDATION_SUCCESS: "false",
        lineage.TAG_VALIDATION_FAILED: "2", lineage.TAG_VALIDATION_SUITE: "s"}
    assert set(lineage.VALIDATION_TAGS) <= set(lineage.TRAINING_TAGS)  # copied onto the version at register
    assert lineage.validation_tags({"path": "/p", "sha256": "ab"}) == {}


def test_the_provider_is_off_without_a_transport(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No transport, config file, URL or connection: the provider disables itself and registers no listener,
    so no event is built or sent. Setting only a transport turns it on (what docs/lineage.md says)."""
    from airflow.providers.openlineage import conf

    for key in [k for k in __import__("os").environ if "OPENLINEAGE" in k]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # an openlineage.yml in the cwd alone does not switch it on either
    (tmp_path / "openlineage.yml").write_text("transport:\n  type: console\n")
    _clear(conf)
    try:
        assert conf.is_disabled()
        monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({"type": "file", "log_file_path": "x"}))
        _clear(conf)
        assert not conf.is_disabled()
    finally:
        monkeypatch.undo()
        _clear(conf)


def _clear(conf: Any) -> None:
    for name in ("is_disabled", "transport", "config_path", "config_conn_id"):
        cached = getattr(conf, name)
        if hasattr(cached, "cache_clear"):  # the provider caches some of them (functools.cache)
            cached.cache_clear()


@pytest.mark.parametrize(("result", "served"), [
    ({"name": "m", "version": "3", "target": "local", "mode": "full", "url": "http://127.0.0.1:8000"},
     ("serving://127.0.0.1:8000", "m")),
    ({"name": "m", "version": "3", "target": "kubernetes", "namespace": "ml", "deployment": "serving-m"},
     ("kubernetes://ml", "serving-m")),
])
def test_a_deployment_reads_the_version_and_writes_the_serving_target(result: dict[str, Any],
                                                                      served: tuple[str, str]) -> None:
    from airflow_mlops.openlineage.datasets import deployment_lineage

    found = deployment_lineage(result, "sqlite:////x.db")
    assert [(d.namespace, d.name) for d in found.inputs] == [("mlflow://sqlite:////x.db", "models/m/versions/3")]
    [output] = found.outputs
    assert (output.namespace, output.name) == served and output.facets["version"].datasetVersion == "3"
