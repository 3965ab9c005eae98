"""Model slots of the serving app: load, warm up, swap atomically, follow an alias, route canaries.

Readers (`route`, `primary`, ...) read ONE attribute, `_slots`, an immutable `routing.Slots`
snapshot of (primary, secondary, mode, fraction): assigning it is atomic in CPython, so a request
sees the old or the new deployment, never a mix, and never waits for a lock. Writers (`deploy`, the
alias poller) hold `_lock` and build the next snapshot completely (download, load, warm-up) before
assigning it; any failure leaves the current snapshot serving. With `shadow_alias` (the spec's
`promotion.shadow`), the poller also keeps that alias' version (the challenger) in the shadow slot.
The same poll reads the registry's online-experiment record (`core/experiments.py`, a registered-model
tag written under the registry lease): while one runs, its arms route every request by sticky
entity-key buckets (`routing.Arms`), so every worker and replica applies the same shares.

Loading and compiling one version lives in `loaded.py`, routing and canary buckets in `routing.py`;
their public names are re-exported here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_mlops.serving.input_checks import read_profile
from airflow_mlops.serving.loaded import (
    LoadedModel,
    MissingFeatures,
    ModelLoadError,
    first_line,
    load_error,
    load_sklearn,
    prepare,
    warm_up,
)
from airflow_mlops.serving.routing import MODES, Arms, Slots, canary_bucket, entity_key_text

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["MODES", "LoadedModel", "MissingFeatures", "ModelLoadError", "ModelManager", "canary_bucket",
           "entity_key_text", "load_sklearn", "warm_up"]

log = logging.getLogger(__name__)

_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def _default_client() -> MlflowClient:
    """The registry of the serving process: mlflow_default from the environment (AIRFLOW_CONN_MLFLOW_DEFAULT),
    else MLFLOW_TRACKING_URI, else SQLite in MLOPS_HOME (core.store_settings); no Airflow import."""
    from airflow_mlops.core.mlflow_store import MLflowStore

    return MLflowStore().get_conn()


class ModelManager:
    """The primary (and optional canary/shadow) model of one registered model, following an alias.

    :param name: registered model name.
    :param client_factory: makes the MlflowClient (default: core.mlflow_store.MLflowStore().get_conn()).
    :param poll_seconds: how often the poller re-reads `follow_alias`.
    :param follow_alias: alias to serve and follow (None: serve explicit versions only, no poller).
    :param shadow_alias: alias whose version is scored in shadow beside the primary, off the request
        path (the spec's `promotion.shadow`: "challenger"); followed by the same poller. Unset, or
        the primary's own version: no shadow.
    """

    def __init__(self, name: str, *, client_factory: Callable[[], MlflowClient] | None = None,
                 poll_seconds: float = 5.0, follow_alias: str | None = "champion",
                 shadow_alias: str | None = None) -> None:
        if not poll_seconds > 0:
            raise ValueError(f"poll_seconds={poll_seconds!r} must be > 0; use follow_alias=None to stop polling")
        self.name = name
        self.poll_seconds = float(poll_seconds)
        self.follow_alias = follow_alias
        self.shadow_alias = shadow_alias
        self._client_factory = client_factory or _default_client
        self._client: MlflowClient | None = None
        self._slots: Slots | None = None
        self._lock = threading.Lock()  # serializes deploys and polls; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._alias_seen: str | None = None
        self._followed_from: LoadedModel | None = None  # the primary the poller last replaced
        self._last_error: str | None = None
        self._watchers: list[Callable[[], None]] = []

    def watch(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after every swap (deploy or poller), under the manager's lock: a worker of several
        writes what it serves to the shared metrics at once, not at its next scrape."""
        self._watchers.append(callback)

    # ------------------------------------------------------------------ lifecycle
    def start(self, version: str | None = None) -> None:
        """Load `version` (default: the alias' version) as primary, then start following the alias."""
        with self._lock:
            alias_now = self._alias_version() if self.follow_alias else None
            self._deploy_locked(version or alias_now, "full", 0.0, alias_seen=alias_now)
            try:
                self._sync_shadow_locked()
                self._sync_experiment_locked()
            except ModelLoadError:  # recorded in last_error; the primary serves, the poller retries the shadow
                pass
            except Exception as exc:  # noqa: BLE001 - an unreadable experiment record must not stop the primary
                self._record_error(f"{self.name}: experiment record unreadable ({first_line(exc)}); retrying")
        if (self.follow_alias or self.shadow_alias) and (self._thread is None or not self._thread.is_alive()):
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll_loop, name=f"mlops-alias-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the poller (the loaded models stay usable)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout if timeout is not None else self.poll_seconds + 60)

    # ------------------------------------------------------------------ readers (lock-free)
    @property
    def loaded(self) -> bool:
        return self._slots is not None

    @property
    def primary(self) -> LoadedModel:
        return self._current().primary

    def served(self) -> list[LoadedModel]:
        """The loaded versions, primary first (one read of the slots: a swap in between cannot mix them)."""
        slots = self._current()
        served = [slots.primary, *([slots.secondary] if slots.secondary else [])]
        arms = slots.experiment.models if slots.experiment is not None else ()
        return served + [m for m in arms if all(m is not s for s in served)]

    # _slots only ever goes from None to set, so reading it twice below is safe
    @property
    def secondary(self) -> LoadedModel | None:
        return self._slots.secondary if self._slots else None

    @property
    def mode(self) -> str:
        return self._slots.mode if self._slots else "single"

    @property
    def fraction(self) -> float:
        return self._slots.fraction if self._slots else 0.0

    def route(self, entity_key: str) -> tuple[LoadedModel, LoadedModel | None, str]:
        """(model that answers, model to shadow-score or None, route label "primary"|"canary")."""
        return self._current().route(entity_key)

    def status(self) -> dict[str, Any]:
        slots = self._slots
        thread = self._thread
        return {
            "model": self.name,
            "mode": slots.mode if slots else "single",
            "fraction": slots.fraction if slots else 0.0,
            "follow_alias": self.follow_alias,
            "shadow_alias": self.shadow_alias,
            "primary": slots.primary.describe() if slots else None,
            "secondary": slots.secondary.describe() if slots and slots.secondary else None,
            "last_error": self._last_error,
            "alias_version": self._alias_seen,
            "experiment": slots.experiment.describe() if slots and slots.experiment else None,
            "following": bool(thread and thread.is_alive()) and (slots is None or slots.mode != "canary"),
        }

    def _current(self) -> Slots:
        slots = self._slots
        if slots is None:
            raise ModelLoadError(f"{self.name}: no model loaded yet (ModelManager.start() has not succeeded); "
                                 f"see the serving log or status()['last_error']: {self._last_error}",
                                 model=self.name)
        return slots

    # ------------------------------------------------------------------ writers (serialized)
    def deploy(self, version: str | None = None, mode: str = "full", fraction: float = 0.0) -> dict[str, Any]:
        """full: `version` (default: the alias' version) becomes primary, secondary cleared.
        canary: `version` serves `fraction` of entity keys (sticky); alias following pauses.
        shadow: `version` is scored beside the primary, off the request path.
        ModelLoadError when it cannot load; the current models keep serving unchanged."""
        if mode not in MODES:
            raise ValueError(f"deploy mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "canary" and not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"canary fraction {fraction!r} must be within [0, 1] (0.1 = 10% of entity keys)")
        with self._lock:
            target = version
            if target is None and self.follow_alias:
                target = self._alias_version()
            followed = version is None and mode == "full"
            self._deploy_locked(target, mode, float(fraction), alias_seen=target if followed else None)
            self._followed_from = None  # an admin decision replaces what the poller last did
        return self.status()

    def poll_once(self) -> bool:
        """One alias check; True when it swapped the primary. Never raises: errors go to last_error."""
        if not (self.follow_alias or self.shadow_alias):
            return False
        with self._lock:
            slots = self._slots
            if slots is not None and slots.mode == "canary":
                return False  # a canary is being judged: the deploy operator decides what comes next
            try:
                swapped = self._follow_primary_locked(slots) if self.follow_alias else False
                self._sync_shadow_locked()
                self._sync_experiment_locked()
                return swapped
            except ModelLoadError as exc:  # same text as _deploy_locked recorded: logged once, retried next tick
                self._record_error(str(exc))
            except Exception as exc:  # noqa: BLE001 - the poller must outlive anything a tick can throw
                self._record_error(f"{self.name}: alias poll failed ({first_line(exc)}); retrying every "
                                   f"{self.poll_seconds:g} s")
            return False

    def _follow_primary_locked(self, slots: Slots | None) -> bool:
        current = self._alias_version()
        if current is None or current == self._alias_seen:
            return False
        if slots is None or slots.primary.version != current:
            self._deploy_locked(current, "full", 0.0, alias_seen=current)
            # kept so that a canary of `current` arriving right after this swap is judged against it
            self._followed_from = slots.primary if slots is not None else None
        self._alias_seen = current
        return slots is None or slots.primary.version != current

    def _sync_shadow_locked(self) -> None:
        """Make the shadow slot hold `shadow_alias`' version (none when unset or equal to the primary).

        A shadow that cannot load is recorded in last_error and retried next tick; the primary serves on."""
        slots = self._slots
        if not self.shadow_alias or slots is None or slots.mode == "canary":
            return
        wanted = self._alias_version(self.shadow_alias)
        if wanted is None or wanted == slots.primary.version:
            if slots.mode == "shadow":  # promoted (or alias removed): nothing left to shadow
                self._swap(replace(slots, secondary=None, mode="single"))
                log.info("%s: shadow cleared (alias %r: %s)", self.name, self.shadow_alias, wanted or "unset")
            return
        if slots.secondary is None or slots.secondary.version != wanted:
            self._deploy_locked(wanted, "shadow", 0.0)

    def _sync_experiment_locked(self) -> None:
        """Route by the registry's experiment record: a running one's arms and shares, else none."""
        slots = self._slots
        if not self.follow_alias or slots is None or slots.mode == "canary":
            return  # a pinned server serves what it was given; a canary is the deploy operator's to judge
        from airflow_mlops.core.model_registry import ModelRegistry

        record = ModelRegistry(self._get_client(), self.name).experiment()
        current = slots.experiment
        if record is None or not record.running:
            if current is not None:
                self._swap(replace(slots, experiment=None))
                log.info("%s: experiment %s is over: every request goes to v%s", self.name, current.experiment_id,
                         slots.primary.version)
            return
        wanted = list(record.arms.items())
        if current is not None and current.experiment_id == record.id and \
                [(m.version, s) for m, s in zip(current.models, current.shares, strict=True)] == wanted:
            return
        models = [self._reuse(version) or self._load(version) for version, _ in wanted]
        arms = Arms.of(record.id, record.route, models, [share for _, share in wanted])
        self._swap(replace(self._slots or slots, experiment=arms))
        log.info("%s: experiment %s routes %s", self.name, record.id,
                 ", ".join(f"v{v} {share:.1%}" for v, share in zip(record.arms, arms.shares, strict=True)))

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll_once()

    def _deploy_locked(self, version: str | None, mode: str, fraction: float, alias_seen: str | None = None) -> None:
        """Load `version` and swap it in; `alias_seen` (the alias version this deploy follows) is recorded
        just before the swap, so a lock-free status() that shows the new primary also shows its alias."""
        try:
            if version is None:
                raise self._no_version_error()
            model = self._reuse(str(version)) or self._load(str(version))
            slots = self._next_slots(model, mode, fraction)
        except ModelLoadError as exc:
            self._record_error(str(exc))
            raise
        if alias_seen is not None:
            self._alias_seen = alias_seen
        self._swap(slots)
        self._last_error = None
        log.info("%s: serving v%s (%s%s)%s", self.name, slots.primary.version, slots.mode,
                 f" {slots.fraction:.0%}" if slots.mode == "canary" else "",
                 f", secondary v{slots.secondary.version}" if slots.secondary else "")

    def _swap(self, slots: Slots) -> None:
        self._slots = slots  # THE swap: one attribute assignment
        for callback in self._watchers:
            try:
                callback()
            except Exception:  # reporting the swap must not undo or fail it
                log.exception("%s: a swap watcher failed", self.name)

    def _next_slots(self, model: LoadedModel, mode: str, fraction: float) -> Slots:
        current = self._slots
        experiment = current.experiment if current is not None else None  # the registry record decides it
        if mode == "full":
            return Slots(model, experiment=experiment)
        before = self._followed_from
        if mode == "canary" and current is not None and current.primary is model and before is not None:
            # The poller followed the champion alias to this version moments before its deploy task asked
            # for a canary of it (promote moves the alias first): judge it against the version it replaced.
            primary = before
        elif current is None:
            raise ModelLoadError(f"{self.name}: cannot start a {mode} of v{model.version} without a primary "
                                 "model; deploy one with mode 'full' first", model=self.name, version=model.version)
        else:
            primary = current.primary
        if not _comparable(primary, model):
            # one answer would mix shapes (a class here, a value there; probability columns of other classes), and
            # a shadow's scores would compare with nothing
            raise ModelLoadError(f"{self.name}: cannot start a {mode} of v{model.version} ({_task_words(model)}) "
                                 f"beside v{primary.version} ({_task_words(primary)}): both must be of one task "
                                 "(and, multiclass, have the same classes); deploy it with mode 'full' instead",
                                 model=self.name, version=model.version)
        return Slots(primary, model, mode, fraction if mode == "canary" else 0.0, experiment)

    def _reuse(self, version: str) -> LoadedModel | None:
        slots = self._slots
        arms = slots.experiment.models if slots and slots.experiment else ()
        for model in (slots.primary, slots.secondary, *arms) if slots else ():
            if model is not None and model.version == version:
                return model
        return None

    def _record_error(self, message: str) -> None:
        (log.error if message != self._last_error else log.debug)("%s", message)  # once per distinct error
        self._last_error = message

    # ------------------------------------------------------------------ registry
    def alias_version(self) -> str | None:
        """The followed alias' version, read from the registry now (None: not set, or no alias followed);
        ModelLoadError when the registry cannot be read."""
        return self._alias_version() if self.follow_alias else None

    def _get_client(self) -> MlflowClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _alias_version(self, alias: str | None = None) -> str | None:
        from airflow_mlops.core.model_registry import ModelRegistry

        alias = alias or self.follow_alias
        assert alias is not None
        try:
            return ModelRegistry(self._get_client(), self.name).alias_version(alias)
        except Exception as exc:  # unreachable store, auth, ...: the caller gets a ModelLoadError
            raise ModelLoadError(f"{self.name}: cannot read alias {alias!r} ({first_line(exc)}); the "
                                 "current models keep serving. Check the MLflow registry (mlflow_default connection "
                                 "or MLFLOW_TRACKING_URI)", model=self.name, reason=first_line(exc)) from exc

    def _existing_versions(self) -> str:
        try:
            found = self._get_client().search_model_versions(f"name = '{self.name}'")
        except Exception as exc:  # noqa: BLE001 - only decorates an error message
            return f"unknown: {first_line(exc)}"
        return str(sorted(int(mv.version) for mv in found)) if found else "none"

    def _no_version_error(self) -> ModelLoadError:
        where = f"alias {self.follow_alias!r} is not set" if self.follow_alias else "no version was given"
        return ModelLoadError(
            f"{self.name}: nothing to serve: {where} (existing versions: {self._existing_versions()}). "
            f"Promote a version (set the alias) or deploy an explicit version", model=self.name, reason=where)

    def _load(self, version: str) -> LoadedModel:
        run_id, tags = self._registered_version(version)
        started = datetime.now(UTC)
        model = load_sklearn(self._get_client(), self.name, version)
        profile = read_profile(self._get_client(), run_id)
        loaded = prepare(self.name, version, run_id, model, datetime.now(UTC).isoformat(timespec="milliseconds"),
                         profile, tags)
        log.info("%s v%s loaded and warmed up in %.2f s (%d feature columns, %s, %s)", self.name, version,
                 (datetime.now(UTC) - started).total_seconds(), len(loaded.feature_columns),
                 "compiled to numpy" if loaded.fast is not None else "sklearn predict_proba",
                 "feature ranges from its training-set profile" if loaded.ranges is not None
                 else "no training-set feature profile")
        return loaded

    def _registered_version(self, version: str) -> tuple[str | None, dict[str, str]]:
        """The version's run id and tags; ModelLoadError naming the existing versions when it does not exist."""
        try:
            found = self._get_client().get_model_version(self.name, version)
            return found.run_id or None, dict(getattr(found, "tags", None) or {})
        except Exception as exc:  # MlflowException, StoreUnavailable, connection errors
            if getattr(exc, "error_code", None) not in _NOT_FOUND:
                raise load_error(self.name, version, f"the registry cannot be read ({first_line(exc)})",
                                 "Check the MLflow registry (mlflow_default connection or MLFLOW_TRACKING_URI)"
                                 ) from exc
        raise load_error(self.name, version, f"no such registered version (existing versions: "
                          f"{self._existing_versions()})", "Deploy one of the existing versions") from None


def _comparable(primary: LoadedModel, other: LoadedModel) -> bool:
    """Can `other` serve as canary or shadow of `primary`: one task and, multiclass, the same classes in order."""
    same_task = primary.output.task == other.output.task
    return same_task and (not primary.output.multiclass or primary.output.classes == other.output.classes)


def _task_words(model: LoadedModel) -> str:
    output = model.output
    return f"{output.task}, classes {list(output.classes)}" if output.multiclass else output.task
