"""DAG parse time: our DAG file vs a trivial baseline DAG, side by side, in fresh interpreters.

For each case a new Python process imports airflow.sdk (the cost every DAG file pays), then times
executing the DAG file only, the way the dag-processor does. Reported as median seconds and as a
ratio to the baseline. Also checks that no heavy library was imported while parsing.

    .venv/bin/python benchmarks/dag_parse_time.py [--repeat 5] [--specs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
HEAVY = ["pandas", "numpy", "sklearn", "mlflow", "feast", "evidently", "great_expectations", "pyarrow", "duckdb"]
BASELINE_DAG = '''
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG("baseline", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b") >> EmptyOperator(task_id="c")
'''
PROBE = '''
import json, runpy, sys, time
import airflow.sdk  # shared by every DAG file; not part of what we measure
started = time.perf_counter()
namespace = runpy.run_path(sys.argv[1])
elapsed = time.perf_counter() - started
from airflow.sdk import DAG
dags = [v for v in namespace.values() if isinstance(v, DAG)]
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"seconds": elapsed, "dags": len(dags), "heavy": heavy}))
'''


def measure(dag_file: Path, env: dict[str, str], repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", PROBE, str(dag_file), json.dumps(HEAVY)], env=env,
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    median = statistics.median(r["seconds"] for r in runs)
    return {"median_s": median, "dags": runs[0]["dags"], "heavy": runs[0]["heavy"]}


def generated_specs(folder: Path, count: int) -> Path:
    """`count` copies of the demo spec under new names: a large team's model catalogue."""
    import yaml

    template = yaml.safe_load((PROJECT / "include" / "models" / "ride_completion.yaml").read_text())
    for i in range(count):
        name = f"model_{i:03d}"
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({**template, "name": name}))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--specs", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-"))
    env = {**os.environ, "MLOPS_HOME": str(work / "home"), "AIRFLOW_HOME": str(work / "airflow"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    baseline = work / "baseline_dag.py"
    baseline.write_text(BASELINE_DAG)
    cases = {"baseline (3 EmptyOperators)": (baseline, env)}
    for dag_file in sorted((PROJECT / "dags").glob("*.py")):
        cases[f"dags/{dag_file.name} (shipped specs)"] = (dag_file, env)
        many = generated_specs(Path(tempfile.mkdtemp(dir=work)), args.specs)
        cases[f"dags/{dag_file.name} ({args.specs} specs)"] = (dag_file, {**env, "MLOPS_MODELS_DIR": str(many)})
    results = {name: measure(path, case_env, args.repeat) for name, (path, case_env) in cases.items()}
    base = results["baseline (3 EmptyOperators)"]["median_s"]
    print("| case | DAGs | median parse (s) | ratio to baseline | heavy imports |\n|---|---|---|---|---|")
    for name, r in results.items():
        heavy = ", ".join(r["heavy"]) or "none"
        print(f"| {name} | {r['dags']} | {r['median_s']:.3f} | {r['median_s'] / base:.1f}x | {heavy} |")
    shutil.rmtree(work, ignore_errors=True)
    if any(r["heavy"] for r in results.values()):
        sys.exit("a DAG file imported a heavy library at parse time")


if __name__ == "__main__":
    main()
