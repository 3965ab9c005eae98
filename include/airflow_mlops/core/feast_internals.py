"""Every import of a Feast-internal module, in one place (import-linter contract `feast-internals`).

Feast's public API is the top-level `feast` package (FeatureStore, RepoConfig, FeatureView, ...) and
`feast.errors`/`feast.types`/`feast.value_type`. What we need beyond it — the repo parser and `apply` of the
`feast` CLI, the registry and entity-key protos, the value converters and the request-context cache of the
online read — lives in modules Feast may change in any release. They are reached
through this module only, so a Feast upgrade has one file to check (with the tests that cover each use).
Each function imports lazily: nothing here loads Feast at import.
"""

from __future__ import annotations

from typing import Any


def repo_operations() -> Any:  # the module
    """`feast.repo_operations`: parse_repo, get_repo_files, py_path_to_module, apply_total_with_repo_instance."""
    import feast.repo_operations

    return feast.repo_operations


def feature_store_module() -> Any:  # the module
    """`feast.feature_store` itself (its module-level `tqdm`, silenced while Feast prints progress)."""
    import feast.feature_store

    return feast.feature_store


def registry_proto() -> Any:
    """The `Registry` protobuf message of Feast's file registry (registry.db)."""
    from feast.protos.feast.core.Registry_pb2 import Registry

    return Registry


def entity_key_proto() -> Any:
    """The `EntityKey` protobuf message online stores are keyed by."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey

    return EntityKey


def type_map() -> Any:  # the module
    """`feast.type_map`: python_values_to_proto_values, feast_value_type_to_python_type."""
    import feast.type_map

    return feast.type_map


def feast_utils() -> Any:  # the module
    """`feast.utils`: the cached request context of get_online_features."""
    import feast.utils

    return feast.utils


def dummy_entity_name() -> str:
    """The placeholder entity of entity-less feature views."""
    from feast.feature_view import DUMMY_ENTITY_NAME

    return str(DUMMY_ENTITY_NAME)

