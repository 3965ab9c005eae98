"""Model specs: valid files load; each kind of bad input names the file, the field and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_mlops.core.spec import load_specs, parse_spec, spec_problems
from airflow_mlops.exceptions import SpecError
from support.spec_edits import read_with_fields

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[2]
DEMO_SPEC = PROJECT / "include" / "models" / "ride_completion.yaml"


def _demo(**changes: object) -> dict:
    return read_with_fields(DEMO_SPEC, **changes)


def _problems(data: dict, name: str = "ride_completion.yaml") -> list[str]:
    return spec_problems(yaml.safe_dump(data), f"/specs/{name}")


def test_shipped_specs_load() -> None:
    specs = load_specs(PROJECT / "include" / "models")
    assert [s.name for s in specs] == ["ride_completion", "ride_duration"]
    assert specs[0].features.feature_service == "ride_completion_v1"
    assert specs[0].source_file.endswith("ride_completion.yaml")
    # the shipped regression example states no task: its training suite's label contract decides it
    assert (specs[0].task, specs[1].task) == ("binary", "regression")
    assert specs[1].task_source == "label contract ride_duration_training.json: column 'duration_min' has type float64"
    assert specs[1].evaluation.primary_metric == "rmse"


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"training__bogus": 1}, "training.bogus", "unknown field"),
        ({"evaluation__primary_metric": "auc"}, "evaluation.primary_metric", "'roc_auc'"),
        ({"training__estimator": "HistGradientBoosting"}, "training.estimator", "dotted import path"),
        ({"training__split__test_size": 1.5}, "training.split.test_size", "less than 0.9"),
        ({"promotion__approval": "sometimes"}, "promotion.approval", "'auto' or 'manual'"),
        ({"monitoring__cooldown": "six hours"}, "monitoring.cooldown", "pattern"),
        ({"features__feature_views": []}, "features.feature_views", "at least 1"),
    ],
)
def test_bad_field_is_named_with_value_and_rule(change: dict, field: str, fragment: str) -> None:
    problems = _problems(_demo(**change))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"/specs/ride_completion.yaml: {field}:")
    assert fragment in problems[0]


def test_missing_required_field() -> None:
    data = _demo()
    del data["features"]["label"]
    assert _problems(data) == ["/specs/ride_completion.yaml: features.label: required field is missing"]


def test_name_must_match_file() -> None:
    problems = _problems(_demo(), name="other.yaml")
    assert "must equal the file name 'other'" in problems[0]


def test_invalid_yaml_and_non_mapping() -> None:
    assert "not valid YAML" in spec_problems("name: [unclosed", "/specs/x.yaml")[0]
    assert "expected a mapping" in spec_problems("- a\n- b\n", "/specs/x.yaml")[0]


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    good = _demo()
    bad_a = _demo(training__bogus=1, evaluation__primary_metric="auc")
    bad_b = {**_demo(name="b_model"), "extra_top": True}
    for name, data in {"ride_completion": good, "a_model": {**bad_a, "name": "a_model"}, "b_model": bad_b}.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as err:
        load_specs(tmp_path)
    message = str(err.value)
    assert "3 problem(s)" in message
    assert "a_model.yaml: training.bogus" in message and "a_model.yaml: evaluation.primary_metric" in message
    assert "b_model.yaml: extra_top: unknown field" in message


def test_missing_directory_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="MLOPS_MODELS_DIR"):
        load_specs(tmp_path / "nope")


def test_reserved_source_file_field() -> None:
    assert "reserved field" in _problems({**_demo(), "source_file": "x"})[0]


def test_parse_returns_frozen_model() -> None:
    spec = parse_spec(DEMO_SPEC.read_text(), str(DEMO_SPEC))
    with pytest.raises(Exception, match="frozen"):
        spec.name = "x"  # type: ignore[misc]


def test_parsing_imports_no_heavy_library() -> None:
    code = (
        "import sys; from airflow_mlops.core.spec import load_specs; load_specs(); "
        "heavy = {'pandas','numpy','sklearn','mlflow','feast','evidently','great_expectations','pyarrow'}; "
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("target", ["none", "kubernetes"])
def test_a_canary_without_the_local_serving_target_is_refused(target: str) -> None:
    data = _demo(promotion__canary={"traffic": 0.1}, serving={"target": target})
    [problem] = _problems(data)
    assert problem.startswith("/specs/ride_completion.yaml: promotion.canary needs serving.target")
    assert f"promotion.canary needs serving.target 'local' (got '{target}')" in problem
    assert "remove promotion.canary or set serving.target: local" in problem
    assert _problems(_demo(promotion__canary={"traffic": 0.1}, serving={"target": "local"})) == []


def test_training_queue_defaults_to_default_and_is_validated() -> None:
    assert parse_spec(DEMO_SPEC.read_text(), str(DEMO_SPEC)).training.queue == "default"
    assert _problems(_demo(training__queue="gpu-heavy.1")) == []
    [problem] = _problems(_demo(training__queue="training,default"))
    assert problem.startswith("/specs/ride_completion.yaml: training.queue:") and "pattern" in problem


def test_the_training_queue_is_not_model_content() -> None:
    """Moving training to other workers is no new model: the spec hash (part of the fingerprint) stays."""
    from airflow_mlops.core.spec import spec_sha256

    base = parse_spec(yaml.safe_dump(_demo()), "ride_completion.yaml")
    moved = parse_spec(yaml.safe_dump(_demo(training__queue="training")), "ride_completion.yaml")
    assert spec_sha256(moved) == spec_sha256(base)


def test_evaluation_explanations_are_validated_and_only_a_stated_block_changes_the_hash() -> None:
    from airflow_mlops.core.spec import spec_sha256

    base = parse_spec(yaml.safe_dump(_demo()), "ride_completion.yaml")
    assert base.explanations_config() is None
    stated = parse_spec(yaml.safe_dump(_demo(evaluation__explanations={"method": "shap", "max_rows": 500})),
                        "ride_completion.yaml")
    assert stated.explanations_config() == {"method": "shap", "max_rows": 500, "repeats": 3}
    assert spec_sha256(stated) != spec_sha256(base), "how versions are explained is part of what was trained"
    [problem] = _problems(_demo(evaluation__explanations={"method": "lime"}))
    assert problem.startswith("/specs/ride_completion.yaml: evaluation.explanations.method:") and "shap" in problem
    [problem] = _problems(_demo(evaluation__explanations={"max_rows": 10}))
    assert "evaluation.explanations.max_rows" in problem


def test_entity_df_attributes_are_evaluation_only_columns_and_only_a_stated_list_changes_the_hash() -> None:
    from airflow_mlops.core.spec import spec_sha256

    base = parse_spec(yaml.safe_dump(_demo()), "ride_completion.yaml")
    assert base.features.entity_df.attributes == () and base.excluded_columns == ["driver_id"]
    empty = parse_spec(yaml.safe_dump(_demo(features__entity_df__attributes=[])), "ride_completion.yaml")
    assert spec_sha256(empty) == spec_sha256(base), "an empty list is the absent field: older specs keep their hash"
    stated = parse_spec(yaml.safe_dump(_demo(features__entity_df__attributes=["region", "age_band"],
                                             evaluation__fairness={"groups": ["region"]},
                                             evaluation__slices=[{"column": "age_band"}, {"column": "region"}])),
                        "ride_completion.yaml")
    assert stated.excluded_columns == ["driver_id", "region", "age_band"]
    assert spec_sha256(stated) != spec_sha256(base), "which columns the training set carries is model content"


@pytest.mark.parametrize(("attributes", "fragment"), [
    (["pickup_hour"], "['pickup_hour'] are also request_features, which are model inputs; a column the model must "
                      "not use belongs in attributes only"),
    (["completed"], "['completed'] are the label or the timestamp_column"),
    (["event_timestamp"], "['event_timestamp'] are the label or the timestamp_column"),
    (["driver_id"], "['driver_id'] are entity_keys"),
    (["region", "region"], "['region'] listed more than once"),
])
def test_an_attribute_that_is_already_another_column_of_the_training_set_is_refused(
        attributes: list[str], fragment: str) -> None:
    [problem] = _problems(_demo(features__entity_df__attributes=attributes))
    assert problem.startswith("/specs/ride_completion.yaml: features: entity_df.attributes: "), problem
    assert fragment in problem and problem.endswith("; remove them from attributes"), problem
