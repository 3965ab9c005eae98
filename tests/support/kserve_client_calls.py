"""The real kserve Python client against a running serving app; run with .venv-kserve's python.

kserve cannot be installed beside Airflow (it pins psutil<6; see the Makefile), so the V2 parity
test runs this script in that environment as a separate client process, like a user's own client,
and asserts on what it prints: `RESULT {json}`, one entry per call, each {"ok": ...} with what the
client returned, or {"status", "error"} with the HTTP status and the server's error text.

usage: kserve_client_calls.py URL MODEL FEATURES_JSON   (FEATURES_JSON: {"column": value, ...} of one row)
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


def inputs(features: dict[str, float], binary: bool) -> list[InferInput]:
    tensors = []
    for name, value in features.items():
        tensor = InferInput(name=name, shape=[2], datatype="FP64")
        tensor.set_data_from_numpy(np.array([value, value], dtype=np.float64), binary_data=binary)
        tensors.append(tensor)
    return tensors


async def call(coro: Any) -> dict[str, Any]:
    try:
        answer = await coro
    except httpx.HTTPStatusError as exc:
        return {"status": exc.response.status_code, "error": str(exc)}
    if hasattr(answer, "outputs"):
        output = answer.outputs[0]
        return {"ok": {"model_name": answer.model_name, "id": answer.id, "output": output.name,
                       "datatype": output.datatype, "shape": list(output.shape),
                       "data": [float(v) for v in output.as_numpy().ravel()], "parameters": answer.parameters}}
    return {"ok": answer}


async def main(url: str, model: str, features: dict[str, float]) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        return {
            "server_live": await call(client.is_server_live(url)),
            "server_ready": await call(client.is_server_ready(url)),
            "model_ready": await call(client.is_model_ready(url, model)),
            "json": await call(client.infer(url, InferRequest(model, inputs(features, False), request_id="kserve-json"),
                                            model_name=model)),
            "binary": await call(client.infer(
                url, InferRequest(model, inputs(features, True), request_id="kserve-binary",
                                  request_outputs=[RequestedOutput("predict_proba", {"binary_data": True})]),
                model_name=model)),
            "other_name": await call(client.infer(url, InferRequest("other_model", inputs(features, False)),
                                                  model_name=model)),
            "unknown_output": await call(client.infer(
                url, InferRequest(model, inputs(features, False), request_outputs=[RequestedOutput("label")]),
                model_name=model)),
        }
    finally:
        await client.close()


if __name__ == "__main__":
    print("RESULT " + json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))))
