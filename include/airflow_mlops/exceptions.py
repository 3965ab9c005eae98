"""Domain errors. Every message says the value, the rule it broke, the fix and where the report is."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class MLOpsError(AirflowException):
    """Base class of every airflow-mlops error."""


class SpecError(MLOpsError):
    """One or more model specs are invalid; the message lists each problem with file and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in model specs:\n" + "\n".join(f"  - {p}" for p in problems))


class FeatureRepoError(MLOpsError):
    """The Feast repo cannot be loaded or does not define what a spec refers to."""


class StoreUnavailable(MLOpsError):
    """A configured store (PostgreSQL, Redis, MLflow server) cannot be reached."""

    def __init__(self, what: str, url: str, reason: str, fix: str) -> None:
        self.url = url
        super().__init__(f"{what} at {url} is unreachable ({reason}). {fix}")


class ProfileError(MLOpsError):
    """The configured production profile points at servers that do not answer."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("production profile is not reachable:\n" + "\n".join(f"  - {p}" for p in problems))


class DataValidationFailed(MLOpsError, AirflowFailException):
    """A batch or training set broke its data contract.

    Also an AirflowFailException: the task fails without retrying. Bad data does not fix itself,
    and a retry after the bad files were quarantined would succeed and run downstream tasks in the
    very run that found them.
    """


class TrainingSetError(MLOpsError, AirflowFailException):
    """A point-in-time training set could not be built as asked.

    No retry: a missing dataset, lost rows or an unknown feature service does not fix itself.
    """


class TrainingFailed(MLOpsError, AirflowFailException):
    """The estimator could not be built or fitted (bad estimator/params, one class, an empty feature).

    No retry: the same spec on the same snapshot fails the same way.
    """


class RegistryError(MLOpsError):
    """The MLflow model registry refused or contradicts an operation."""


class ModelBelowThreshold(MLOpsError, AirflowFailException):
    """The challenger missed an absolute threshold of `evaluation.thresholds`.

    No retry: the same model scored on the same rows gives the same numbers.
    """


class ChallengerNotBetter(MLOpsError):
    """The challenger did not beat the champion by the spec's rule (it stays unpromoted)."""


class RollbackRefused(RegistryError, AirflowFailException):
    """The rollback target does not exist, was never champion, or is champion already (no retry)."""


class PromotionConflict(RegistryError, AirflowFailException):
    """Another promotion or rollback of the same model is in progress or moved the aliases first.

    No retry: the evidence this task holds is about a registry state that no longer exists.
    """


class ComputeConfigError(MLOpsError, AirflowFailException):
    """The task cannot run as a pod as configured (no retry: configuration does not fix itself)."""
