"""OpenLineage: one demo run reports a connected graph from a raw landing file to the champion version.

The session's trained demo (`support/demo_state.py`) is built with the OpenLineage provider's file
transport on, so this module costs no DAG run of its own: it reads the COMPLETE events the real
listener wrote during `dag.test()` of `mlops_features` and `ride_completion__train`, and walks the
graph: an edge goes from each input of a job's run to each of its outputs, so a path exists only
where one job's output is the next job's input, with the same namespace and name (docs/lineage.md).

The same build ran under the no-network audit hook: lineage (and the rest of the demo) attempted no
outbound connection. And the registered version carries the training set's GX validation as plain
tags (`airflow_mlops.validation.*`), read here with a bare `MlflowClient`.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.core import lineage as lineage_tags
from support.demo_state import TrainedDemo, checkout_trained_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MODEL = "ride_completion"
Node = tuple[str, str]


@pytest.fixture(scope="module")
def demo() -> TrainedDemo:
    return checkout_trained_demo()


@pytest.fixture(scope="module")
def completes(demo: TrainedDemo) -> dict[str, dict[str, Any]]:
    """Job name ("<dag_id>.<task_id>") -> its COMPLETE event."""
    events = [json.loads(line) for line in demo.openlineage_events.read_text().splitlines() if line.strip()]
    return {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}


def _node(dataset: dict[str, Any]) -> Node:
    return dataset["namespace"], dataset["name"]


def _edges(completes: dict[str, dict[str, Any]]) -> dict[Node, set[Node]]:
    graph: dict[Node, set[Node]] = {}
    for event in completes.values():
        for source in event.get("inputs") or []:
            graph.setdefault(_node(source), set()).update(_node(o) for o in event.get("outputs") or [])
    return graph


def _path(graph: dict[Node, set[Node]], start: Node, goal: Node) -> list[Node] | None:
    came_from: dict[Node, Node | None] = {start: None}
    todo = deque([start])
    while todo:
        node = todo.popleft()
        if node == goal:
            path = [node]
            while came_from[path[-1]] is not None:
                path.append(came_from[path[-1]])  # type: ignore[arg-type]
            return path[::-1]
        for nxt in graph.get(node, ()):
            if nxt not in came_from:
                came_from[nxt] = node
                todo.append(nxt)
    return None


def _registry(demo: TrainedDemo) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{demo.home / 'mlflow' / 'mlflow.db'}")


def test_every_task_of_the_demo_run_completed_with_an_event(demo: TrainedDemo,
                                                            completes: dict[str, dict[str, Any]]) -> None:
    tasks = {f"mlops_features.{t}" for t in demo.built["features"]["tasks"]}
    tasks |= {f"{MODEL}__train.{t}" for t, state in demo.built["train"]["tasks"].items() if state == "success"}
    assert tasks <= set(completes), sorted(tasks - set(completes))


def test_a_raw_batch_file_leads_to_the_champion_version(demo: TrainedDemo,
                                                        completes: dict[str, dict[str, Any]]) -> None:
    land = completes["mlops_features.land_raw_batches"]
    raw = next(_node(d) for d in land["inputs"] if "/landing/driver_hourly_stats/" in d["name"])
    assert raw[0] == "file" and Path(raw[1]).is_absolute()
    champion = str(_registry(demo).get_model_version_by_alias(MODEL, "champion").version)
    promoted = next(d for d in completes[f"{MODEL}__train.promote"]["outputs"]
                    if d["name"] == f"models/{MODEL}/versions/{champion}")
    assert promoted["namespace"].startswith("mlflow://sqlite:///")
    assert promoted["facets"]["airflowMlopsModelVersion"]["aliases"] == ["champion"]

    # OpenLineage edges are per job run (every input -> every output), so the shortest path may go through
    # the rides partitions; walk it in two legs to show the feature view's chain exists as well.
    graph, view = _edges(completes), ("feast://mlops", "driver_hourly_stats")
    to_view, to_champion = _path(graph, raw, view), _path(graph, view, _node(promoted))
    assert to_view is not None and to_champion is not None, "no chain of job outputs -> next job inputs"
    names = [name for _, name in to_view + to_champion]
    assert any("/offline/driver_hourly_stats/date=" in n for n in names), names  # the view's offline partitions
    assert any("/training_sets/" in n for n in names), names
    assert any(n.startswith("logged_models/m-") for n in names), names  # the model the training run logged
    rides = next(_node(d) for d in land["inputs"] if "/landing/rides/" in d["name"])  # the label batch too
    assert _path(graph, rides, _node(promoted)) is not None


def test_the_training_set_dataset_carries_its_sha256_and_validation(demo: TrainedDemo,
                                                                    completes: dict[str, dict[str, Any]]) -> None:
    [snapshot] = completes[f"{MODEL}__train.build_training_set"]["outputs"]
    version = _registry(demo).get_model_version(MODEL, "1")
    sha = version.tags[lineage_tags.TAG_TRAINING_SET_SHA256]
    assert snapshot["name"] == version.tags[lineage_tags.TAG_TRAINING_SET_PATH]
    assert snapshot["facets"]["version"]["datasetVersion"] == sha
    facet = snapshot["facets"]["airflowMlopsTrainingSet"]
    assert facet["sha256"] == sha and facet["validation"]["success"] is True
    train = completes[f"{MODEL}__train.train"]
    assert [_node(d) for d in train["inputs"]] == [_node(snapshot)]


def test_the_version_carries_the_training_set_validation_as_tags(demo: TrainedDemo) -> None:
    tags = _registry(demo).get_model_version(MODEL, "1").tags  # a plain client: no artifact download
    result_id = tags[lineage_tags.TAG_VALIDATION_RESULT_ID]
    stored = json.loads((demo.home / "reports" / "validation" / result_id / "result.json").read_text())
    assert tags[lineage_tags.TAG_VALIDATION_SUCCESS] == "true" == str(stored["success"]).lower()
    assert tags[lineage_tags.TAG_VALIDATION_FAILED] == "0" == str(stored["statistics"]["unsuccessful_rules"])
    assert tags[lineage_tags.TAG_VALIDATION_SUITE] == stored["suite"] == "ride_completion_training"
    assert stored["batch_id"] in tags[lineage_tags.TAG_TRAINING_SET_PATH]  # the result of this very snapshot


def test_the_lineage_run_attempted_no_outbound_connection(demo: TrainedDemo,
                                                          completes: dict[str, dict[str, Any]]) -> None:
    assert completes, "the build wrote OpenLineage events (the audit covered a run with lineage on)"
    assert not demo.netaudit_log.exists(), demo.netaudit_log.read_text()
