"""Model slots of the serving app: load, warm up, swap atomically, follow an alias, route canaries.

Readers (`route`, `primary`, ...) read ONE attribute, `_slots`, an immutable snapshot of (primary,
secondary, mode, fraction): assigning it is atomic in CPython, so a request sees the old or the new
deployment, never a mix, and never waits for a lock. Writers (`deploy`, the alias poller) hold
`_lock` and build the next snapshot completely (download, load, warm-up) before assigning it; any
failure leaves the current snapshot serving. Canary routing is sticky per entity: `canary_bucket`
(blake2b of the key text, not Python's per-process salted `hash()`) is the same in every replica.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import MLOpsError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

MODES = ("full", "canary", "shadow")
_HASH_SPACE = float(2**64)
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class ModelLoadError(MLOpsError):
    """A version cannot serve (missing, unloadable, no predict_proba, failed warm-up); names version and reason."""

    def __init__(self, message: str, *, model: str | None = None, version: str | None = None,
                 reason: str | None = None) -> None:
        self.model = model
        self.version = version
        self.reason = reason or message
        super().__init__(message)


class MissingFeatures(ValueError):
    """A frame handed to `LoadedModel.predict_proba` lacks some of the model's feature columns."""

    def __init__(self, model: str, version: str, missing: list[str]) -> None:
        self.columns = missing
        super().__init__(f"{model} v{version} needs feature columns {missing}, absent from the request; "
                         "send them (or let the Feast lookup provide them)")


def _load_error(name: str, version: str, reason: str, fix: str) -> ModelLoadError:
    return ModelLoadError(f"{name} v{version} cannot serve: {reason}. {fix}", model=name, version=version,
                          reason=reason)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded, warmed-up model version."""

    name: str
    version: str
    run_id: str | None
    model: Any = field(repr=False, compare=False)
    feature_columns: tuple[str, ...]
    loaded_at: str

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Positive-class probability per row; `frame` may hold extra columns (they are ignored).

        A frame that already has exactly the feature columns, in order, as float64 (see `frame()`)
        goes to the model as is; anything else is selected and cast first (~0.5 ms more per call)."""
        columns = list(self.feature_columns)
        if list(frame.columns) != columns or any(dtype != "float64" for dtype in frame.dtypes):
            if missing := [column for column in columns if column not in frame.columns]:
                raise MissingFeatures(self.name, self.version, missing)
            frame = frame[columns].astype("float64", copy=False)
        return self.model.predict_proba(frame)[:, 1]

    def frame(self, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """The model's input frame (feature columns, float64, None -> NaN) built from dict rows."""
        import numpy as np
        import pandas as pd

        columns = self.feature_columns
        if missing := sorted({column for record in records for column in columns if column not in record}):
            raise MissingFeatures(self.name, self.version, missing)
        try:
            values = np.array([[record[column] for column in columns] for record in records], dtype="float64")
        except (TypeError, ValueError):
            bad = [c for c in columns if not all(_is_number(record[c]) for record in records)]
            raise ValueError(f"{self.name} v{self.version}: feature columns {bad} must be numbers (or null)") from None
        return pd.DataFrame(values.reshape(len(records), len(columns)), columns=list(columns))

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "run_id": self.run_id, "loaded_at": self.loaded_at}


@dataclass(frozen=True)
class _Slots:  # what serves right now; replaced as a whole, never mutated
    primary: LoadedModel
    secondary: LoadedModel | None = None
    mode: str = "single"
    fraction: float = 0.0


