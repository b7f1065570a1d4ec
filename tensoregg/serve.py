"""``tensoregg serve``: an HTTP model server for a saved artifact (Starlette on uvicorn).

Endpoints: ``POST /v1/models/NAME:predict`` with a JSON body ``{"inputs": [array, ...]}`` (positional)
or ``{"inputs": {"name": array}}`` (arrays as nested lists), answered ``{"outputs": [...]}``; or, for
a single-input model, a ``.npy`` body (Content-Type ``application/x-npy``) answered as ``.npy`` (one
output) or ``.npz`` (several: arr_0, arr_1..., ``application/x-npz``). ``GET /healthz``; ``GET
/metrics`` (Prometheus: requests by status, latency histogram, requests in flight, model load time,
rows per run).

Runs: ``workers`` runner tasks, each owning one loaded copy of the model (its own workspace and
thread team), take requests from one queue and run them on a thread, so up to ``workers`` runs are
in flight at once. Bad requests get a 4xx whose body is the tensoregg error text.

Dynamic batching (``max_batch`` B > 1): shapes are static, so the artifact must be compiled for
batch B (dimension 0 of every input and output is B, the batch axis). A request may then carry any
n <= B rows; a runner gathers queued requests until B rows or ``max_delay_ms`` after the first,
concatenates them along axis 0, pads with zeros up to B, runs once and hands each request its rows.
(The alternative, one module per batch size 1..B, would need B artifacts; padding needs one and
costs the unused rows' compute.) Without batching a request must match the model's shapes exactly.

uvicorn handles SIGTERM: it stops accepting connections and waits for in-flight requests to be
answered before the runners stop. The server loads the model through ``tensoregg.runtime`` only: no
compiler is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tensoregg.errors import InputError, TensoreggError
from tensoregg.runtime import Module, load
from tensoregg.runtime.signature import TensorSpec

NPY, NPZ = "application/x-npy", "application/x-npz"


@dataclass
class Pending:
    """One request waiting for a run: its inputs (with a leading batch axis of ``rows`` rows when
    batching) and the future its outputs go to."""

    inputs: list[np.ndarray]
    rows: int
    done: asyncio.Future[list[np.ndarray]] = field(repr=False)


class Metrics:
    """The server's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("tensoregg_requests", "predict requests answered, by HTTP status",
                                ["status"], registry=self.registry)
        self.latency = Histogram("tensoregg_request_seconds", "predict request latency (seconds)",
                                 registry=self.registry,
                                 buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5))
        self.in_flight = Gauge("tensoregg_requests_in_flight", "predict requests being answered",
                               registry=self.registry)
        self.load_seconds = Gauge("tensoregg_model_load_seconds", "seconds taken to load the model",
                                  registry=self.registry)
        self.batch_rows = Histogram("tensoregg_batch_rows", "request rows per model run",
                                    registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))


