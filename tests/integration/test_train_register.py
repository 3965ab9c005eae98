"""Train -> log -> register against a real SQLite MLflow store in a fresh MLOPS_HOME.

Operators run through execute() with a minimal context, and once through dag.test() of a tiny DAG
(in a subprocess with its own AIRFLOW_HOME, because dag.test() reads DAGs from a bundle folder).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from airflow_mlops.core import lineage
from airflow_mlops.exceptions import RegistryError, TrainingFailed, TrainingSetError
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.operators.registry import MLflowRegisterModelOperator
from airflow_mlops.operators.training import SklearnTrainModelOperator
from support.airflow_db import migrated_airflow_home
from support.dag_runs import dag_file, program, run_script
from support.registry_dump import registry_dump
from support.training_sets import demo_training_set, write_training_set

pytestmark = pytest.mark.integration

MODEL = "ride_completion"
HGB = "sklearn.ensemble.HistGradientBoostingClassifier"


@pytest.fixture
def training_set(
    mlops_home: Path, small_demo: Any, migrated_db: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    (mlops_home / "mlflow").mkdir()
    # Only the Default experiment 0 (unused here) points at the template's artifact dir; the
    # experiments these tests create get this test's MLOPS_HOME (asserted below).
    shutil.copy(migrated_db, mlops_home / "mlflow" / "mlflow.db")
    return demo_training_set(small_demo, mlops_home / "training_sets")


def context(try_number: int = 1, run_id: str = "manual__2026-10-04T00:00:00+00:00") -> dict[str, Any]:
    dag = SimpleNamespace(dag_id="ride_completion__train")
    ti = SimpleNamespace(task_id="train", try_number=try_number, dag_id=dag.dag_id, run_id=run_id)
    return {"dag": dag, "ti": ti, "run_id": run_id, "logical_date": None}


def train_operator(training_set: Any, **overrides: Any) -> SklearnTrainModelOperator:
    kwargs = dict(
        task_id="train",
        model_name=MODEL,
        training_set=training_set,
        estimator=HGB,
        params={"max_iter": 15, "max_leaf_nodes": 8},
        preprocessing={"impute": "median", "scale": False},
        split={"method": "time", "test_size": 0.2},
        seed=7,
        label="completed",
        exclude_columns=["driver_id"],
    )
    return SklearnTrainModelOperator(**{**kwargs, **overrides})


def register(result: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    op = MLflowRegisterModelOperator(
        task_id="register", model_name=MODEL, run_id=result["run_id"], model_uri=result["model_uri"], **overrides
    )
    return op.execute({**context(), "ti": SimpleNamespace(task_id="register", try_number=1)})


@pytest.fixture
def trained(training_set: dict[str, Any]) -> dict[str, Any]:
    return train_operator(training_set).execute(context())


def test_training_logs_a_complete_run(trained: dict[str, Any], training_set: dict[str, Any], mlops_home: Path) -> None:
    assert set(trained) == {"run_id", "model_uri", "metrics", "experiment_id"}
    assert trained["model_uri"].startswith("models:/m-")
    assert trained["metrics"]["roc_auc"] > 0.6
    client = MLflowHook().get_conn()
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"{MODEL}-manual__2026-10-04T00:00:00+00:00-try1"
    assert client.get_experiment(trained["experiment_id"]).name == MODEL
    assert run.info.artifact_uri.startswith((mlops_home / "mlflow" / "artifacts").resolve().as_uri())
    params = run.data.params
    assert params["estimator"] == HGB and params["params.max_iter"] == "15" and params["seed"] == "7"
    assert params["preprocessing.impute"] == "median" and params["split.method"] == "time"
    assert run.data.metrics["roc_auc"] == pytest.approx(trained["metrics"]["roc_auc"])
    assert run.data.metrics["train_rows"] + run.data.metrics["validation_rows"] == training_set["rows"]
    tags = run.data.tags
    assert tags[lineage.TAG_TRAINING_SET_SHA256] == training_set["sha256"]
    assert tags[lineage.TAG_TRAINING_SET_PATH] == training_set["path"]
    assert tags[lineage.TAG_TRAINING_SET_ROWS] == str(training_set["rows"])
    assert tags[lineage.TAG_FEATURE_SERVICE] == "ride_completion_v1"
    assert "driver_hourly_stats" in tags[lineage.TAG_FEATURE_VIEWS]
    assert tags[lineage.TAG_DAG_ID] == "ride_completion__train" and tags[lineage.TAG_TRY_NUMBER] == "1"
    # Outside a git checkout (e.g. an sdist) there is no commit to record, and no tag is written.
    assert tags.get(lineage.TAG_GIT_COMMIT) == lineage.git_commit(Path(__file__).resolve().parents[2])
    artifacts = {a.path for a in client.list_artifacts(trained["run_id"], "training_set")}
    assert artifacts == {"training_set/lineage.json"}


def test_logged_model_loads_with_signature_and_pinned_requirements(trained: dict[str, Any],
                                                                  training_set: dict[str, Any]) -> None:
    import mlflow

    with MLflowHook().activated():
        model = mlflow.sklearn.load_model(trained["model_uri"])
        info = mlflow.models.get_model_info(trained["model_uri"])
        # "models:/m-<id>/requirements.txt" is parsed as registered model "m-<id>": fetch the model dir.
        reqs = (Path(mlflow.artifacts.download_artifacts(trained["model_uri"])) / "requirements.txt").read_text()
    columns = [spec.name for spec in info.signature.inputs.inputs]
    assert "driver_hourly_stats__conv_rate" in columns and "driver_id" not in columns
    # the training set's own column types: an int64 column is `long`, so int64 frames pass MLflow's enforcement
    frame = pd.read_parquet(training_set["path"], columns=columns)
    expected = {c: "long" if str(frame[c].dtype) == "int64" else "double" for c in columns}
    assert {spec.name: spec.type.name for spec in info.signature.inputs.inputs} == expected
    assert info.flavors["sklearn"]["serialization_format"] == "cloudpickle"
    assert info.flavors["python_function"]["predict_fn"] == "predict_proba"  # pyfunc and `mlflow models serve`
    assert "scikit-learn==" in reqs and "cloudpickle==" in reqs
    rows = pd.DataFrame([{c: 1.0 for c in columns}, {c: None for c in columns}], dtype="float64")
    assert model.predict_proba(rows).shape == (2, 2)
    with MLflowHook().activated():
        pyfunc = mlflow.pyfunc.load_model(trained["model_uri"])
    proba = pyfunc.predict(frame.head(3))  # the training set's rows as they are, int64 columns included
    assert proba.shape == (3, 2) and proba.sum(axis=1) == pytest.approx([1.0] * 3)


def test_register_twice_creates_one_version_with_alias_and_lineage(
    trained: dict[str, Any], training_set: dict[str, Any]
) -> None:
    import mlflow

    first = register(trained, description="Predicts ride completion.")
    again = register(trained)
    assert first == {"name": MODEL, "version": "1", "run_id": trained["run_id"], "alias": "challenger", "created": True,
                     "alias_moved": True, "repeat": False}
    assert again == {**first, "created": False}
    client = MLflowHook().get_conn()
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1
    assert client.get_registered_model(MODEL).description == "Predicts ride completion."
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(version.version) == "1" and version.run_id == trained["run_id"]  # an int on SQL stores
    assert version.tags[lineage.TAG_TRAINING_SET_SHA256] == training_set["sha256"]
    assert version.tags[lineage.TAG_SOURCE_RUN_ID] == trained["run_id"]
    assert version.tags[lineage.TAG_DAG_ID] == "ride_completion__train"
    with MLflowHook().activated():
        model = mlflow.sklearn.load_model(f"models:/{MODEL}@challenger")
        frame = pd.read_parquet(training_set["path"])
        features = [
            spec.name for spec in mlflow.models.get_model_info(f"models:/{MODEL}@challenger").signature.inputs.inputs
        ]
    proba = model.predict_proba(frame[features].astype("float64").head(20))[:, 1]
    assert ((proba > 0) & (proba < 1)).all()


def test_second_training_run_becomes_version_two_and_moves_the_alias(
    trained: dict[str, Any], training_set: dict[str, Any]
) -> None:
    register(trained)
    retrained = train_operator(training_set, params={"max_iter": 16, "max_leaf_nodes": 8}).execute(
        context(run_id="manual__second"))
    second = register(retrained)
    assert second["version"] == "2" and second["created"] is True
    client = MLflowHook().get_conn()
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "2"
    # Clearing the first run's register task later must not take the alias back from v2.
    again = register(trained)
    assert (again["version"], again["created"], again["alias_moved"]) == ("1", False, False)
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "2"


EVALUATION = {"promote": True, "champion_version": None, "primary_metric": "roc_auc", "challenger_value": 0.8,
              "gain": None, "ci": None, "reasons": [], "summary": "first model"}
RETRAIN = {"reason": "manual: run manual__x", "trigger": "manual", "events": []}


def test_identical_retrains_register_nothing_and_leave_the_registry_as_it_was(
    trained: dict[str, Any], training_set: dict[str, Any]
) -> None:
    first = register(trained, evaluation=EVALUATION, retrain=RETRAIN)
    client = MLflowHook().get_conn()
    before = registry_dump(client, MODEL)
    fingerprint = before["versions"]["1"]["tags"][lineage.TAG_FINGERPRINT]
    assert first["created"] and len(fingerprint) == 64
    assert client.get_run(trained["run_id"]).data.tags[lineage.TAG_FINGERPRINT] == fingerprint

    repeats = []
    for n in (2, 3):  # the whole DAG again, twice, on unchanged data, spec, code and params
        again = train_operator(training_set).execute(context(run_id=f"manual__again{n}"))
        assert again["metrics"] == trained["metrics"]  # same data + seed -> same model
        # with an evaluation and a retrain cause that a new version would get as tags
        repeats.append((again, register(again, evaluation={**EVALUATION, "summary": "same"}, retrain=RETRAIN)))
    for again, result in repeats:
        assert (result["repeat"], result["version"], result["created"], result["alias_moved"]) == (True, "1", False,
                                                                                                  False)
        assert result["fingerprint"] == fingerprint and result["run_id"] == again["run_id"]
        assert f"{MODEL} v1 (run {trained['run_id']})" in result["reason"] and fingerprint in result["reason"]
        assert client.get_run(again["run_id"]).data.tags[lineage.TAG_REPEAT_OF] == "1"
    assert registry_dump(client, MODEL) == before, "versions, aliases, audit and model tags exactly as before"

    # Clearing the repeating run's register task: a repeat again, still nothing written.
    again, result = repeats[0]
    assert register(again, evaluation=EVALUATION, retrain=RETRAIN) == result
    assert registry_dump(client, MODEL) == before
    # Clearing the first run's register task still finds its own version (not a repeat of itself).
    assert register(trained, evaluation=EVALUATION, retrain=RETRAIN) == {**first, "created": False}


def _changed_training_set(training_set: dict[str, Any]) -> dict[str, Any]:
    frame = pd.read_parquet(training_set["path"]).iloc[:-1]  # one label row fewer
    path = Path(training_set["path"]).with_name("ride_completion_changed.parquet")
    return {**write_training_set(frame, path), **{k: v for k, v in training_set.items()
                                                   if k not in ("path", "sha256", "rows")}}


@pytest.mark.parametrize("change", ["params", "training_set", "spec"])
def test_a_changed_fingerprint_input_registers_a_new_version(
    trained: dict[str, Any], training_set: dict[str, Any], change: str
) -> None:
    register(trained)
    records = {"training_set": _changed_training_set(training_set)} if change == "training_set" else {}
    overrides: dict[str, Any] = {"params": {"params": {"max_iter": 16, "max_leaf_nodes": 8}},
                                 "spec": {"spec_sha256": "5" * 64}}.get(change, {})
    retrained = train_operator(records.get(change, training_set), **overrides).execute(
        context(run_id=f"manual__{change}"))
    second = register(retrained)
    assert (second["version"], second["created"], second["repeat"]) == ("2", True, False)
    client = MLflowHook().get_conn()
    tags = {v: client.get_model_version(MODEL, v).tags for v in ("1", "2")}
    assert tags["1"][lineage.TAG_FINGERPRINT] != tags["2"][lineage.TAG_FINGERPRINT]
    assert (tags["2"].get(lineage.TAG_SPEC_SHA256) == "5" * 64) is (change == "spec")
    assert lineage.TAG_REPEAT_OF not in client.get_run(retrained["run_id"]).data.tags


def test_a_run_without_a_commit_has_no_fingerprint_and_is_never_a_repeat(
    trained: dict[str, Any], training_set: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    register(trained)
    monkeypatch.setattr(lineage, "git_commit", lambda project_dir: None)  # e.g. a wheel install in an image
    retrained = train_operator(training_set).execute(context(run_id="manual__nocommit"))
    tags = MLflowHook().get_conn().get_run(retrained["run_id"]).data.tags
    assert lineage.TAG_FINGERPRINT not in tags and lineage.TAG_GIT_COMMIT not in tags
    assert (register(retrained)["version"], register(retrained)["repeat"]) == ("2", False)


def test_register_rejects_a_model_uri_from_another_run(trained: dict[str, Any], training_set: dict[str, Any]) -> None:
    other = train_operator(training_set).execute(context(run_id="manual__other"))
    with pytest.raises(RegistryError, match="was logged by run"):
        register({"run_id": trained["run_id"], "model_uri": other["model_uri"]})


def test_changed_snapshot_is_refused(training_set: dict[str, Any]) -> None:
    Path(training_set["path"]).write_bytes(Path(training_set["path"]).read_bytes() + b"\0")
    with pytest.raises(TrainingSetError, match="changed after it was recorded"):
        train_operator(training_set).execute(context())


def test_bad_estimator_names_the_spec_field_and_leaves_no_run(training_set: dict[str, Any]) -> None:
    with pytest.raises(TrainingFailed, match=r"^training\.estimator: .*sklearn\.ensemble\.Forest"):
        train_operator(training_set, estimator="sklearn.ensemble.Forest").execute(context())
    with pytest.raises(TrainingFailed, match=r"^training\.params"):
        train_operator(training_set, params={"n_trees": 3}).execute(context())
    client = MLflowHook().get_conn()
    experiment = client.get_experiment_by_name(MODEL)
    assert experiment is None or not client.search_runs([experiment.experiment_id])


def test_failed_logging_ends_the_run_failed(training_set: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.sklearn

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(mlflow.sklearn, "log_model", broken)
    with pytest.raises(OSError, match="disk full"):
        train_operator(training_set).execute(context())
    client = MLflowHook().get_conn()
    runs = client.search_runs([client.get_experiment_by_name(MODEL).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_retry_closes_a_run_an_earlier_try_left_running(training_set: dict[str, Any]) -> None:
    hook = MLflowHook()
    client = hook.get_conn()
    experiment_id = hook.experiment_id(MODEL)
    tags = lineage.airflow_context_tags(context(try_number=1))
    orphan = client.create_run(experiment_id, tags=tags, run_name="killed try")  # SIGKILLed mid-run
    result = train_operator(training_set).execute(context(try_number=2))
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert client.get_run(result["run_id"]).info.status == "FINISHED"


def test_training_set_may_be_json_text(training_set: dict[str, Any]) -> None:
    import json

    result = train_operator(
        json.dumps(training_set),
        estimator="sklearn.linear_model.LogisticRegression",
        params={"max_iter": 300},
        preprocessing={"impute": "mean", "scale": True},
    ).execute(context())
    assert result["metrics"]["roc_auc"] > 0.6


def test_template_fields_are_declared() -> None:
    assert "training_set" in SklearnTrainModelOperator.template_fields
    assert {"run_id", "model_uri", "alias"} <= set(MLflowRegisterModelOperator.template_fields)
    assert "(templated)" in (SklearnTrainModelOperator.__doc__ or "")
    assert "(templated)" in (MLflowRegisterModelOperator.__doc__ or "")


DAG_FILE = dag_file("tiny_train")

RUNNER = program("train_register_runner")


def test_dag_test_chains_training_set_train_and_register(
    training_set: dict[str, Any], tmp_path: Path, mlops_home: Path
) -> None:
    import json

    dags = tmp_path / "dags"
    dags.mkdir()
    lineage_file = tmp_path / "lineage.json"
    lineage_file.write_text(json.dumps(training_set))
    (dags / "tiny_train.py").write_text(DAG_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "MLFLOW_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        MLOPS_HOME=str(mlops_home),
        TEST_DAG_PARAMS=json.dumps({"lineage_file": str(lineage_file)}),
    )
    migrated_airflow_home(Path(env["AIRFLOW_HOME"]))  # one migrate per session, copied
    done = run_script(RUNNER, str(dags), env=env, cwd=tmp_path, timeout=300)
    output = done.stdout + done.stderr
    assert "STATE success" in output, output[-4000:]
    client = MLflowHook().get_conn()
    version = client.get_model_version_by_alias("tiny", "challenger")
    run = client.get_run(version.run_id)
    assert run.data.tags[lineage.TAG_DAG_ID] == "tiny_train"
    assert run.data.tags[lineage.TAG_RUN_ID].startswith("manual__")
    assert run.info.run_name.startswith("tiny-manual__")
    assert version.tags[lineage.TAG_TRAINING_SET_SHA256] == training_set["sha256"]
    assert not (tmp_path / "mlruns").exists()
