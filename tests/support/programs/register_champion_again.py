"""The `REGISTER_V2` program of tests/integration/test_serving_v2_clients.py and test_serving_workers.py.

Run in a child process through `TrainedDemo.run` (support/demo_state.py) on the checked-out demo state: registers
the champion's (v1's) artifact again as v2 and prints both versions as one `RESULT <json>` line.
"""

import json

from airflow_mlops.hooks.mlflow import MLflowHook

hook = MLflowHook()
client = hook.get_conn()
with hook.activated():
    v1 = client.get_model_version_by_alias("ride_completion", "champion")
    assert v1.source is not None, v1  # a registered version has its source
    v2 = client.create_model_version("ride_completion", v1.source, run_id=v1.run_id)
print("RESULT " + json.dumps({"versions": [str(v1.version), str(v2.version)]}))