def canary_bucket(entity_key: str) -> float:
    """Stable position of an entity key in [0, 1): the same in every process, machine and run."""
    digest = hashlib.blake2b(entity_key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


def entity_key_text(entity: Mapping[str, Any]) -> str:
    """Canonical text of an entity's keys ({"driver_id": 1001} -> '{"driver_id":1001}') for `route()`."""
    return json.dumps(dict(entity), sort_keys=True, separators=(",", ":"), default=str)


def _default_client() -> MlflowClient:
    from airflow_mlops.hooks.mlflow import MLflowHook

    return MLflowHook().get_conn()


class ModelManager:
    """The primary (and optional canary/shadow) model of one registered model, following an alias.

    :param name: registered model name.
    :param client_factory: makes the MlflowClient (default: MLflowHook().get_conn()).
    :param poll_seconds: how often the poller re-reads `follow_alias`.
    :param follow_alias: alias to serve and follow (None: serve explicit versions only, no poller).
    """

    def __init__(self, name: str, *, client_factory: Callable[[], MlflowClient] | None = None,
                 poll_seconds: float = 5.0, follow_alias: str | None = "champion") -> None:
        if not poll_seconds > 0:
            raise ValueError(f"poll_seconds={poll_seconds!r} must be > 0; use follow_alias=None to stop polling")
        self.name = name
        self.poll_seconds = float(poll_seconds)
        self.follow_alias = follow_alias
        self._client_factory = client_factory or _default_client
        self._client: MlflowClient | None = None
        self._slots: _Slots | None = None
        self._lock = threading.Lock()  # serializes deploys and polls; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._alias_seen: str | None = None
        self._last_error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, version: str | None = None) -> None:
        """Load `version` (default: the alias' version) as primary, then start following the alias."""
        with self._lock:
            alias_now = self._alias_version() if self.follow_alias else None
            self._deploy_locked(version or alias_now, "full", 0.0)
            self._alias_seen = alias_now
        if self.follow_alias and (self._thread is None or not self._thread.is_alive()):
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
        slots = self._current()
        if slots.secondary is None:
            return slots.primary, None, "primary"
        if slots.mode == "shadow":
            return slots.primary, slots.secondary, "primary"
        if canary_bucket(entity_key) < slots.fraction:
            return slots.secondary, None, "canary"
        return slots.primary, None, "primary"

    def status(self) -> dict[str, Any]:
        slots = self._slots
        thread = self._thread
        return {
            "model": self.name,
            "mode": slots.mode if slots else "single",
            "fraction": slots.fraction if slots else 0.0,
            "follow_alias": self.follow_alias,
            "primary": slots.primary.describe() if slots else None,
            "secondary": slots.secondary.describe() if slots and slots.secondary else None,
            "last_error": self._last_error,
            "alias_version": self._alias_seen,
            "following": bool(thread and thread.is_alive()) and (slots is None or slots.mode != "canary"),
        }

    def _current(self) -> _Slots:
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
            self._deploy_locked(target, mode, float(fraction))
            if version is None and mode == "full":
                self._alias_seen = target
        return self.status()

    def poll_once(self) -> bool:
        """One alias check; True when it swapped the primary. Never raises: errors go to last_error."""
        if not self.follow_alias:
            return False
        with self._lock:
            slots = self._slots
            if slots is not None and slots.mode == "canary":
                return False  # a canary is being judged: the deploy operator decides what comes next
            try:
                current = self._alias_version()
                if current is None or current == self._alias_seen:
                    return False
                if slots is None or slots.primary.version != current:
                    self._deploy_locked(current, "full", 0.0)
                self._alias_seen = current
                return slots is None or slots.primary.version != current
            except ModelLoadError as exc:  # same text as _deploy_locked recorded: logged once, retried next tick
                self._record_error(str(exc))
            except Exception as exc:  # noqa: BLE001 - the poller must outlive anything a tick can throw
                self._record_error(f"{self.name}: alias poll failed ({_first_line(exc)}); retrying every "
                                   f"{self.poll_seconds:g} s")
            return False

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll_once()

    def _deploy_locked(self, version: str | None, mode: str, fraction: float) -> None:
        try:
            if version is None:
                raise self._no_version_error()
            model = self._reuse(str(version)) or self._load(str(version))
            slots = self._next_slots(model, mode, fraction)
        except ModelLoadError as exc:
            self._record_error(str(exc))
            raise
        self._slots = slots  # THE swap: one attribute assignment
        self._last_error = None
        log.info("%s: serving v%s (%s%s)%s", self.name, slots.primary.version, slots.mode,
                 f" {slots.fraction:.0%}" if slots.mode == "canary" else "",
                 f", secondary v{slots.secondary.version}" if slots.secondary else "")

    def _next_slots(self, model: LoadedModel, mode: str, fraction: float) -> _Slots:
        if mode == "full":
            return _Slots(model)
        current = self._slots
        if current is None:
            raise ModelLoadError(f"{self.name}: cannot start a {mode} of v{model.version} without a primary "
                                 "model; deploy one with mode 'full' first", model=self.name, version=model.version)
        return _Slots(current.primary, model, mode, fraction if mode == "canary" else 0.0)

    def _reuse(self, version: str) -> LoadedModel | None:
        slots = self._slots
        for model in (slots.primary, slots.secondary) if slots else ():
            if model is not None and model.version == version:
                return model
        return None

    def _record_error(self, message: str) -> None:
        (log.error if message != self._last_error else log.debug)("%s", message)  # once per distinct error
        self._last_error = message

    # ------------------------------------------------------------------ registry
    def _get_client(self) -> MlflowClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _alias_version(self) -> str | None:
        from airflow_mlops.hooks.mlflow_registry import ModelRegistry

        assert self.follow_alias is not None
        try:
            return ModelRegistry(self._get_client(), self.name).alias_version(self.follow_alias)
        except Exception as exc:  # noqa: BLE001 - unreachable store, auth, ...: the caller gets a ModelLoadError
            raise ModelLoadError(f"{self.name}: cannot read alias {self.follow_alias!r} ({_first_line(exc)}); the "
                                 "current models keep serving. Check the MLflow registry (mlflow_default connection "
                                 "or MLFLOW_TRACKING_URI)", model=self.name, reason=_first_line(exc)) from exc

    def _existing_versions(self) -> str:
        try:
            found = self._get_client().search_model_versions(f"name = '{self.name}'")
        except Exception as exc:  # noqa: BLE001 - only decorates an error message
            return f"unknown: {_first_line(exc)}"
        return str(sorted(int(mv.version) for mv in found)) if found else "none"

    def _no_version_error(self) -> ModelLoadError:
        where = f"alias {self.follow_alias!r} is not set" if self.follow_alias else "no version was given"
        return ModelLoadError(
            f"{self.name}: nothing to serve: {where} (existing versions: {self._existing_versions()}). "
            f"Promote a version (set the alias) or deploy an explicit version", model=self.name, reason=where)

    def _load(self, version: str) -> LoadedModel:
        run_id = self._registered_version(version)
        started = datetime.now(UTC)
        model = load_sklearn(self._get_client(), self.name, version)
        loaded = LoadedModel(self.name, version, run_id, model, _feature_columns(self.name, version, model),
                             datetime.now(UTC).isoformat(timespec="milliseconds"))
        warm_up(loaded)
        log.info("%s v%s loaded and warmed up in %.2f s (%d feature columns)", self.name, version,
                 (datetime.now(UTC) - started).total_seconds(), len(loaded.feature_columns))
        return loaded

    def _registered_version(self, version: str) -> str | None:
        """The version's run id; ModelLoadError naming the existing versions when it does not exist."""
        try:
            return self._get_client().get_model_version(self.name, version).run_id or None
        except Exception as exc:  # noqa: BLE001 - MlflowException, StoreUnavailable, connection errors
            if getattr(exc, "error_code", None) not in _NOT_FOUND:
                raise _load_error(self.name, version, f"the registry cannot be read ({_first_line(exc)})",
                                  "Check the MLflow registry (mlflow_default connection or MLFLOW_TRACKING_URI)"
                                  ) from exc
        raise _load_error(self.name, version, f"no such registered version (existing versions: "
                          f"{self._existing_versions()})", "Deploy one of the existing versions") from None


