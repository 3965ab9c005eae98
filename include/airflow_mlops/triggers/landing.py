"""LandingFileTrigger: the AssetWatcher event trigger that fires once per new raw batch in the landing dir.

It watches `<landing_dir>/<dataset>/` (every dataset directory, or `datasets`) for the same files
the landing task picks up (`core.offline.raw_batches_in`: `*.parquet` / `*.csv`, not hidden, not
`_`-prefixed, never inside `_landed/`; so `*.tmp` and `.x.parquet.tmp` are ignored), and yields one
`TriggerEvent` per file once the file is *complete*:

- its size and mtime are unchanged between two polls (a writer still appending changes them), and
  it is not empty;
- a parquet file also starts and ends with the `PAR1` magic (writers add the footer last). A
  parquet file that never gets a footer never fires; the `@hourly` run validates and quarantines it.

The payload names the file: `{dataset, file: "<dataset>/<name>", path, size_bytes, modified_at}`;
Airflow stores it as the `mlops.landing` asset event's `extra["payload"]`.

Once per file, and restarts: the trigger keeps running after an event and remembers what it fired
(file path + size + mtime) for as long as the file stays in the landing dir; the run it starts
lands the file and moves it to `_landed/`, and the trigger then forgets it (so a new file dropped
under the same name fires again). A changed file (new size/mtime) is a new batch and fires again.
Memory is lost when the trigger restarts (triggerer restart, trigger moved to another triggerer,
DAG paused and unpaused): files *still in the landing dir* then fire once more. That is on
purpose — "present in landing" means "not landed yet", the state that matters lives in the file
system, and landing is idempotent (content-hash batch ids), so a duplicate event costs one run
that lands nothing and emits no feature event. Files that were landed are in `_landed/` and never
fire again. No database state is needed (the asset state store of Airflow 3.3 could hold a
fingerprint set, but it would have to be reconciled with the file system anyway).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_mlops.boundary import TriggerBoundary
from airflow_mlops.core.offline import raw_batches_in

POLL_INTERVAL_ENV = "MLOPS_LANDING_POLL_INTERVAL"
DEFAULT_POLL_INTERVAL_S = 10.0
PARQUET_MAGIC = b"PAR1"


def poll_interval_from_env(default: float = DEFAULT_POLL_INTERVAL_S) -> float:
    """Seconds between landing-dir polls: MLOPS_LANDING_POLL_INTERVAL, else `default`."""
    raw = os.environ.get(POLL_INTERVAL_ENV, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{POLL_INTERVAL_ENV}={raw!r} is not a number of seconds, e.g. 10") from None
    if value <= 0:
        raise ValueError(f"{POLL_INTERVAL_ENV}={raw!r} must be > 0 seconds")
    return value


@dataclass(frozen=True)
class FileState:
    """What a poll sees of one file; two equal states in a row mean nobody is writing it."""

    size: int
    mtime_ns: int


def is_complete(path: Path, state: FileState) -> bool:
    """Not empty, and for parquet: the `PAR1` magic at both ends (the footer is written last)."""
    if state.size <= 0:
        return False
    if path.suffix.lower() != ".parquet":
        return True
    if state.size < 2 * len(PARQUET_MAGIC):
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(len(PARQUET_MAGIC))
            handle.seek(-len(PARQUET_MAGIC), os.SEEK_END)
            tail = handle.read(len(PARQUET_MAGIC))
    except OSError:  # moved or deleted between the listing and the read
        return False
    return head == PARQUET_MAGIC and tail == PARQUET_MAGIC


class LandingScan:
    """The watcher's memory: files waiting to settle and files already fired (blocking I/O; no Airflow).

    Call `poll()` once per interval; it returns the payloads of the files that became complete since
    the previous poll, each exactly once while the file stays in the landing dir.
    """

    def __init__(self, landing_dir: Path, datasets: Sequence[str] | None = None) -> None:
        self.landing_dir = Path(landing_dir)
        self.datasets = list(datasets) if datasets is not None else None
        self._pending: dict[Path, FileState] = {}
        self._fired: dict[Path, FileState] = {}

    def dataset_dirs(self) -> list[Path]:
        if self.datasets is not None:
            return [self.landing_dir / name for name in self.datasets]
        if not self.landing_dir.is_dir():
            return []
        return sorted(p for p in self.landing_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))

    def candidates(self) -> dict[Path, FileState]:
        """Every raw batch file the landing task would pick up now, with its size and mtime."""
        found: dict[Path, FileState] = {}
        for folder in self.dataset_dirs():
            for path in raw_batches_in(folder):
                try:
                    stat = path.stat()
                except FileNotFoundError:  # landed or deleted since the listing
                    continue
                found[path] = FileState(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        return found

    def poll(self) -> list[dict[str, Any]]:
        current = self.candidates()
        ready = []
        for path, state in current.items():
            if self._fired.get(path) == state:
                continue
            if self._pending.get(path) == state and is_complete(path, state):
                del self._pending[path]
                self._fired[path] = state
                ready.append(self.payload(path, state))
            else:
                self._pending[path] = state
        for known in (self._pending, self._fired):  # landed, quarantined or deleted: forget it
            for gone in set(known) - set(current):
                del known[gone]
        return ready

    def payload(self, path: Path, state: FileState) -> dict[str, Any]:
        return {
            "dataset": path.parent.name,
            "file": f"{path.parent.name}/{path.name}",
            "path": str(path),
            "size_bytes": state.size,
            "modified_at": datetime.fromtimestamp(state.mtime_ns / 1e9, tz=UTC).isoformat(),
        }


class LandingFileTrigger(TriggerBoundary, BaseEventTrigger):
    """Fire one event per complete new raw batch in `<landing_dir>/<dataset>/` (for an AssetWatcher).

    :param landing_dir: the landing directory (`paths().landing_dir`), absolute.
    :param datasets: dataset sub-directories to watch; None watches every one (not `_*`/`.*`).
    :param poll_interval: seconds between polls; a file fires after two equal polls, so within
        one to two intervals of its last write.
    """

    def __init__(self, landing_dir: str, datasets: list[str] | None = None,
                 poll_interval: float = DEFAULT_POLL_INTERVAL_S, **kwargs: Any) -> None:
        # Airflow's BaseTrigger.__init__(**kwargs) is unannotated; mypy's untyped_calls_exclude does not reach super()
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        self.landing_dir = str(landing_dir)
        self.datasets = list(datasets) if datasets is not None else None
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"landing_dir": self.landing_dir, "datasets": self.datasets, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        scan = LandingScan(Path(self.landing_dir), self.datasets)
        self.log.info("watching %s/%s for new raw batches every %ss", self.landing_dir,
                      "{" + ",".join(self.datasets) + "}" if self.datasets is not None else "<dataset>",
                      self.poll_interval)
        while True:
            try:
                ready = await asyncio.to_thread(scan.poll)
            except (PermissionError, NotADirectoryError):
                raise  # a wrong mount or mode does not heal: fail visibly
            except OSError as err:  # NFS hiccups and the like may heal: try again next interval
                self.log.warning("cannot list %s (%s); retrying in %ss", self.landing_dir, err, self.poll_interval)
                ready = []
            for payload in ready:
                self.log.info("new raw batch %s (%s bytes)", payload["file"], payload["size_bytes"])
                yield TriggerEvent(payload)
            await asyncio.sleep(self.poll_interval)
