"""The `WORKER` program of tests/unit/test_serving_worker_metrics.py: a serving worker stand-in.

Run as `python serving_metrics_worker.py '[<requests>, [<version>, ...], <written>]'` with PROMETHEUS_MULTIPROC_DIR
set: a ServingMetrics counts that many requests (on the last version), each version swap and that many prediction
log records, beside another library's module-level counter; prints `{"pid", "multiprocess"}` as the last line.
Imports no Airflow (it runs under the unit layer).
"""

import json
import os
import sys

from prometheus_client import Counter

from airflow_mlops.serving.metrics import ServingMetrics

requests, versions, written = json.loads(sys.argv[1])
Counter("other_library_calls", "another library's module-level metric (Feast has some)").inc()
metrics = ServingMetrics("rides")
for _ in range(requests):
    metrics.observe(version=versions[-1], route="primary", status=200, seconds=0.002)
for version in versions:  # each swap, as the manager's watcher reports it
    metrics.set_versions(version, None)
count = [0]
metrics.track_written(lambda: count[0])
for _ in range(written):  # the prediction log's writer publishes after each batch
    count[0] += 1
    metrics.publish()
print(json.dumps({"pid": os.getpid(), "multiprocess": metrics.multiprocess_dir is not None}))
