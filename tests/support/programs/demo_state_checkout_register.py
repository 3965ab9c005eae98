"""The `REGISTER` program of tests/integration/test_demo_state_checkout.py: a registration by another process.

Run as `python demo_state_checkout_register.py <registry uri> <source>`: registers a version of model `m`
(creating the model first if needed) in the MLflow registry at <registry uri>.
"""

import sys

from mlflow import MlflowClient

uri = sys.argv[1]
client = MlflowClient(uri, uri)
if not client.search_registered_models("name = 'm'"):
    client.create_registered_model("m")
client.create_model_version("m", sys.argv[2])
