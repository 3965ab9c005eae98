"""Domain errors. Every message says the value, the rule it broke, the fix and where the report is.

Plain Python exceptions: this module imports no Airflow, so core, serving and the CLI can raise them
without loading it (ARCHITECTURE.md §3). Whether a retry can help is data, `retry`; the adapter layer
(`airflow_mlops.boundary`, applied to our operators and sensors) turns `retry = False` into Airflow's
AirflowFailException (the task fails at once, without its retries) and the rest into AirflowException.
"""

from __future__ import annotations

from typing import ClassVar


class MLOpsError(Exception):
    """Base class of every airflow-mlops error.

    `retry`: False when the same inputs fail the same way on every try (bad data, bad configuration,
    a threshold missed), so a task retry only delays the failure.
    """

    retry: ClassVar[bool] = True


class SpecError(MLOpsError):
    """One or more model specs are invalid; the message lists each problem with file and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in model specs:\n" + "\n".join(f"  - {p}" for p in problems))


class FeatureRepoError(MLOpsError):
    """The Feast repo cannot be loaded or does not define what a spec refers to."""


class StoreUnavailable(MLOpsError):
    """A configured store (PostgreSQL, Redis, MLflow server) cannot be reached right now.

    Retried as usual (a timeout, a 5xx, a server out of connection slots may pass); a configuration
    error is the subclass StoreConfigError. `url` is shown with its password masked.
    """

    config_error = False

    def __init__(self, what: str, url: str, reason: str, fix: str) -> None:
        from airflow_mlops.profile import mask_url

        self.url = mask_url(url)
        self.reason = reason
        note = self._retry_note()
        if note and not fix.rstrip().endswith((".", "!", "?")):
            fix = fix.rstrip() + "."
        super().__init__(f"{what} at {self.url} is unreachable ({reason}). {fix}{note}")

    def _retry_note(self) -> str:
        return ""

    @classmethod
    def of(cls, what: str, url: str, reason: str, fix: str, *, config_error: bool) -> StoreUnavailable:
        """StoreConfigError (no retry) when `config_error`, else StoreUnavailable (retried)."""
        return (StoreConfigError if config_error else StoreUnavailable)(what, url, reason, fix)


class StoreConfigError(StoreUnavailable):
    """A store URL is wrong or its server is not running: refused, unknown host, bad URL, bad credentials.

    Not retried (`retry = False`): the task fails at once, without its retries. The same URL fails
    the same way on every try, and MLflow's HTTP client alone would retry it for ~4 minutes per
    attempt. Which errors count as configuration is documented in `airflow_mlops.profile`.
    """

    retry = False
    config_error = True

    def _retry_note(self) -> str:
        return " Not retried: this is a configuration error; fix it, then clear the task."


class ProfileError(MLOpsError):
    """The configured production profile points at servers that do not answer."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("production profile is not reachable:\n" + "\n".join(f"  - {p}" for p in problems))


class DataValidationFailed(MLOpsError):
    """A batch or training set broke its data contract.

    Not retried (`retry = False`): the task fails without retrying. Bad data does not fix itself,
    and a retry after the bad files were quarantined would succeed and run downstream tasks in the
    very run that found them.
    """

    retry = False


class TrainingSetError(MLOpsError):
    """A point-in-time training set could not be built as asked.

    No retry: a missing dataset, lost rows or an unknown feature service does not fix itself.
    """

    retry = False


class TrainingFailed(MLOpsError):
    """The estimator could not be built or fitted (bad estimator/params, one class, an empty feature).

    No retry: the same spec on the same snapshot fails the same way.
    """

    retry = False


class RegistryError(MLOpsError):
    """The MLflow model registry refused or contradicts an operation."""


class ModelBelowThreshold(MLOpsError):
    """The challenger missed an absolute threshold of `evaluation.thresholds`.

    No retry: the same model scored on the same rows gives the same numbers.
    """

    retry = False


class FairnessGroupMissing(MLOpsError):
    """A group column of `evaluation.fairness.groups` is not on the held-out rows of the training set.

    No retry: the snapshot's columns do not change. Fairness is never skipped silently for a missing column.
    """

    retry = False


class ChallengerNotBetter(MLOpsError):
    """The challenger did not beat the champion by the spec's rule (it stays unpromoted)."""


