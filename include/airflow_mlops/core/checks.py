"""`airflow-mlops check`: specs and the Feast repo validated together, every problem reported at once.

The data side (spec columns vs the landed dataset or its suite, suite labels vs the leakage rule,
`training.lookback_days` vs what evaluation needs) is `core.dataset_checks`.

Unlike `spec.py` this module may import sklearn and feast (lazily): it runs from the CLI and CI,
never while a DAG file is parsed.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from airflow_mlops import config
from airflow_mlops.core.dataset_checks import dataset_problems
from airflow_mlops.core.feature_repo import parse_feature_repo
from airflow_mlops.core.spec import ModelSpec, parse_spec, spec_problems
from airflow_mlops.exceptions import FeatureRepoError

log = logging.getLogger(__name__)


@dataclass
class RepoIndex:
    """What the Feast repo defines, by name."""

    services: dict[str, list[str]] = field(default_factory=dict)  # service -> feature views
    service_features: dict[str, list[str]] = field(default_factory=dict)  # service -> feature (column) names
    views: dict[str, list[str]] = field(default_factory=dict)  # view -> join keys
    sources: dict[str, str] = field(default_factory=dict)  # view -> batch source path (offline parquet glob)
    problems: list[str] = field(default_factory=list)


def index_feature_repo(repo: Path) -> RepoIndex:
    """Parse the repo's definitions with the shared parser (core.feature_repo), as FeastHook does."""
    index = RepoIndex()
    if not (repo / "feature_store.yaml").is_file():
        index.problems.append(f"{repo}: not a Feast repo (no feature_store.yaml); set MLOPS_FEATURE_REPO")
        return index
    try:
        contents = parse_feature_repo(repo)
    except FeatureRepoError as exc:  # the definitions raised or are unusable: report it, don't crash
        index.problems.append(str(exc))
        return index
    entity_keys = {e.name: [e.join_key] for e in contents.entities}
    for view in contents.feature_views:
        index.views[view.name] = [k for ent in view.entities for k in entity_keys.get(ent, [ent])]
        index.sources[view.name] = str(getattr(view.batch_source, "path", "") or "")
    for service in contents.feature_services:
        index.services[service.name] = [p.name for p in service.feature_view_projections]
        index.service_features[service.name] = [f.name for p in service.feature_view_projections for f in p.features]
    return index


def spec_vs_repo(spec: ModelSpec, index: RepoIndex) -> list[str]:
    where = spec.source_file
    feats = spec.features
    if feats.feature_service not in index.services:
        known = ", ".join(sorted(index.services)) or "none"
        return [f"{where}: features.feature_service: {feats.feature_service!r} is not defined in the Feast repo; "
                f"defined services: {known}"]
    problems = []
    views = index.services[feats.feature_service]
    if sorted(views) != sorted(feats.feature_views):
        problems.append(f"{where}: features.feature_views: got {list(feats.feature_views)}; service "
                        f"{feats.feature_service!r} uses {sorted(views)} — list exactly those")
    keys = {k for v in views for k in index.views.get(v, [])}
    missing = sorted(keys - set(feats.entity_keys))
    if missing:
        problems.append(f"{where}: features.entity_keys: got {list(feats.entity_keys)}; the service's views join on "
                        f"{sorted(keys)} — add {missing}")
    return problems


def evaluation_column_problems(spec: ModelSpec, index: RepoIndex) -> list[str]:
    """Fairness group and slice columns that will not be on the held-out rows, and attributes that a feature of the
    service shadows: both known only with the Feast repo (the spec alone cannot tell a feature from a typo)."""
    feats, where = spec.features, spec.source_file
    features = index.service_features.get(feats.feature_service)
    if features is None:  # an unknown service is reported by spec_vs_repo
        return []
    problems = []
    shadowed = [c for c in feats.entity_df.attributes if c in features]
    if shadowed:
        problems.append(f"{where}: features.entity_df.attributes: {shadowed} are also features of service "
                        f"{feats.feature_service!r}; the training set would hold two columns of that name. Use the "
                        "feature (remove it from attributes) or rename the label-table column")
    known = {*features, *feats.entity_keys, *feats.entity_df.request_features, *feats.entity_df.attributes}
    fairness = spec.evaluation.fairness
    named = [("evaluation.fairness.groups", list(fairness.groups) if fairness else []),
             ("evaluation.slices", [s.column for s in spec.evaluation.slices])]
    for field_name, columns in named:
        unknown = [c for c in columns if c not in known]
        if unknown:
            problems.append(
                f"{where}: {field_name}: {unknown} are not columns of the training set (features of "
                f"{feats.feature_service!r}: {sorted(features)}; entity keys, request features and attributes: "
                f"{sorted(known - set(features))}). A label-table column the model must not use as an input (a "
                "protected attribute) goes in features.entity_df.attributes; otherwise fix the name")
    return problems