class ModelServer:
    """The model at ``artifact`` served under ``name`` (see the module docstring)."""

    def __init__(self, artifact: str | Path, *, name: str | None = None, workers: int = 1,
                 max_batch: int = 1, max_delay_ms: float = 0.0, threads: int | None = None) -> None:
        if workers < 1 or max_batch < 1 or max_delay_ms < 0:
            raise InputError("--workers and --max-batch must be >= 1, --max-delay-ms >= 0")
        self.name = name or Path(artifact).name.split(".")[0]
        self.metrics = Metrics()
        start = time.perf_counter()
        self.modules = [load(artifact) for _ in range(workers)]
        self.metrics.load_seconds.set(time.perf_counter() - start)
        module = self.modules[0]
        for m in self.modules:
            m.num_threads = threads or max(1, m.num_threads // workers)
        self.inputs, self.outputs = module.inputs, module.outputs
        self.max_batch, self.delay = max_batch, max_delay_ms / 1e3
        if max_batch > 1:
            off = [t.name for t in [*self.inputs, *self.outputs] if t.shape[:1] != (max_batch,)]
            if off:
                raise InputError(f"--max-batch {max_batch} needs a model compiled for batch {max_batch} "
                                 f"(dimension 0 of every input and output); {off} are not: compile it "
                                 f"with --input-shape NAME={max_batch},...")
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()

    # ---- requests -> arrays ---------------------------------------------------------------------

    def parse(self, body: bytes, content_type: str) -> list[np.ndarray]:
        """The inputs a request body holds, in the model's order; InputError saying what is wrong."""
        if content_type.startswith(NPY):
            if len(self.inputs) != 1:
                raise InputError(f"a .npy body holds one input; the model takes {len(self.inputs)} "
                                 f"{[t.name for t in self.inputs]}: send JSON")
            try:
                array = np.load(io.BytesIO(body), allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise InputError(f"the body is not a readable .npy array ({exc})") from exc
            return [self.check(self.inputs[0], array)]
        try:
            given = json.loads(body)["inputs"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError('the body must be JSON {"inputs": [array, ...]} or {"inputs": {"name": '
                             'array}}, or a .npy array with Content-Type application/x-npy') from exc
        names = [t.name for t in self.inputs]
        if isinstance(given, dict):
            unknown = sorted(set(given) - set(names))
            if unknown:
                raise InputError(f"unknown inputs {unknown}; inputs are {names}")
            given = [given.get(n) for n in names]
        if not isinstance(given, list) or len(given) != len(names) or any(v is None for v in given):
            raise InputError(f"the model takes {len(names)} inputs {names}")
        arrays = []
        for spec, value in zip(self.inputs, given):
            try:
                arrays.append(self.check(spec, np.asarray(value, dtype=spec.dtype)))
            except (ValueError, TypeError) as exc:
                raise InputError(f"input {spec.name!r}: not a {spec.dtype} array ({exc})") from exc
        return arrays

    def check(self, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
        """``array`` if it fits input ``spec``: its dtype, and its shape (with batching, 1 to B rows)."""
        if array.dtype != spec.dtype:
            raise InputError(f"input {spec.name!r}: dtype {array.dtype} does not match the model's "
                             f"{spec.dtype}")
        rows_ok = self.max_batch > 1 and array.ndim == len(spec.shape) and \
            1 <= array.shape[0] <= self.max_batch and array.shape[1:] == spec.shape[1:]
        if array.shape != spec.shape and not rows_ok:
            wanted = f"[n<={self.max_batch}, {', '.join(map(str, spec.shape[1:]))}]" if self.max_batch > 1 \
                else str(list(spec.shape))
            raise InputError(f"input {spec.name!r}: shape {list(array.shape)} does not match the model's "
                             f"{wanted}")
        return array

    async def predict(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        rows = inputs[0].shape[0] if self.max_batch > 1 else 1
        if self.max_batch > 1 and any(a.shape[0] != rows for a in inputs):
            raise InputError(f"inputs carry different numbers of rows {[a.shape[0] for a in inputs]}")
        done: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        await self.queue.put(Pending(inputs, rows, done))
        return await done

    # ---- runners --------------------------------------------------------------------------------

    async def runner(self, module: Module) -> None:
        """Take requests off the queue (a batch of them when batching) and run them on ``module``."""
        held: Pending | None = None  # the request that did not fit the last batch: first in the next
        while True:
            batch = [held or await self.queue.get()]
            held, rows = None, batch[0].rows
            deadline = time.monotonic() + self.delay
            while rows < self.max_batch:
                try:
                    nxt = self.queue.get_nowait() if not self.queue.empty() else \
                        await asyncio.wait_for(self.queue.get(), max(deadline - time.monotonic(), 0))
                except TimeoutError:
                    break
                if rows + nxt.rows > self.max_batch:
                    held = nxt
                    break
                batch.append(nxt)
                rows += nxt.rows
            self.metrics.batch_rows.observe(rows)
            try:
                outputs = await asyncio.to_thread(self.run, module, [p.inputs for p in batch], rows)
            except Exception as exc:  # handed to the requests, which answer for it
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(exc)
                continue
            start = 0
            for p in batch:
                if not p.done.done():
                    p.done.set_result([o[start:start + p.rows] for o in outputs] if self.max_batch > 1
                                      else outputs)
                start += p.rows

    def run(self, module: Module, requests: list[list[np.ndarray]], rows: int) -> list[np.ndarray]:
        """One run of ``module`` on ``requests`` (concatenated and padded to the batch when batching)."""
        if self.max_batch == 1:
            return module.run(*requests[0])
        feeds = []
        for k, spec in enumerate(self.inputs):
            batch = np.zeros(spec.shape, spec.dtype)
            batch[:rows] = np.concatenate([r[k] for r in requests])
            feeds.append(batch)
        return module.run(*feeds)

    # ---- the app --------------------------------------------------------------------------------

    def app(self) -> Starlette:
        """The ASGI application."""

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            tasks = [asyncio.create_task(self.runner(m)) for m in self.modules]
            yield
            for t in tasks:
                t.cancel()

        return Starlette(routes=[Route("/v1/models/{name}:predict", self.handle_predict, methods=["POST"]),
                                 Route("/healthz", self.handle_health),
                                 Route("/metrics", self.handle_metrics)], lifespan=lifespan)

    async def handle_predict(self, request: Request) -> Response:
        start = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            response = await self.answer(request)
        finally:
            self.metrics.in_flight.dec()
        self.metrics.requests.labels(str(response.status_code)).inc()
        self.metrics.latency.observe(time.perf_counter() - start)
        return response

    async def answer(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name != self.name:
            return error(404, f"no model {name!r}; this server serves {self.name!r}")
        content_type = request.headers.get("content-type", "application/json")
        try:
            inputs = self.parse(await request.body(), content_type)
            outputs = await self.predict(inputs)
        except TensoreggError as exc:
            return error(400, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # the model's failure, not the client's: said without a traceback
            return error(500, f"{type(exc).__name__}: {exc}")
        if content_type.startswith(NPY):
            buffer = io.BytesIO()
            if len(outputs) == 1:
                np.save(buffer, outputs[0], allow_pickle=False)
            else:
                np.savez(buffer, *outputs)
            return Response(buffer.getvalue(), media_type=NPY if len(outputs) == 1 else NPZ)
        return JSONResponse({"outputs": [o.tolist() for o in outputs]})

    async def handle_health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.name})

    async def handle_metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def serve(server: ModelServer, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Serve until SIGINT/SIGTERM (in-flight requests are answered first)."""
    import uvicorn

    uvicorn.run(server.app(), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)
