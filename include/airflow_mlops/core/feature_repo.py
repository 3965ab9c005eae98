"""The Feast feature repo as files: parse it in-process (repeatedly), hash it, keep Feast's prints in the log.

Shared by FeastHook (apply, materialize) and `airflow-mlops check`. Nothing here knows about
Airflow connections. Feast and tqdm are imported inside functions: operators import the hook, the
hook imports this module, and DAG files import operators.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airflow_mlops.exceptions import FeatureRepoError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from feast.repo_contents import RepoContents

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_RECORD = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")  # a line a log handler already formatted


class InfoLogger(Protocol):
    """What `feast_output_to_log` needs: a stdlib logger or an operator's `self.log`."""

    def info(self, msg: Any, /, *args: Any) -> Any: ...


@contextlib.contextmanager
def feast_output_to_log(logger: InfoLogger | None = None) -> Iterator[None]:
    """Turn Feast's colored prints into log lines; no tqdm bars, no ibis deprecation noise.

    `FeatureStore.materialize*` prints ANSI-colored progress and hands a `tqdm` builder to the
    compute engine (feast/feature_store.py `tqdm_builder`); in task logs both are noise. Lines that
    already are formatted log records (dag.test() logs to stdout) are passed through, not re-logged.
    """
    import functools
    import warnings
    from unittest import mock

    import feast.feature_store as feature_store_module
    from tqdm import tqdm

    target = logger or log
    buffer, stdout = io.StringIO(), sys.stdout
    # feast.feature_store's own `tqdm` global (materialize's progress bar), replaced for this block only
    quiet_bars = mock.patch.object(feature_store_module, "tqdm", functools.partial(tqdm, disable=True))
    try:
        with quiet_bars, warnings.catch_warnings(), contextlib.redirect_stdout(buffer):
            # Feast 0.67's duckdb path calls ibis' deprecated fetch_arrow_table() on every query.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ibis\.")
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            plain = _ANSI.sub("", line).strip()
            if _LOG_RECORD.match(plain):
                stdout.write(line + "\n")
            elif plain:
                target.info("feast: %s", plain)


@contextlib.contextmanager
def importable_repo(repo: Path) -> Iterator[None]:
    """Let `feast.repo_operations.parse_repo` run from any cwd, repeatedly, in one process.

    parse_repo imports each file under a module name relative to the *cwd* (`py_path_to_module`)
    through `importlib.import_module`. Its module cache would keep definitions that read MLOPS_HOME
    at import time (a second parse under another MLOPS_HOME would see the first one's source
    paths), so: chdir into the repo, put it on sys.path, and drop those modules before and after.
    """
    from feast.repo_operations import get_repo_files, py_path_to_module

    old_cwd, old_bytecode = os.getcwd(), sys.dont_write_bytecode
    os.chdir(repo)
    sys.path.insert(0, str(repo))
    sys.dont_write_bytecode = True  # as `feast apply` does: no __pycache__ inside the repo
    try:
        names = [py_path_to_module(f) for f in get_repo_files(repo)]
        for name in names:
            sys.modules.pop(name, None)
        try:
            yield
        finally:
            for name in names:
                sys.modules.pop(name, None)
    finally:
        sys.path.remove(str(repo))
        sys.dont_write_bytecode = old_bytecode
        os.chdir(old_cwd)


def parse_feature_repo(repo: Path, *, project: str | None = None) -> RepoContents:
    """Parse the repo with Feast's own parser (it imports the repo's Python files).

    Raises FeatureRepoError naming the repo: it is missing, a definition file raises, or a join
    key's type cannot be inferred (`check_join_key_types`). Without a Project definition in the
    repo, `project` is added, the same default `feast apply` uses.
    """
    from feast.project import Project
    from feast.repo_operations import parse_repo

    repo = repo.resolve()
    if not repo.is_dir():
        raise FeatureRepoError(f"feature repo {repo} does not exist; set MLOPS_FEATURE_REPO to the Feast repo folder")
    try:
        with importable_repo(repo):
            contents = parse_repo(repo)
    except Exception as err:  # user code: any import-time error is a repo error
        raise FeatureRepoError(f"cannot load Feast definitions from {repo}: {type(err).__name__}: {err}") from err
    if project and not contents.projects:  # as repo_operations._get_repo_contents does
        contents.projects.append(Project(name=project, description=""))
    check_join_key_types(contents, repo)
    return contents


