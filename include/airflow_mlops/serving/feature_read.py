"""The serving app's online read: Feast's own online-store read, without building and unpacking response protos.

`FeatureStore.get_online_features(...).to_dict()` spends about two thirds of a one-entity lookup
outside the store: converting the entity rows, filling a `GetOnlineFeaturesResponse` proto
(timestamps, statuses) and converting it back to Python lists (profiled in the serving process,
docs/benchmarks.md). `DirectRead` takes the same steps as Feast's generic
`OnlineStore.get_online_features` with Feast's own parts, and stops at Python values:

1. Feast's cached request context (`feast.utils._get_cached_request_context`): the same registry
   resolution of the service's views, requested features, join keys and entity types, rebuilt when
   the registry cache refreshes (a `feast apply` reaches the server after `cache_ttl_seconds`, as with
   Feast's call);
2. per view, the unique entities as `EntityKey` protos (Feast's `python_values_to_proto_values`),
   then the online store's own `online_read` (its key serialization, table or hash layout, decoding);
3. each value through `feast_value_type_to_python_type` with the feature's declared type, as
   `OnlineResponse.to_dict()` does.

What it does not cover goes through Feast's full call, decided per request from the same context:
on-demand views (transformations), entity-less views, aliased join keys, versioned reads, precomputed vectors
(`precompute_online`). `tests/integration/test_serving_feature_read.py` checks that both give the
same values for every materialized entity and for unknown ones (SQLite; Redis under `stack`).
The Feast helpers used are pinned with Feast in requirements/lock.txt; if one is missing after an
upgrade, `DirectRead.available()` is False and the server uses Feast's call (logged once).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

KEY_CACHE_SIZE = 100_000  # EntityKey protos kept (~200 B each); the cache starts over when full


@dataclass(frozen=True)
class _View:
    """One feature view of the request context: what `online_read` needs and how to read its answer."""

    table: Any  # the FeatureView with the service's projection applied (Feast's grouped refs)
    requested: tuple[str, ...]
    join_keys: tuple[str, ...]  # the view's join keys (= entity-row columns), in the view's entity order
    key_types: tuple[Any, ...]  # ValueType of each entity column, as Feast converts it
    feature_types: dict[str, Any]  # feature name -> declared ValueType (OnlineResponse's feature_types)


class DirectRead:
    """Online features of one FeatureStore by Feast's online-store read; `read()` returns None when Feast must do it."""

    def __init__(self, store: Any) -> None:
        from airflow_mlops.core import feast_internals

        type_map = feast_internals.type_map()
        self.store = store
        self.online_store = store._get_provider().online_store
        self._context = feast_internals.feast_utils()._get_cached_request_context
        self._entity_key = feast_internals.entity_key_proto()
        self._to_python = type_map.feast_value_type_to_python_type
        self._to_protos = type_map.python_values_to_proto_values
        self._plans: tuple[Any, list[_View] | None] = (None, None)
        self._keys: dict[tuple[Any, ...], Any] = {}

    @staticmethod
    def available(store: Any) -> bool:
        """Whether this Feast has the pieces (and the store an online store) the direct read is built from."""
        try:
            from airflow_mlops.core import feast_internals

            type_map = feast_internals.type_map()
            return all(callable(getattr(m, name, None)) for m, name in (
                (feast_internals.feast_utils(), "_get_cached_request_context"),
                (type_map, "feast_value_type_to_python_type"), (type_map, "python_values_to_proto_values"),
                (store._get_provider().online_store, "online_read")))
        except (ImportError, AttributeError) as exc:
            log.warning("Feast lacks what the direct online read uses (%s); serving uses get_online_features", exc)
            return False

    def read(self, service: Any, entities: Sequence[dict[str, Any]],
             event_times: dict[str, list[Any]] | None = None) -> dict[str, list[Any]] | None:
        """Feature name -> value per entity row (None = no value), or None when this service needs Feast's call.

        `event_times`, when given, receives view name -> the event time (datetime) of each entity's row (None:
        no row) — what the online store keeps with every row, read in the same call.
        """
        views = self._plan(service)
        if views is None:
            return None
        columns: dict[str, list[Any]] = {}
        for view in views:
            columns.update(self._read_view(view, entities, event_times))
        return columns

    def _plan(self, service: Any) -> list[_View] | None:
        """The service's views from Feast's cached request context; rebuilt only when Feast rebuilds the context."""
        context = self._context(self.store.registry, self.store.project, service, False)
        cached_for, views = self._plans
        if cached_for is not context:
            views = _views(context, service)
            self._plans = (context, views)
        return views

    def _entity_keys(self, view: _View, keys: list[tuple[Any, ...]]) -> list[Any]:
        """EntityKey protos of entity tuples, remembered (a proto costs as much as the SQLite read; the online
        stores only read them). The value's type is part of the cache key: 1 and 1.0 are different keys."""
        cache, out, missing = self._keys, [], []
        for key in keys:
            proto = cache.get(tid := (view.join_keys, *((type(v), v) for v in key)))
            out.append(proto)
            if proto is None:
                missing.append((len(out) - 1, tid, key))
        if missing:
            values = [self._to_protos([key[j] for _, _, key in missing], kind) for j, kind in enumerate(view.key_types)]
            if len(cache) + len(missing) > KEY_CACHE_SIZE:
                cache.clear()
            for n, (i, tid, _) in enumerate(missing):
                out[i] = cache[tid] = self._entity_key(join_keys=view.join_keys, entity_values=[v[n] for v in values])
        return out

    def _read_view(self, view: _View, entities: Sequence[dict[str, Any]],
                   event_times: dict[str, list[Any]] | None) -> dict[str, list[Any]]:
        unique: dict[tuple[Any, ...], list[int]] = {}
        for i, row in enumerate(entities):
            unique.setdefault(tuple(row[key] for key in view.join_keys), []).append(i)
        rows = self.online_store.online_read(config=self.store.config, table=view.table,
                                             entity_keys=self._entity_keys(view, list(unique)),
                                             requested_features=list(view.requested))  # a store may append to it
        out: dict[str, list[Any]] = {name: [None] * len(entities) for name in view.requested}
        times: list[Any] = [None] * len(entities)
        if event_times is not None:
            event_times[view.table.name] = times
        for (event_time, found), positions in zip(rows, unique.values(), strict=True):
            if not found:
                continue
            for i in positions:
                times[i] = event_time
            for name in view.requested:
                proto = found.get(name)
                value = None if proto is None else self._to_python(proto, view.feature_types.get(name))
                for i in positions:
                    out[name][i] = value
        return out


def _views(context: tuple[Any, ...], service: Any) -> list[_View] | None:
    """Feast's request context -> the views to read, or None for what only Feast's full call handles."""
    from feast.value_type import ValueType

    from airflow_mlops.core.feast_internals import dummy_entity_name

    DUMMY_ENTITY_NAME = dummy_entity_name()  # Feast's constant, under its own name

    _, on_demand, entity_join_keys, entity_types, _, grouped_refs, _, _, entityless = context
    if on_demand or entityless or getattr(service, "precompute_online", False):
        return None
    if any(DUMMY_ENTITY_NAME in table.entities or table.projection.join_key_map
           or getattr(table.projection, "version_tag", None) is not None for table, _ in grouped_refs):
        return None  # entity-less, aliased join keys (Feast's map then depends on view order), versioned
    views = []
    for table, requested in grouped_refs:
        join_keys = tuple(entity_join_keys[name] for name in table.entities)
        views.append(_View(
            table=table, requested=tuple(requested), join_keys=join_keys,
            key_types=tuple(entity_types.get(key, ValueType.UNKNOWN) for key in join_keys),
            feature_types={f.name: f.dtype.to_value_type() for f in table.features if f.name in requested}))
    return views
