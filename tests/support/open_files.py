"""This process's open database connections on a directory that a test is about to replace.

The session's trained demo state (`support/demo_state.py`) is put back at one fixed path before each module
that uses it: the files are deleted and copied anew (new inodes). A SQLite connection that stays open
across that keeps reading the deleted file: the module after it sees the previous module's registry, not
the one its own subprocesses write to. Two helpers: close every SQLAlchemy engine on the directory, and
list what is still open on deleted files under it (which the checkout refuses).
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

PROC_FDS = Path("/proc/self/fd")
DELETED = " (deleted)"


def dispose_engines_under(root: Path) -> int:
    """Close the pooled connections of every SQLAlchemy engine in this process whose database is under `root`.

    MLflow keeps engines in class-level maps (`SqlAlchemyStore._engine_map`, one per store kind), and its
    lru-cached stores keep a reference to the engine they were built with. Once a checkout has popped an
    engine from its map, a cached store still holds it and reconnects on its next use; a second store
    built on the same URI later (another cache key: other tracking URI, artifact root, ...) puts a new
    engine in the map. Clearing the maps alone then misses the first engine at the next checkout, so every
    engine is found through the garbage collector's list of live objects, wherever it is referenced.
    A disposed engine stays usable (maps and stores keep it): its next connection opens the file then at
    that path.
    """
    if "sqlalchemy" not in sys.modules:
        return 0
    from sqlalchemy.engine import Engine

    prefix = str(root.resolve())
    engines = [obj for obj in gc.get_objects() if isinstance(obj, Engine)]
    disposed = 0
    for engine in engines:
        database = engine.url.database or ""
        if engine.url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
            continue
        if str(Path(database).resolve()).startswith(prefix):
            engine.dispose()
            disposed += 1
    return disposed


def open_on_deleted_files(root: Path) -> list[str]:
    """Files under `root` that this process still has open although they were deleted (Linux; elsewhere [])."""
    if not PROC_FDS.is_dir():
        return []
    prefixes = (str(root), str(root.resolve()))
    found = []
    for fd in os.listdir(PROC_FDS):
        try:
            target = os.readlink(PROC_FDS / fd)
        except OSError:  # closed meanwhile (the listing's own fd, another thread's file)
            continue
        if target.endswith(DELETED) and target.startswith(prefixes):
            found.append(f"fd {fd}: {target}")
    return sorted(found)