def definitions_hash(repo: Path, *, project: str, online_store: str, state_dir: str = "") -> str:
    """sha256 of every definition file Feast reads (honouring .feastignore), the project, online store and state dir."""
    from feast.repo_operations import get_repo_files

    repo = repo.resolve()
    digest = hashlib.sha256(f"{project}\0{online_store}\0{state_dir}\0".encode())
    for path in get_repo_files(repo):
        digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def check_join_key_types(contents: RepoContents, repo: Path) -> None:
    """Refuse definitions whose join-key type Feast would infer by reading a glob source.

    If neither the Entity has a `value_type` nor the view's schema lists the join key, apply infers
    the type with pyarrow's ParquetDataset (feast/inference.py `_infer_features_and_entities` →
    file_source.py `get_table_column_names_and_types`), which cannot expand `**` globs and fails with
    a bare FileNotFoundError, although duckdb reads the same glob fine at query time.
    """
    from feast import ValueType

    entities = {e.name: e for e in contents.entities}
    for view in contents.feature_views:
        path = str(getattr(view.batch_source, "path", "") or "")
        declared = {f.name for f in view.schema}
        for name in view.entities:
            entity = entities.get(name)
            if entity is None or entity.value_type != ValueType.UNKNOWN or entity.join_key in declared:
                continue
            if any(ch in path for ch in "*?["):
                raise FeatureRepoError(
                    f"{repo}: feature view '{view.name}' reads the glob {path!r} but the type of join key "
                    f"'{entity.join_key}' is not declared, and Feast can only infer it from a single file or "
                    f"directory. Declare it: Entity(name='{name}', ..., value_type=ValueType.INT64) or add "
                    f"Field(name='{entity.join_key}', dtype=Int64) to the view's schema."
                )


def rebase_registry(registry: Path, online_db: Path) -> list[str]:
    """Point the registry's SQLite online tables at `online_db`; returns the foreign paths it replaced.

    Feast records every online table with its absolute path in the registry (`Infra`), and on the
    next apply tears down tables that left the definitions *at that path*. A state dir copied
    elsewhere (or a second environment built from a copy) would so drop — and materialize into —
    the original's online store. Edited as a protobuf before any FeatureStore exists: loading the
    registry through Feast would already open a connection to the recorded (foreign) file.
    """
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

    if not registry.is_file():
        return []
    proto = RegistryProto()
    proto.ParseFromString(registry.read_bytes())
    ours, foreign = str(online_db), []
    for item in proto.infra.infra_objects:
        if item.HasField("sqlite_table") and item.sqlite_table.path != ours:
            foreign.append(item.sqlite_table.path)
            item.sqlite_table.path = ours
    if foreign:
        from airflow_mlops.core.offline import atomic_write_bytes

        data = proto.SerializeToString()
        atomic_write_bytes(registry, lambda tmp: tmp.write_bytes(data))
        log.warning("Feast registry %s recorded online tables in %s (a copied state dir?); they now point at %s",
                    registry, sorted(set(foreign)), ours)
    return foreign


def foreign_source_paths(registry: Path, offline_dir: Path) -> list[str]:
    """File sources in the registry that read outside `offline_dir` (the registry came from another state dir)."""
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

    if not registry.is_file():
        return []
    proto = RegistryProto()
    proto.ParseFromString(registry.read_bytes())
    uris = [fv.spec.batch_source.file_options.uri for fv in proto.feature_views] + \
        [source.file_options.uri for source in proto.data_sources]
    root = str(Path(offline_dir).resolve())
    return sorted({uri for uri in uris if uri and Path(uri).is_absolute() and not uri.startswith(root + os.sep)})
