"""LabelFileTrigger: the AssetWatcher event trigger that fires once per new label file of a model.

Delayed labels land as parquet/CSV files in `<labels_dir>/<model>/` (spec
`monitoring.performance.labels.path`). The watching is `LandingFileTrigger`'s (triggers/landing.py):
the same file rules (`*.parquet` / `*.csv`, not hidden, not `_`-prefixed, so `.x.parquet.tmp` is
ignored) and the same completeness test (size and mtime unchanged between two polls, not empty,
parquet framed by `PAR1` at both ends). This subclass watches one directory and names the model
in the payload: `{model, file, path, size_bytes, modified_at}`; Airflow stores it as the
`mlops.labels.<model>` asset event's `extra["payload"]`, and the model's monitoring DAG, scheduled
on that asset, runs the performance check without waiting for its schedule.

Unlike landing files, label files stay where they are (the performance check reads all of them
every run). The trigger remembers what it fired while it runs, so each file fires once; after a
triggerer restart the files present fire once more. That costs one extra monitoring run, not
many: asset events that queue while a DAG run is pending start a single run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetWatcher
from airflow.triggers.base import TriggerEvent

from airflow_mlops.triggers.landing import DEFAULT_POLL_INTERVAL_S, LandingFileTrigger, poll_interval_from_env

LABELS_PREFIX = "mlops.labels."


class LabelFileTrigger(LandingFileTrigger):
    """Fire one event per complete new label file in `labels_dir` (for an AssetWatcher).

    :param labels_dir: the model's label directory (`paths().labels_dir / model`, or the spec's
        `labels.path`), absolute.
    :param model: the model the labels are for (put in every payload).
    :param poll_interval: seconds between polls; a file fires within one to two intervals of its
        last write.
    """

    def __init__(self, labels_dir: str, model: str, poll_interval: float = DEFAULT_POLL_INTERVAL_S,
                 **kwargs: Any) -> None:
        folder = Path(labels_dir)
        # LandingFileTrigger watches <landing_dir>/<dataset>/: the parent with the one directory as dataset
        super().__init__(landing_dir=str(folder.parent), datasets=[folder.name], poll_interval=poll_interval,
                         **kwargs)
        self.labels_dir = str(labels_dir)
        self.model = model

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"labels_dir": self.labels_dir, "model": self.model, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self.log.info("watching %s for label files of %s", self.labels_dir, self.model)
        async for event in super().run():
            found = event.payload
            payload = {"model": self.model, "file": Path(found["path"]).name, "path": found["path"],
                       "size_bytes": found["size_bytes"], "modified_at": found["modified_at"]}
            self.log.info("new label file %s for %s (%s bytes)", payload["file"], self.model, payload["size_bytes"])
            yield TriggerEvent(payload)


def labels_dir_of(model: str, path: str | None = None) -> Path:
    """The spec's `monitoring.performance.labels.path`, else <MLOPS_HOME>/labels/<model>."""
    from airflow_mlops.config import paths

    return Path(path) if path else paths().labels_dir / model


def labels_asset(model: str, path: str | None = None, poll_interval: float | None = None) -> Asset:
    """`mlops.labels.<model>`: updated by an AssetWatcher once per complete new label file.

    Schedule the monitoring DAG on it (e.g. `schedule=labels_asset(m) | <cron timetable>`) so labels
    arriving start performance monitoring. Poll interval: `poll_interval`, else
    MLOPS_LANDING_POLL_INTERVAL, else 10 s. The trigger's arguments identify it (Airflow hashes
    them), so they must be the same on every parse: the path is resolved from MLOPS_HOME.
    """
    interval = poll_interval if poll_interval is not None else poll_interval_from_env()
    trigger = LabelFileTrigger(labels_dir=str(labels_dir_of(model, path)), model=model, poll_interval=interval)
    return Asset(name=f"{LABELS_PREFIX}{model}", uri=f"mlops://labels/{model}", group="mlops",
                 watchers=[AssetWatcher(name=f"mlops_labels_{model}_watcher", trigger=trigger)])
