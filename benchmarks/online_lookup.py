"""Online feature lookup latency: FeatureStore.get_online_features vs a raw read of the same keys.

Setup (not timed), once per online store: the seeded 20-feature driver repo of
benchmarks/_feature_data.py in a temporary MLOPS_HOME, landed and applied as in the training-set
benchmark, then `FeastHook().materialize_new()` (the feature DAG's materialize task).

- SQLite (embedded default, `MLOPS_HOME/feast/online.db`)
- Redis `redis://127.0.0.1:6379/14` (db 14 is flushed before and after; no other db is touched)

Per store and batch size (1 and 100 entities per request), `--requests` requests after `--warmup`
untimed ones, each request timed twice back to back in alternating order:
- feast: `store.get_online_features(features=<service bench_v1: 3 views, 20 features>,
  entity_rows=[{"driver_id": id}, ...]).to_dict()` — what a prediction server calls;
- raw:   SQLite — the store's own primary-key query, `SELECT entity_key, feature_name, value, event_ts
  FROM <view table> WHERE entity_key IN (...)`, once per view (3 queries), fetchall, no decoding;
  Redis  — `HGETALL` per entity key (pipelined for 100 keys: one round trip, as Feast's HMGETs are).
  Entity keys are serialized beforehand (Feast serializes them inside its call).
Each case stops after `--max-seconds` even if not all requests ran (the table shows the count).
Correctness: Feast's values for every entity equal the newest offline row per entity (exact), and the
raw reads return every expected field; else exit 1.

    .venv/bin/python benchmarks/online_lookup.py [--requests 1000] [--warmup 100] [--stores sqlite,redis]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _feature_data import (
    ENTITY_KEY,
    SERVICE,
    TS,
    VIEWS,
    DataConfig,
    load_note,
    machine_note,
    setup_state,
)

REDIS_URL = "redis://127.0.0.1:6379/14"
PROJECT = "mlops"


def entity_key_bytes(ids: np.ndarray) -> dict[int, bytes]:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return {int(i): serialize_entity_key(EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(int64_val=int(i))]),
                                         entity_key_serialization_version=3) for i in ids}


def prepare(store_name: str, work: Path, cfg: DataConfig) -> tuple[Any, dict[str, pd.DataFrame], Any]:
    """Repo + offline data + apply + materialize; returns (FeatureStore, offline tables, raw reader maker)."""
    online = REDIS_URL if store_name == "redis" else None
    if online:
        _redis().flushdb()
    tables = setup_state(work, cfg, online)
    from airflow_mlops.hooks.feast import FeastHook

    hook = FeastHook()
    hook.materialize_new()
    return hook.get_store(), tables, hook.settings


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)


def raw_reader(store_name: str, settings: Any, keys: dict[int, bytes]) -> Callable[[list[int]], list]:
    if store_name == "redis":
        client = _redis()
        suffix = PROJECT.encode()

        def redis_read(ids: list[int]) -> list:
            if len(ids) == 1:
                return [client.hgetall(keys[ids[0]] + suffix)]
            with client.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.hgetall(keys[i] + suffix)
                return pipe.execute()

        return redis_read
    from airflow_mlops.hooks.feast import sqlite_online_path

    con = sqlite3.connect(str(sqlite_online_path(settings.online_store)))
    tables = [f"{PROJECT}_{v.name}" for v in VIEWS]

    def sqlite_read(ids: list[int]) -> list:
        params = [keys[i] for i in ids]
        marks = ",".join("?" * len(ids))
        return [con.execute(f"SELECT entity_key, feature_name, value, event_ts FROM {t} WHERE entity_key IN "
                            f"({marks}) ORDER BY entity_key", params).fetchall() for t in tables]

    return sqlite_read


def feast_reader(store: Any) -> Callable[[list[int]], dict]:
    service = store.get_feature_service(SERVICE)

    def read(ids: list[int]) -> dict:
        return store.get_online_features(features=service, entity_rows=[{ENTITY_KEY: i} for i in ids]).to_dict()

    return read


def check(store_name: str, feast: Callable, raw: Callable, tables: dict[str, pd.DataFrame], ids: np.ndarray) -> int:
    """Every entity: Feast == newest offline row (exact); raw returns all fields. Returns values checked."""
    expected = {}
    for v in VIEWS:
        order = [TS, "created"] if v.created else [TS]
        newest = tables[v.name].sort_values(order).groupby(ENTITY_KEY).tail(1).set_index(ENTITY_KEY)
        expected.update({f: newest[f] for f in v.features})
    bad, checked = [], 0
    for chunk in np.array_split(ids, max(1, len(ids) // 100)):
        batch = [int(i) for i in chunk]
        got = feast(batch)
        for feature, series in expected.items():
            want = series.reindex(batch).to_numpy(dtype="float64")
            have = np.array([np.nan if x is None else x for x in got[feature]], dtype="float64")
            same = (want == have) | (np.isnan(want) & np.isnan(have))
            checked += len(batch)
            if not same.all():
                bad.append(f"{feature}: {int((~same).sum())} of {len(batch)} differ")
        rows = raw(batch)
        fields = sum(len(r) for r in rows) if store_name == "redis" else sum(len(t) for t in rows)
        want_fields = len(batch) * (20 + len(VIEWS) if store_name == "redis" else 20)
        if fields != want_fields:
            bad.append(f"raw {store_name} read returned {fields} fields for {len(batch)} entities, want {want_fields}")
    if bad:
        print(f"MISMATCH ({store_name}):\n  " + "\n  ".join(bad[:10]), file=sys.stderr)
        sys.exit(1)
    return checked


def measure(feast: Callable, raw: Callable, plans: list[list[int]], warmup: int, max_s: float) -> dict[str, Any]:
    for ids in plans[:warmup]:
        feast(ids)
        raw(ids)
    times: dict[str, list[int]] = {"feast": [], "raw": []}
    deadline = time.monotonic() + max_s
    gc.collect()
    for n, ids in enumerate(plans[warmup:]):
        order = (("feast", feast), ("raw", raw)) if n % 2 == 0 else (("raw", raw), ("feast", feast))
        for name, fn in order:
            started = time.perf_counter_ns()
            fn(ids)
            times[name].append(time.perf_counter_ns() - started)
        if time.monotonic() > deadline:
            break
    return {k: np.array(v) / 1e6 for k, v in times.items()}  # ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="timed requests per case")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--batch-sizes", default="1,100")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--entities", type=int, default=2000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-seconds", type=float, default=90.0, help="time cap per case")
    args = parser.parse_args()
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("airflow_mlops").setLevel(logging.WARNING)
    cfg = DataConfig(entities=args.entities, days=args.days, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    rows, notes = [], []
    before = load_note()
    root = Path(tempfile.mkdtemp(prefix="mlops-bench-online-"))
    try:
        for store_name in args.stores.split(","):
            store, tables, settings = prepare(store_name, root / store_name, cfg)
            warnings.simplefilter("ignore")  # feast's import resets the DeprecationWarning filter
            keys = entity_key_bytes(cfg.ids)
            feast, raw = feast_reader(store), raw_reader(store_name, settings, keys)
            checked = check(store_name, feast, raw, tables, cfg.ids)
            notes.append(f"- {store_name}: {checked:,} feature values (all {cfg.entities} entities x 20) equal the "
                         f"newest offline row, before and after the timed requests; raw reads return every field")
            for size in (int(s) for s in args.batch_sizes.split(",")):
                plans = [[int(i) for i in rng.choice(cfg.ids, size, replace=False)]
                         for _ in range(args.warmup + args.requests)]
                ms = measure(feast, raw, plans, args.warmup, args.max_seconds)
                rows.append((store_name, size, ms))
                print(f"  {store_name} x{size}: {len(ms['feast'])} requests", file=sys.stderr)
            check(store_name, feast, raw, tables, cfg.ids)  # the store was not changed under us meanwhile
    finally:
        if "redis" in args.stores:
            _redis().flushdb()
        shutil.rmtree(root, ignore_errors=True)
    report(rows, notes, args, cfg, before)


def report(rows: list, notes: list[str], args: argparse.Namespace, cfg: DataConfig, before: str) -> None:
    print(f"\nMachine: {machine_note()}; {before} at start, {load_note()} at end. {cfg.entities} entities, "
          f"20 features in 3 views (feature service {SERVICE}); {args.warmup} warm-up requests excluded; "
          f"latency in ms, per request; percentiles by linear interpolation.\n")
    print("| store | entities/request | requests | feast p50 | feast p99 | raw p50 | raw p99 | p50 ratio | "
          "p99 ratio |\n|---|---|---|---|---|---|---|---|---|")
    for store_name, size, ms in rows:
        f50, f99 = np.percentile(ms["feast"], [50, 99])
        r50, r99 = np.percentile(ms["raw"], [50, 99])
        print(f"| {store_name} | {size} | {len(ms['feast'])} | {f50:.3f} | {f99:.3f} | {r50:.3f} | {r99:.3f} | "
              f"{f50 / r50:.1f}x | {f99 / r99:.1f}x |")
    print("\nCorrectness:\n\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