def estimator_problems(spec: ModelSpec) -> list[str]:
    from airflow_mlops.core.training import EXAMPLES, check_estimator_kind
    from airflow_mlops.exceptions import TrainingFailed

    path = spec.training.estimator
    module_name, _, cls_name = path.rpartition(".")
    where = f"{spec.source_file}: training.estimator"
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError) as exc:
        return [f"{where}: {path!r} cannot be imported ({exc}); use an installed class such as "
                f"{EXAMPLES[spec.task]}"]
    if not hasattr(cls, "fit"):
        return [f"{where}: {path!r} is not an estimator (it has no fit)"]
    try:
        estimator = cls(**spec.training.params)
    except TypeError as exc:
        return [f"{spec.source_file}: training.params: rejected by {cls_name}: {exc}"]
    try:
        check_estimator_kind(estimator, path, spec.task, spec.training.params)
    except TrainingFailed as exc:
        return [f"{spec.source_file}: {exc} (task {spec.task}: {spec.task_source})"]
    if spec.training.search is not None:
        from airflow_mlops.core.search import check_space
        from airflow_mlops.exceptions import TrainingFailed

        try:
            check_space(cls, spec.training.search.space, path)
        except TrainingFailed as exc:
            return [f"{spec.source_file}: {exc}"]
    return []


def threshold_problems(spec: ModelSpec) -> list[str]:
    """A threshold that bounds a metric on the side that never refuses a worse model (a `min` alone on rmse)."""
    from airflow_mlops.core.tasks import LOWER_IS_BETTER

    problems = []
    for metric, bounds in spec.evaluation.thresholds.items():
        lower_better = metric in LOWER_IS_BETTER
        only = "min" if bounds.min is not None and bounds.max is None else (
            "max" if bounds.max is not None and bounds.min is None else None)
        if only == ("min" if lower_better else "max"):
            wanted = "max" if lower_better else "min"
            problems.append(
                f"{spec.source_file}: evaluation.thresholds.{metric}: only `{only}` is set, but {metric} is "
                f"{'lower' if lower_better else 'higher'}-is-better, so a worse model passes; set `{wanted}` "
                f"(e.g. {metric}: {{{wanted}: ...}})")
    return problems


def describe_tasks(models: Path | None = None) -> list[str]:
    """One line per valid spec: its task and how it was decided (printed by `airflow-mlops check`)."""
    folder = models or config.models_dir()
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []
    lines = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        if not spec_problems(text, str(path)):
            spec = parse_spec(text, str(path))
            lines.append(f"{path}: {spec.name}: task {spec.task} ({spec.task_source}); primary metric "
                         f"{spec.evaluation.primary_metric}")
    return lines


def suite_problems(spec: ModelSpec) -> list[str]:
    from airflow_mlops.core.suites import suite_path

    suite = spec.validation.suite
    if suite and not suite_path(suite).is_file():
        return [f"{spec.source_file}: validation.suite: {suite!r} has no file {suite_path(suite)}; "
                "create it (airflow-mlops suite --dataset ... --from ...) or remove the field"]
    return []


def check_project(models: Path | None = None, repo: Path | None = None, deep: bool = True) -> list[str]:
    """Every problem across all specs and the feature repo; empty when consistent."""
    folder = models or config.models_dir()
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []
    if not files:
        return [f"{folder}: no model specs (*.yaml); add one per model (README: Add your own model)"]
    problems: list[str] = []
    specs = []
    for path in files:
        found = spec_problems(path.read_text(encoding="utf-8"), str(path))
        problems.extend(found)
        if not found:
            specs.append(parse_spec(path.read_text(encoding="utf-8"), str(path)))
    if not deep:
        return problems
    index = index_feature_repo(repo or config.feature_repo_dir())
    problems.extend(index.problems)
    for spec in specs:
        problems.extend(estimator_problems(spec))
        problems.extend(threshold_problems(spec))
        problems.extend(suite_problems(spec))
        if not index.problems:
            problems.extend(spec_vs_repo(spec, index))
            problems.extend(evaluation_column_problems(spec, index))
    sources = None if index.problems else list(index.sources.values())
    problems.extend(dataset_problems(specs, feature_sources=sources))  # core.dataset_checks
    return problems
