"""OpenLineage datasets and facets for our operators' `get_openlineage_facets_on_complete`.

The OpenLineage provider calls an operator's `get_openlineage_facets_on_complete(task_instance)` after
a successful `execute` (also on failure, when there is no `..._on_failure`), in the task process. Our
operators remember what `execute` read and wrote (`openlineage.record.remember`) and import this module
in that method only, never at their top: the provider and `openlineage-python` are optional (extra
`openlineage`), and without a configured transport the provider does not call anything (docs/lineage.md).

Names come from `core.lineage_names`; custom facets are prefixed `airflowMlops` and their schema URL is a
URN documented in docs/lineage.md (OpenLineage asks custom facets for a schema URL, not a reachable one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attr
from openlineage.client.event_v2 import Dataset
from openlineage.client.facet_v2 import DatasetFacet, RunFacet, dataset_version_dataset

if TYPE_CHECKING:
    from typing import TypeAlias

    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_mlops.core.lineage_names import Name

    # What every `get_openlineage_facets_on_complete` of ours returns: OpenLineage v2 datasets and run facets.
    Lineage: TypeAlias = OperatorLineage[Dataset, RunFacet]

SCHEMA = "urn:airflow-mlops:openlineage:facet:{}:1"


@attr.define
class TrainingSetDatasetFacet(DatasetFacet):
    """`airflowMlopsTrainingSet`: the snapshot's content hash, size, time window and its GX validation."""

    sha256: str
    rows: int | None = attr.field(default=None)
    start: str | None = attr.field(default=None)
    end: str | None = attr.field(default=None)
    feature_service: str | None = attr.field(default=None)
    validation: dict[str, Any] | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA.format("TrainingSetDatasetFacet")


@attr.define
class ModelVersionDatasetFacet(DatasetFacet):
    """`airflowMlopsModelVersion`: a registered model version and the aliases this task gave or read."""

    model: str
    version: str
    aliases: list[str] = attr.field(factory=list)
    run_id: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA.format("ModelVersionDatasetFacet")


@attr.define
class ResultRunFacet(RunFacet):
    """`airflowMlopsResult`: the small summary the task returned (verdict, counts), for runs without datasets."""

    summary: dict[str, Any] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA.format("ResultRunFacet")


def dataset(name: Name, facets: Mapping[str, Any] | None = None) -> Dataset:
    namespace, path = name
    return Dataset(namespace=namespace, name=path, facets=dict(facets or {}))


def datasets(names: Iterable[Name]) -> list[Dataset]:
    return [dataset(n) for n in names]


def training_set_dataset(lineage: Mapping[str, Any]) -> Dataset:
    """The snapshot file, versioned by its sha256 (standard `version` facet and ours)."""
    from airflow_mlops.core.lineage_names import file_name

    sha = str(lineage["sha256"]).lower().removeprefix("sha256:")
    validation = lineage.get("validation")
    facet = TrainingSetDatasetFacet(
        sha256=sha, rows=lineage.get("rows"), start=lineage.get("start"), end=lineage.get("end"),
        feature_service=lineage.get("feature_service"),
        validation=dict(validation) if isinstance(validation, Mapping) else None)
    return dataset(file_name(str(lineage["path"])), {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=sha),
        "airflowMlopsTrainingSet": facet,
    })


def model_version_dataset(registry_uri: str, model: str, version: str | int, *, aliases: Iterable[str] = (),
                          run_id: str | None = None) -> Dataset:
    from airflow_mlops.core.lineage_names import model_version_name

    facet = ModelVersionDatasetFacet(model=model, version=str(version), aliases=list(aliases), run_id=run_id)
    return dataset(model_version_name(registry_uri, model, version), {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(version)),
        "airflowMlopsModelVersion": facet,
    })


def lineage(inputs: Iterable[Dataset] = (), outputs: Iterable[Dataset] = (),
            result: Mapping[str, Any] | None = None) -> Lineage:
    from airflow.providers.openlineage.extractors import OperatorLineage

    run_facets: dict[str, RunFacet] = {"airflowMlopsResult": ResultRunFacet(summary=dict(result))} if result else {}
    return OperatorLineage(inputs=list(inputs), outputs=list(outputs), run_facets=run_facets)


def deployment_lineage(result: Mapping[str, Any], registry_uri: str) -> Lineage:
    """DeployModelOperator: the version deployed (input) -> where it now serves (output, versioned by it)."""
    from airflow_mlops.core.lineage_names import kubernetes_name, serving_name

    model, version = str(result["name"]), str(result["version"])
    target = kubernetes_name(str(result["namespace"]), str(result["deployment"])) \
        if result.get("target") == "kubernetes" else serving_name(str(result["url"]), model)
    served = dataset(target, {"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=version)})
    keep = ("target", "mode", "previous", "url", "namespace", "deployment")
    return lineage([model_version_dataset(registry_uri, model, version)], [served],
                   {k: result[k] for k in keep if result.get(k) is not None})


def training_lineage(recorded: Mapping[str, Any]) -> Lineage:
    """A training task (in-process or pod): the snapshot (input) -> the logged model (`logged_models/<m-id>`)."""
    from airflow_mlops.core.lineage_names import logged_model_name

    result = recorded["result"]
    model = dataset(logged_model_name(recorded["registry_uri"], result["model_uri"]))
    return lineage([training_set_dataset(recorded["training_set"])], [model],
                   {"run_id": result["run_id"], "metrics": result.get("metrics")})
