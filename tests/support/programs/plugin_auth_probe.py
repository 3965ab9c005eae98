"""The `PROBE` program of tests/integration/test_plugin_auth.py: what loading Airflow's plugins loads.

Run as `python plugin_auth_probe.py` with the Airflow environment the test builds; prints the loaded plugin
names, the plugin import errors and which heavy modules got imported as one `RESULT <json>` line.
"""

import json
import sys

from airflow import plugins_manager

plugins_manager.ensure_plugins_loaded()
print("RESULT " + json.dumps({"names": [p.name for p in plugins_manager._get_plugins()[0]],
                              "errors": plugins_manager.get_import_errors(),
                              "heavy": sorted(m for m in ("fastapi", "airflow_mlops.plugin.app") if m in sys.modules)}))
