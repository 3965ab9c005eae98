"""The request path of /predict, /invocations, V2 infer and /admin/deploy, as raw ASGI endpoints.

Per single-row /predict, FastAPI's own work (a Request object, dependency solving, the endpoint
wrapper, a Response object) was ~15 % of the serving process' CPU (py-spy, docs/benchmarks.md).
These routes use none of it: each reads the body from `receive` under the size limit, runs the
`Server` handler (on the event loop for small requests that cannot wait on the network, else in a
worker thread: `Server.inline`), counts the request in the metrics and sends one JSON response.
They are mounted as Starlette `Route`s of the FastAPI app, so routing, 404/405, the middleware stack
and the lifespan are the app's own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from airflow_mlops.serving.explain import PredictAsked
from airflow_mlops.serving.kserve_wire import V2Target
from airflow_mlops.serving.protocols import JSON, MAX_BODY_BYTES, RequestError
from airflow_mlops.serving.replies import Reply, error_reply

if TYPE_CHECKING:
    from airflow_mlops.serving.app import Server

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_JSON_TYPE = (b"content-type", JSON.encode())


class ScoringEndpoint:
    """One POST route: `arg(scope, headers)` gives the handler's last argument (request id, V2 target, auth)."""

    def __init__(self, server: Server, protocol: str, handler: Callable[..., Reply],
                 arg: Callable[[Scope, dict[bytes, bytes]], Any]) -> None:
        self.server, self.protocol, self.handler, self.arg = server, protocol, handler, arg

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = dict(scope["headers"])  # ASGI header names are lower-case bytes
        try:
            body = await read_body(receive, headers.get(b"content-length", b""))
        except RequestError as exc:
            reply = error_reply(self.protocol, exc.status, exc.message, exc.field)
        else:
            content_type = _text(headers.get(b"content-type"))
            args = (self.protocol, self.handler, body, content_type, self.arg(scope, headers))
            server = self.server
            reply = server.guarded(*args) if server.inline(self.protocol, body) else await run_in_threadpool(
                server.guarded, *args)
        if self.protocol != "admin":
            self.server.observe(reply, started)
        await send_reply(send, reply)


async def read_body(receive: Receive, declared: bytes, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused with 413 as soon as it (or its Content-Length) passes `limit`: never buffer a huge one."""
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, "body", f"body: Content-Length {declared.decode()} is above the limit of {limit} "
                                        "bytes; split the request")
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError(400, "body", "body: the client disconnected before sending it whole")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "body", f"body: above the limit of {limit} bytes; split the request")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_reply(send: Send, reply: Reply) -> None:
    data = reply.encoded()
    content_type = _JSON_TYPE if reply.media_type == JSON else (b"content-type", reply.media_type.encode("latin-1"))
    headers = [content_type, (b"content-length", str(len(data)).encode()),
               *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items())]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def scoring_routes(server: Server) -> list[Route]:
    """The POST routes of the serving app over `server`."""
    def header(name: bytes) -> Callable[[Scope, dict[bytes, bytes]], str | None]:
        return lambda _scope, headers: _text(headers.get(name))

    def v2_target(scope: Scope, headers: dict[bytes, bytes]) -> V2Target:
        params = scope["path_params"]
        return V2Target(params["name"], params.get("version"), _text(headers.get(b"inference-header-content-length")))

    def predict_asked(scope: Scope, headers: dict[bytes, bytes]) -> PredictAsked:
        return PredictAsked(_text(headers.get(b"x-request-id")), scope.get("query_string", b""))

    endpoints = {
        "/predict": ScoringEndpoint(server, "predict", server.predict, predict_asked),
        "/invocations": ScoringEndpoint(server, "mlflow", server.invocations, header(b"x-request-id")),
        "/v2/models/{name}/infer": ScoringEndpoint(server, "v2", server.infer, v2_target),
        "/v2/models/{name}/versions/{version}/infer": ScoringEndpoint(server, "v2", server.infer, v2_target),
        "/admin/deploy": ScoringEndpoint(server, "admin", server.deploy, header(b"authorization")),
    }
    return [Route(path, endpoint, methods=["POST"]) for path, endpoint in endpoints.items()]
