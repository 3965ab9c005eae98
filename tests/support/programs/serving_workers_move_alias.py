"""The `MOVE_ALIAS` program of tests/integration/test_serving_workers.py.

Run in a child process through `TrainedDemo.run` (support/demo_state.py) on the checked-out demo state:
`serving_workers_move_alias.py <version>` points the `champion` alias of ride_completion at that version and
prints it as one `RESULT <json>` line.
"""

import json
import sys

from airflow_mlops.hooks.mlflow import MLflowHook

MLflowHook().get_conn().set_registered_model_alias("ride_completion", "champion", sys.argv[1])
print("RESULT " + json.dumps({"champion": sys.argv[1]}))
