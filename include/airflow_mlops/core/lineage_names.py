"""OpenLineage dataset names: one (namespace, name) scheme for every store the loop reads or writes.

Plain Python (no Airflow, no OpenLineage import): operators turn these pairs into OpenLineage datasets
(`openlineage/datasets.py`). The same thing must get the same pair in every task, or
Marquez/DataHub see two datasets and the graph breaks; so each kind of dataset is named here once.
The scheme (also in docs/lineage.md):

| dataset | namespace | name |
|---|---|---|
| landing file, offline partition, training set, report, predictions | `file` | absolute path |
| feature view | `feast://<project>` | `<view>` |
| logged model (MLflow 3) | `mlflow://<registry uri, no credentials>` | `logged_models/<m-id>` |
| registered model version | `mlflow://<registry uri, no credentials>` | `models/<name>/versions/<v>` |
| deployment | `serving://<host:port>` or `kubernetes://<namespace>` | `<model name>` |

Local files follow the OpenLineage naming spec (`file:///path` -> namespace `file`, name `/path`). A
partition is the directory `<offline>/<dataset>/event_date=<day>` (the unit Feast and duckdb read),
not each batch file. MLflow has no spec entry: the registry URI keeps registries apart, and user,
password and query (which may carry a token) are dropped so no credential reaches a lineage backend.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

FILE_NAMESPACE = "file"

Name = tuple[str, str]


def file_name(path: str | Path) -> Name:
    """A local file or directory: namespace `file`, the absolute path (symlinks not resolved) as name."""
    return FILE_NAMESPACE, str(Path(path).absolute())


def partition_names(offline_dir: str | Path, files: Iterable[str | Path]) -> list[Name]:
    """The partition directories holding `files` (relative to `offline_dir`, or absolute), each once."""
    root = Path(offline_dir)
    return [file_name(d) for d in sorted({str((root / f).parent) for f in files})]


def feature_view_name(project: str, view: str) -> Name:
    return f"feast://{project}", view


def without_credentials(uri: str) -> str:
    """`uri` without user, password, query and fragment; `sqlite:////a/mlflow.db` stays as it is.

    Done on the text (not urlsplit/urlunsplit, which turns `sqlite:////a` into `sqlite://a`).
    """
    bare = uri.split("#", 1)[0].split("?", 1)[0]
    scheme, sep, rest = bare.partition("://")
    if not sep:
        return bare
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rsplit('@', 1)[-1]}{slash}{path}"


def mlflow_namespace(registry_uri: str) -> str:
    return f"mlflow://{without_credentials(registry_uri)}"


def logged_model_name(registry_uri: str, model_uri: str) -> Name:
    """A training run's model: `models:/m-<id>` (MLflow 3) -> `logged_models/m-<id>`; other URIs as they are."""
    rest = model_uri.removeprefix("models:/")
    name = f"logged_models/{rest}" if rest != model_uri and rest.startswith("m-") else model_uri
    return mlflow_namespace(registry_uri), name


def model_version_name(registry_uri: str, model: str, version: str | int) -> Name:
    return mlflow_namespace(registry_uri), f"models/{model}/versions/{version}"


def serving_name(url: str, model: str) -> Name:
    """The local serving app at `url` (host:port only: its path and credentials are no identity)."""
    parts = urlsplit(url)
    return f"serving://{parts.netloc.rsplit('@', 1)[-1] or url}", model


def kubernetes_name(namespace: str, model: str) -> Name:
    return f"kubernetes://{namespace}", model
