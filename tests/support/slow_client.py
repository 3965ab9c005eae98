"""A real MlflowClient whose registered-model tag writes are slow, to race the registry lease.

`request` seconds pass before a `set_registered_model_tag` reaches the store, `reply` seconds after it
landed (the caller learns late). `looked` is set once a read of the registered model completed after one of
this client's lease claims landed: the racer has seen the claims since its own.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from airflow_mlops.core import lease


class SlowClient:
    def __init__(self, client: Any, request: float = 0.0, reply: float = 0.0) -> None:
        self._client = client
        self.request, self.reply = request, reply
        self.claimed = False
        self.looked = threading.Event()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name == "get_registered_model":
            return self._read(attr)
        if name == "set_registered_model_tag":
            return self._write(attr)
        return attr

    def _read(self, attr: Any) -> Any:
        def read(*args: Any, **kwargs: Any) -> Any:
            claimed = self.claimed
            result = attr(*args, **kwargs)
            if claimed:
                self.looked.set()
            return result
        return read

    def _write(self, attr: Any) -> Any:
        def write(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self.request)  # the request is on its way
            result = attr(*args, **kwargs)
            self.claimed = self.claimed or str(args[1]).startswith(lease.TAG_PREFIX)
            time.sleep(self.reply)  # it landed; the reply is on its way
            return result
        return write
