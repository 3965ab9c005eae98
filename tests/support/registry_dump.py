"""A full dump of one registered model, to prove a task changed nothing in the registry.

Everything the registry holds about the model: its description, tags (audit trail, lease, retrain start),
aliases and update time, and per version its run, source, status, description, tags, aliases and times.
Two equal dumps mean no write happened (MLflow bumps `last_updated_timestamp` on every update).
"""

from __future__ import annotations

from typing import Any


def registry_dump(client: Any, name: str) -> dict[str, Any]:
    model = client.get_registered_model(name)
    versions = {}
    for found in client.search_model_versions(f"name = '{name}'"):
        # search results carry no aliases in MLflow 3: read each version itself
        version = client.get_model_version(name, str(found.version))
        versions[str(version.version)] = {
            "run_id": version.run_id,
            "source": version.source,
            "status": version.status,
            "description": version.description,
            "tags": dict(version.tags or {}),
            "aliases": sorted(version.aliases or []),
            "created": version.creation_timestamp,
            "updated": version.last_updated_timestamp,
        }
    return {
        "description": model.description,
        "tags": dict(model.tags or {}),
        "aliases": {alias: str(v) for alias, v in dict(model.aliases or {}).items()},
        "updated": model.last_updated_timestamp,
        "versions": versions,
    }
