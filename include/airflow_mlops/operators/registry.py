"""MLflowRegisterModelOperator: a logged model -> a registered model version with an alias.

Idempotent by design: Airflow retries and "clear task" re-run execute(); the version already
registered for the same MLflow run is found and reused, so a run never gets two versions.
Idempotent across runs too: a training run whose fingerprint (training-set sha256, spec hash, code commit,
estimator params; `core.lineage.training_fingerprint`) an existing version already carries registers
nothing. The run is tagged `airflow_mlops.repeat_of=<version>`, the result says `repeat: true` with the
reason, and the tasks after it (model card, approval, promotion, deploy) skip with that reason.
Safe across a registry outage: a version is created with all its tags (lineage, verdict, cause) and
`airflow_mlops.registration=pending`, the alias moves after that and the mark goes last. A retry finishes
the job; a version still marked pending (its run gave up) is not a fingerprint twin, so a new run on the
same data registers its own (tests/integration/test_registry_outage.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops.boundary import TaskBoundary
from airflow_mlops.openlineage.record import recall, remember
from airflow_mlops.plugin.links import ModelVersionLink

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from airflow_mlops.openlineage.datasets import Lineage


def logged_model_id(model_uri: str) -> str | None:
    """'m-abc' for MLflow 3 logged-model URIs 'models:/m-abc'; None for runs:/, models:/name/1, ..."""
    rest = model_uri.removeprefix("models:/")
    if rest != model_uri and rest.startswith("m-") and "/" not in rest and "@" not in rest:
        return rest
    return None


def evaluation_tags(evaluation: Any) -> dict[str, str]:
    """Version tags summarising an evaluation result (empty when there is none)."""
    import json

    from airflow_mlops.core.xcom import as_dict

    if not evaluation:
        return {}
    data = as_dict(evaluation)
    prefix = "airflow_mlops.evaluation."
    tags = {
        f"{prefix}verdict": "promote" if data.get("promote") else "hold",
        f"{prefix}champion_version": str(data.get("champion_version") or "none"),
        f"{prefix}primary_metric": str(data.get("primary_metric")),
        f"{prefix}value": str(data.get("challenger_value")),
        f"{prefix}gain": str(data.get("gain")),
        f"{prefix}ci": json.dumps(data.get("ci")),
        f"{prefix}report": str(data.get("report_uri") or ""),
        f"{prefix}reasons": "; ".join(data.get("reasons") or [])[:4000],
    }
    return {key: value for key, value in tags.items() if value}


class MLflowRegisterModelOperator(TaskBoundary, BaseOperator):
    """Register the model of an MLflow run (once) and point an alias at that version.

    Creates the registered model when absent, finds or creates the version for `run_id`, tags it
    with the training run's lineage (training-set sha256/path/rows/window, feature service/views,
    git commit, spec hash, fingerprint), this Airflow run and the evaluation (in the create call), then
    sets `alias` (aliases, not the deprecated stages) and drops the version's pending mark.

    A run without a version of its own whose `airflow_mlops.fingerprint` equals an existing version's is
    a repeat: no version is created, no tag written on any version, no alias moved, no audit entry; the
    MLflow run gets `airflow_mlops.repeat_of=<version>` and the result names that version.

    :param model_name: registered model name. (templated)
    :param run_id: MLflow run that logged the model, e.g. `train.output["run_id"]`. (templated)
    :param model_uri: URI returned by the training task, e.g. models:/m-... (templated)
    :param alias: alias to set on the version, "challenger" by default. (templated)
    :param description: description for a newly created registered model. (templated)
    :param evaluation: the evaluation task's result; its verdict, primary metric, gain and the
        champion it was compared with become version tags. (templated)
    :param retrain: the retrain gate's result {reason, trigger, events} (`retrain_gate.output`); becomes
        the version tags `airflow_mlops.retrain.reason|trigger|events` ("retrained because..."). (templated)
    :param mlflow_conn_id: Airflow connection of type "mlflow".
    :return: {"name", "version", "run_id", "alias", "created", "alias_moved", "repeat"} (created: a new
        version was made; alias_moved false when a newer version already holds the alias: a cleared old
        run); a repeat adds {"fingerprint", "reason"} and names the existing version (created and
        alias_moved false)
    """

    template_fields: Sequence[str] = (
        "model_name", "run_id", "model_uri", "alias", "description", "evaluation", "retrain")
    operator_extra_links = (ModelVersionLink(),)
    ui_color = "#d7ecff"

    def __init__(
        self,
        *,
        model_name: str,
        run_id: str,
        model_uri: str,
        alias: str = "challenger",
        description: str | None = None,
        evaluation: Any = None,
        retrain: Any = None,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        # One XCom per key as well as the whole dict, so `task.output["run_id"]` resolves downstream.
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.model_name = model_name
        self.run_id = run_id
        self.model_uri = model_uri
        self.alias = alias
        self.description = description
        self.evaluation = evaluation
        self.retrain = retrain
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.hooks.mlflow_registry import ensure_registered_model

        hook = MLflowHook(self.mlflow_conn_id)
        hook.check_backend()
        # activated(): MLflow 3.17's SQL registry store resolves a "models:/m-..." source with a
        # fresh MlflowClient() on the GLOBAL tracking URI, not this client's (sqlalchemy_store.py TODO).
        with hook.activated() as client:
            model_id = self._check_source(client)
            if ensure_registered_model(client, self.model_name, self.description):
                self.log.info("Created registered model %s", self.model_name)
            version, created = self._existing_version(client), False
            if version is None:  # not a cleared/retried task of this run: is it a repeat of another run?
                twin = self._same_fingerprint(client)
                if twin is not None:
                    return self._repeat(client, *twin)
                version, created = self._create_version(client, model_id, context), True
            else:  # a cleared run re-tags its version with this run's verdict and cause
                for key, value in self._decision_tags().items():
                    client.set_model_version_tag(self.model_name, version.version, key, value)
            moved = not self._newer_holds_alias(client, version.version)
            if moved:
                self._move_alias(client, version.version, created)
            self._complete(client, version, created)
        result = self._result(version.version, created=created, moved=moved)
        remember(self, context, {"result": result, "registry_uri": hook.settings.registry_uri})
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """The run's logged model (input) -> the registered version (output, with the alias it got). A repeat
        registers nothing: it returns before recording, so it reports no datasets."""
        from airflow_mlops.core.lineage_names import logged_model_name
        from airflow_mlops.openlineage.datasets import dataset, lineage, model_version_dataset

        recorded = recall(self, task_instance)
        if not recorded:
            return None
        result, registry = recorded["result"], recorded["registry_uri"]
        version = model_version_dataset(registry, self.model_name, result["version"], run_id=self.run_id,
                                        aliases=[self.alias] if result["alias_moved"] else [])
        return lineage([dataset(logged_model_name(registry, self.model_uri))], [version],
                       {k: result[k] for k in ("created", "alias_moved")})

    def _decision_tags(self) -> dict[str, str]:
        from airflow_mlops.core.lineage import retrain_tags

        return {**evaluation_tags(self.evaluation), **retrain_tags(self.retrain)}

    def _move_alias(self, client: MlflowClient, version: str, created: bool) -> None:
        """Point the alias at `version` and read it back (search results carry no aliases in MLflow 3)."""
        client.set_registered_model_alias(self.model_name, self.alias, version)
        confirmed = client.get_model_version_by_alias(self.model_name, self.alias)
        if str(confirmed.version) != str(version):
            from airflow_mlops.exceptions import RegistryError

            raise RegistryError(
                f"alias {self.alias!r} of {self.model_name} points at version {confirmed.version} right after "
                f"being set to {version}; another writer moved it, re-run this task"
            )
        self.log.info("%s version %s (%s) now has alias %s", self.model_name, version,
                      "created" if created else "already registered", self.alias)

    def _complete(self, client: MlflowClient, version: ModelVersion, created: bool) -> None:
        """Drop the pending mark: the registration finished (written last, after the alias move)."""
        from airflow_mlops.core import lineage

        if created or lineage.TAG_REGISTRATION in (version.tags or {}):
            client.delete_model_version_tag(self.model_name, version.version, lineage.TAG_REGISTRATION)

    def _result(self, version: str | int, *, created: bool, moved: bool) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "version": str(version),
            "run_id": self.run_id,
            "alias": self.alias,
            "created": created,
            "alias_moved": moved,
            "repeat": False,
        }

    def _same_fingerprint(self, client: MlflowClient) -> tuple[ModelVersion, str, dict[str, str]] | None:
        """The oldest version trained from the same fingerprint as this run (another run's), or None."""
        import re

        from airflow_mlops.core import lineage

        tags = dict(client.get_run(self.run_id).data.tags)
        fingerprint = tags.get(lineage.TAG_FINGERPRINT) or ""
        if not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
            return None  # no fingerprint (no git commit, or logged outside the training job): never a repeat
        found = client.search_model_versions(
            f"name = '{self.model_name}' and tags.`{lineage.TAG_FINGERPRINT}` = '{fingerprint}'")
        # A version whose register task died before moving the alias is no twin: this run registers its own.
        others = [mv for mv in found if mv.run_id != self.run_id
                  and (mv.tags or {}).get(lineage.TAG_REGISTRATION) != lineage.REGISTRATION_PENDING]
        if not others:
            return None
        return min(others, key=lambda mv: int(mv.version)), fingerprint, tags

    def _repeat(self, client: MlflowClient, twin: ModelVersion, fingerprint: str,
                tags: dict[str, str]) -> dict[str, Any]:
        """Register nothing: tag the run as a repeat of `twin` and say why (the registry stays as it was)."""
        from airflow_mlops.core import lineage

        version = str(twin.version)
        sha = tags.get(lineage.TAG_TRAINING_SET_SHA256, "?")
        commit = tags.get(lineage.TAG_GIT_COMMIT, "?")
        reason = (
            f"{self.model_name} v{version} (run {twin.run_id}) was trained from the same training set "
            f"(sha256 {sha[:12]}...), spec, code commit {commit[:12]} and estimator params: fingerprint "
            f"{fingerprint}. Run {self.run_id} repeats it, so no version was registered and the registry "
            "(versions, aliases, audit trail) is unchanged"
        )
        client.set_tag(self.run_id, lineage.TAG_REPEAT_OF, version)
        self.log.warning("Repeat, nothing registered: %s", reason)
        return {**self._result(version, created=False, moved=False), "repeat": True, "fingerprint": fingerprint,
                "reason": reason}

    def _newer_holds_alias(self, client: MlflowClient, version: str | int) -> bool:
        """A cleared, older register task must not take the alias back from a newer version."""
        from airflow_mlops.hooks.mlflow_registry import ModelRegistry

        holder = ModelRegistry(client, self.model_name).alias_version(self.alias)
        if holder is None or int(holder) <= int(version):
            return False
        self.log.warning(
            "%s: alias %s points at the newer version %s; leaving it there (version %s of run %s was "
            "registered before)", self.model_name, self.alias, holder, version, self.run_id,
        )
        return True

    def _check_source(self, client: MlflowClient) -> str | None:
        """The logged-model id of model_uri, after checking it was logged by run_id."""
        from airflow_mlops.exceptions import RegistryError

        model_id = logged_model_id(self.model_uri)
        if model_id is None:
            return None
        source_run = client.get_logged_model(model_id).source_run_id
        if source_run != self.run_id:
            raise RegistryError(
                f"model_uri {self.model_uri} was logged by run {source_run}, not run_id {self.run_id}; "
                "pass run_id and model_uri from the same training task output"
            )
        return model_id

    def _existing_version(self, client: MlflowClient) -> ModelVersion | None:
        found = client.search_model_versions(f"name = '{self.model_name}' and run_id = '{self.run_id}'")
        if not found:
            return None
        ordered = sorted(found, key=lambda mv: int(mv.version))
        if len(ordered) > 1:
            self.log.warning(
                "Run %s already has versions %s of %s; reusing the first",
                self.run_id,
                [mv.version for mv in ordered],
                self.model_name,
            )
        return ordered[0]

    def _create_version(self, client: MlflowClient, model_id: str | None, context: Context) -> ModelVersion:
        return client.create_model_version(
            self.model_name,
            self.model_uri,
            run_id=self.run_id,
            tags=self._version_tags(client, context),
            model_id=model_id,
        )

    def _version_tags(self, client: MlflowClient, context: Context) -> dict[str, str]:
        """Lineage of the training run, who registered it (this Airflow run), its verdict and cause, and the
        pending mark: all in the one create call, so no crash leaves a version without them."""
        from airflow_mlops.core import lineage

        run_tags = client.get_run(self.run_id).data.tags
        tags = {key: run_tags[key] for key in lineage.TRAINING_TAGS if key in run_tags}
        tags[lineage.TAG_SOURCE_RUN_ID] = self.run_id
        tags.update(lineage.airflow_context_tags(context))
        return {**tags, **self._decision_tags(), lineage.TAG_REGISTRATION: lineage.REGISTRATION_PENDING}


def skip_if_repeat(registered: Any, task: str) -> None:
    """AirflowSkipException naming the existing version and the fingerprint when `registered` (the register
    task's result) says the run repeated that version; `task` says what is skipped (model card, promotion...)."""
    from airflow_mlops.core.lineage import repeat_reason

    reason = repeat_reason(registered)
    if reason is not None:
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(f"{task} skipped: {reason}")