class RollbackRefused(RegistryError):
    """The rollback target does not exist, was never champion, or is champion already (no retry)."""

    retry = False


class PromotionConflict(RegistryError):
    """Another promotion or rollback of the same model is in progress or moved the aliases first.

    No retry: the evidence this task holds is about a registry state that no longer exists.
    """

    retry = False


class ComputeConfigError(MLOpsError):
    """The task cannot run as a pod as configured (no retry: configuration does not fix itself)."""

    retry = False


class MonitoringInputError(MLOpsError):
    """A label file or the prediction log cannot be used by a monitoring check as given.

    No retry: a label file without its label column, or labels that are not 0/1, stay that way until
    someone fixes or replaces the file.
    """

    retry = False


class DriftReferenceMissing(MLOpsError):
    """The champion's training-set snapshot (the drift reference) is not recorded or not on disk.

    No retry: a lost snapshot does not come back; retrain (a new champion records a new snapshot)
    or restore the file at the recorded path.
    """

    retry = False


class DeploymentFailed(MLOpsError):
    """The serving app or Kubernetes did not take the version; the message says what still serves.

    `status` is the serving app's HTTP answer when it gave one (409: the version cannot load).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @classmethod
    def no_champion(cls, model: str) -> DeploymentFailed:
        return cls(f"{model} has no version with alias champion and no version was given; promote one first "
                   "(training DAG) or pass version=")

    @classmethod
    def smoke_failed(cls, model: str, version: str, reason: str, undone: str) -> DeploymentFailed:
        return cls(f"{model} v{version} is loaded but {reason}; {undone}")


class RolloutFailed(DeploymentFailed):
    """A Kubernetes rollout did not complete in time and was rolled back (no retry: it would hang again)."""

    retry = False

    @classmethod
    def stuck(cls, namespace: str, name: str, version: str | None, timeout: float, why: str, pods: list[str],
              undone: str) -> RolloutFailed:
        return cls(
            f"deployment {namespace}/{name} did not roll out v{version} within {timeout:.0f}s ({why}); pods: "
            f"{'; '.join(pods) or 'none reported a problem'}; {undone}. Fix the image/resources or raise "
            f"serving.kubernetes.rollout_timeout_seconds; `kubectl -n {namespace} describe deployment {name}` "
            "shows the events"
        )


class CanaryFailed(MLOpsError):
    """The canary breached a limit or gave no verdict; the champion was restored (no retry).

    `restored` is the version the champion alias was moved back to (None when it was left alone).
    """

    retry = False

    def __init__(self, message: str, restored: str | None = None) -> None:
        super().__init__(message)
        self.restored = restored

    @classmethod
    def rolled_back(cls, model: str, version: str, reason: str, note: str, url: str, serving: str, tag: str,
                    outcome: str, reason_tag: str, restored: str | None) -> CanaryFailed:
        return cls(f"{model} v{version}: {reason}. {note}. Serving at {url}: {serving}. v{version} is tagged "
                   f"{tag}={outcome} (reason in {reason_tag}); retrain or deploy by hand once fixed", restored)


class BatchInferenceError(MLOpsError):
    """Entity rows could not be scored as asked (columns the model needs are missing, rows were lost)."""

    @classmethod
    def missing_entity_columns(cls, absent: list[str], present: list[str]) -> BatchInferenceError:
        return cls(f"entity dataframe lacks column(s) {absent} (has {present}); the spec's features.entity_keys, "
                   "entity_df.timestamp_column and request_features must be columns of the batch dataset")

    @classmethod
    def rows_lost(cls, got: int, given: int) -> BatchInferenceError:
        return cls(f"the feature store returned {got} rows for {given} entity rows; a point-in-time join must "
                   "return every entity row once (check the offline store type is duckdb)")

    @classmethod
    def model_inputs(cls, uri: str, version: str, missing: list[str], feature_service: str, served: list[str],
                     request_features: list[str]) -> BatchInferenceError:
        return cls(f"model {uri} v{version} needs feature column(s) {missing} that neither feature service "
                   f"'{feature_service}' (features {served}) nor the request features {request_features} provide. "
                   f"The model was trained on other inputs: score with the version that matches the spec, or "
                   f"retrain on features '{feature_service}'")