def load_sklearn(client: MlflowClient, name: str, version: str) -> Any:
    """mlflow.sklearn.load_model of models:/<name>/<version>, resolved through `client`'s stores.

    `mlflow.sklearn.load_model("models:/...")` would resolve the URI through MLflow's process-global
    registry URI; asking the client for the download location keeps injected clients honest.
    """
    import mlflow.artifacts
    import mlflow.sklearn

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tqdm bars on every (re)load
    source = f"models:/{name}/{version}"
    try:
        source = client.get_model_version_download_uri(name, version)
        with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp,
                                                        tracking_uri=client.tracking_uri)
            return mlflow.sklearn.load_model(local)
    except Exception as exc:  # noqa: BLE001 - any failure here means "this artifact cannot serve"
        reason = f"artifact {source} cannot be loaded ({_first_line(exc)})"
        raise _load_error(name, version, reason, "Register a version whose artifacts exist and load with this "
                          "scikit-learn, or check the artifact store") from exc


def _is_number(value: Any) -> bool:
    try:
        float(value if value is not None else 0.0)
    except (TypeError, ValueError):
        return False
    return True


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _feature_columns(name: str, version: str, model: Any) -> tuple[str, ...]:
    if not callable(getattr(model, "predict_proba", None)):
        raise _load_error(name, version, f"a {type(model).__name__} has no predict_proba",
                          "Serve a classifier (a Pipeline ending in one) that predicts probabilities")
    columns = getattr(model, "feature_names_in_", None)
    if columns is None or len(columns) == 0:
        raise _load_error(name, version, "the model has no feature_names_in_ (it was fitted without column names)",
                          "Fit it on a pandas DataFrame so the serving columns are known")
    return tuple(str(column) for column in columns)


def warm_up(loaded: LoadedModel) -> None:
    """One prediction on a zero row through the serving path: broken models fail here, not on traffic."""
    import numpy as np

    zero = loaded.frame([dict.fromkeys(loaded.feature_columns, 0.0)])
    try:
        out = np.asarray(loaded.predict_proba(zero), dtype="float64")
    except Exception as exc:  # noqa: BLE001 - whatever breaks, it must not reach traffic
        raise _load_error(loaded.name, loaded.version, f"warm-up predict_proba on a zero row failed "
                          f"({_first_line(exc)})", "Fix the model and register a new version") from exc
    if out.shape != (1,) or not np.isfinite(out).all():
        raise _load_error(loaded.name, loaded.version, f"warm-up predict_proba gave {out!r}, not one finite "
                          "probability", "Serve a binary classifier")
