"""What `execute` leaves for `get_openlineage_facets_on_complete`: the values, tied to one task-instance try.

Stdlib only (imported by `execute`, which must not need the optional OpenLineage provider). The
OpenLineage provider asks the operator object after `execute`; the same object runs every try of every
run `dag.test()` makes in one process, so a value is stored with the (dag_id, run_id, task_id, map_index,
try_number) it belongs to and is only given back for that task instance: a skipped or failed later try
never reports the datasets of an earlier one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ATTRIBUTE = "openlineage_record"


def _key(ti: Any) -> tuple[Any, ...]:
    return tuple(getattr(ti, name, None) for name in ("dag_id", "run_id", "task_id", "map_index", "try_number"))


def remember(operator: Any, context: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """Keep `values` (what execute read and wrote) for this task instance's lineage.

    A context without a task instance (an `execute()` called by hand) keeps them under no instance: no
    OpenLineage call asks for them then."""
    setattr(operator, ATTRIBUTE, (_key(context.get("ti")), dict(values)))


def recall(operator: Any, task_instance: Any) -> dict[str, Any] | None:
    """The values `execute` kept for `task_instance`, or None (it failed or skipped before recording)."""
    stored = getattr(operator, ATTRIBUTE, None)
    if not stored or stored[0] != _key(task_instance):
        return None
    return dict(stored[1])
