"""MLflowModelCardOperator: the model card of a registered version, built from recorded evidence.

Everything on the card comes from what the pipeline recorded, never from re-computation: the
training-set lineage and its validation result, the training run's params and summary, the
evaluation report logged by EvaluateModelOperator, and the spec's intended use and limitations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops.boundary import TaskBoundary
from airflow_mlops.openlineage.record import recall, remember

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient

    from airflow_mlops.openlineage.datasets import Lineage

CARD_DIR = "model_card"
TAG_MODEL_CARD = "airflow_mlops.model_card"


class MLflowModelCardOperator(TaskBoundary, BaseOperator):
    """Write model_card/model_card.{md,html,json} to the version's run and link it from the version.

    The version's description becomes the card's one-line summary, so the MLflow UI shows it too.

    :param model_name: registered model name. (templated)
    :param registered: the register task's result {version, run_id}; when it is a repeat (nothing new
        registered) the task skips with register's reason and writes nothing. (templated)
    :param training_set: the training-set lineage (with its `validation` summary). (templated)
    :param model_info: the spec's descriptive fields {name, description, owner, intended_use,
        limitations, tags}.
    :param mlflow_conn_id: Airflow connection of type "mlflow".
    :return: {version, run_id, uri, html_uri}
    """

    template_fields: Sequence[str] = ("model_name", "registered", "training_set")
    template_fields_renderers = {"registered": "json", "training_set": "json"}
    ui_color = "#f3e5f5"

    def __init__(self, *, model_name: str, registered: Any, training_set: Any, model_info: Mapping[str, Any],
                 mlflow_conn_id: str = "mlflow_default", **kwargs: Any) -> None:
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.model_name = model_name
        self.registered = registered
        self.training_set = training_set
        self.model_info = dict(model_info)
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core import model_card
        from airflow_mlops.core.lineage import normalize_lineage
        from airflow_mlops.core.xcom import as_dict
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.operators.registry import skip_if_repeat

        registered = as_dict(self.registered)
        skip_if_repeat(registered, "model card")
        version, run_id = str(registered["version"]), str(registered["run_id"])
        hook = MLflowHook(self.mlflow_conn_id)
        hook.check_backend()
        with hook.activated() as client:
            evaluation = _artifact_json(client, run_id, "evaluation/report.json")
            card = model_card.build_model_card(
                model={**self.model_info, "name": self.model_name}, version=version, run_id=run_id,
                lineage=normalize_lineage(self.training_set), evaluation=evaluation or {},
                training=_training_facts(client, run_id),
                explanations=_explanations(client, self.model_name, version, run_id),
            )
            client.log_dict(run_id, card, f"{CARD_DIR}/model_card.json")
            client.log_text(run_id, model_card.render_markdown(card), f"{CARD_DIR}/model_card.md")
            client.log_text(run_id, model_card.render_html(card), f"{CARD_DIR}/model_card.html")
            base = f"{client.get_run(run_id).info.artifact_uri}/{CARD_DIR}"
            client.set_model_version_tag(self.model_name, version, TAG_MODEL_CARD, f"{base}/model_card.html")
            client.update_model_version(self.model_name, version, description=_headline(card, evaluation))
        self.log.info("Model card of %s v%s: %s/model_card.html", self.model_name, version, base)
        result = {"version": version, "run_id": run_id, "uri": f"{base}/model_card.md",
                  "html_uri": f"{base}/model_card.html"}
        remember(self, context, {"result": result, "registry_uri": hook.settings.registry_uri})
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """Reads the version it documents; no output dataset: the card is metadata of that version (artifacts,
        tag, description), its location a run facet."""
        from airflow_mlops.openlineage.datasets import lineage, model_version_dataset

        recorded = recall(self, task_instance)
        if not recorded:  # skipped (a repeat) or failed
            return None
        result = recorded["result"]
        return lineage([model_version_dataset(recorded["registry_uri"], self.model_name, result["version"])], [],
                       {"html_uri": result["html_uri"]})


def _artifact_json(client: MlflowClient, run_id: str, path: str) -> dict[str, Any] | None:
    """A JSON artifact of a run, or None when it was never logged."""
    import tempfile

    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        with open(local, encoding="utf-8") as handle:
            return dict(json.load(handle))


def _training_facts(client: MlflowClient, run_id: str) -> dict[str, Any]:
    """Estimator, params and split as the training run logged them, plus its summary artifact."""
    params = dict(client.get_run(run_id).data.params)
    summary = _artifact_json(client, run_id, "training/summary.json") or {}
    return {
        "estimator": params.get("estimator"),
        "params": {k.removeprefix("params."): v for k, v in params.items() if k.startswith("params.")},
        "preprocessing": {k.removeprefix("preprocessing."): v for k, v in params.items()
                          if k.startswith("preprocessing.")},
        "split": summary.get("split") or {k.removeprefix("split."): v for k, v in params.items()
                                          if k.startswith("split.")},
        "seed": params.get("seed"),
        "feature_columns": summary.get("feature_columns"),
        "train_rows": summary.get("train_rows"),
        "validation_rows": summary.get("validation_rows"),
    }


def _explanations(client: MlflowClient, name: str, version: str, run_id: str) -> dict[str, Any] | None:
    """The version's global importance, with its attribution drift against the champion (or, with no other
    champion, the latest earlier version) when that one has an importance too."""
    from mlflow.exceptions import MlflowException

    from airflow_mlops.core.explanations import IMPORTANCE_ARTIFACT
    from airflow_mlops.core.model_card_explanations import explanation_summary

    current = _artifact_json(client, run_id, IMPORTANCE_ARTIFACT)
    if current is None:
        return None
    try:
        champion = client.get_model_version_by_alias(name, "champion")
        other, label = (champion, f"champion v{champion.version}") if champion.version != version else (None, None)
    except MlflowException:  # no champion yet
        other, label = None, None
    if other is None:
        earlier = [mv for mv in client.search_model_versions(f"name = '{name}'") if int(mv.version) < int(version)]
        other = max(earlier, key=lambda mv: int(mv.version), default=None)
        label = f"previous version v{other.version}" if other is not None else None
    previous = _artifact_json(client, other.run_id, IMPORTANCE_ARTIFACT) if other is not None and other.run_id \
        else None
    return explanation_summary(current, previous, label)


def _headline(card: Mapping[str, Any], evaluation: Mapping[str, Any] | None) -> str:
    verdict = (evaluation or {}).get("verdict") or {}
    primary = (evaluation or {}).get("primary_metric")
    value = (((evaluation or {}).get("challenger") or {}).get("metrics") or {}).get(primary)
    shown = f"{primary} {value:.4f}" if isinstance(value, float) else "not evaluated"
    decision = "recommended for promotion" if verdict.get("promote") else "not recommended for promotion"
    description = (card.get("model") or {}).get("description") or ""
    return f"{description} Held-out {shown}; {decision}. See the model card artifact.".strip()
