"""Loopback load test of ``tensoregg serve``: concurrent clients, latency and throughput, with and
without dynamic batching, and the server's /metrics counters against the requests sent.

    python bench/serve.py [--clients 8] [--requests 2000] [--max-batch 8] [--max-delay-ms 2] [--json out]

The model is examples/tinycnn.onnx: compiled for batch 1 (served without batching) and, with its
batch dimension made symbolic (``tensoregg.testing_models.symbolic_batch``), for batch B (served
with ``--max-batch B``). Each mode starts the server in its own process on 127.0.0.1 (a free port),
then ``--clients`` threads, each with one keep-alive connection, send ``--requests`` JSON predict
requests in all (one 1x3x32x32 input each, seeded random), timing each from send to the full answer.
A request is an error unless it is answered 200 with the output batch-1 reference's values (1e-5).
Afterwards /metrics must count exactly the requests sent (``tensoregg_requests_total``); the server
is stopped with SIGTERM and must exit after answering what it has (uvicorn re-raises the signal after
its graceful shutdown: exit status -15). Exits 1 on any error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tinycnn.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(artifact: Path, port: int, *options: str) -> subprocess.Popen[bytes]:
    """``tensoregg serve`` in a process of its own, once /healthz answers."""
    proc = subprocess.Popen([sys.executable, "-m", "tensoregg.cli", "serve", str(artifact), "--name", "m",
                             "--port", str(port), *options], cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def client(port: int, bodies: list[bytes], want: np.ndarray, latencies: list[float],
           errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for body in bodies:
        start = time.perf_counter()
        try:
            conn.request("POST", "/v1/models/m:predict", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            latencies.append(time.perf_counter() - start)
            if response.status != 200:
                errors.append(f"{response.status}: {data[:200]!r}")
            elif not np.allclose(json.loads(data)["outputs"][0], want, atol=1e-5):
                errors.append("wrong output")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def scrape(port: int) -> tuple[float, float]:
    """From /metrics: the sum of ``tensoregg_requests_total`` over statuses, and the mean rows per
    model run (``tensoregg_batch_rows``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    values: dict[str, float] = {}
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith(("tensoregg_requests_total{", "tensoregg_batch_rows_sum",
                            "tensoregg_batch_rows_count")):
            name = line.split("{")[0].split(" ")[0]
            values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    runs = values.get("tensoregg_batch_rows_count", 0.0)
    rows = values.get("tensoregg_batch_rows_sum", 0.0)
    return values.get("tensoregg_requests_total", 0.0), rows / max(runs, 1)


def load_test(artifact: Path, options: list[str], clients: int, requests: int, x: np.ndarray,
              want: np.ndarray) -> dict[str, Any]:
    port = free_port()
    proc = start_server(artifact, port, *options)
    body = json.dumps({"inputs": [x.tolist()]}).encode()
    latencies: list[float] = []
    errors: list[str] = []
    shares = [requests // clients + (k < requests % clients) for k in range(clients)]
    threads = [threading.Thread(target=client, args=(port, [body] * n, want, latencies, errors))
               for n in shares]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    counted, rows_per_run = scrape(port)
    proc.send_signal(signal.SIGTERM)
    exit_code = proc.wait(timeout=60)
    q = statistics.quantiles(latencies, n=100)
    return {"options": " ".join(options) or "(no batching)", "requests": requests, "clients": clients,
            "errors": len(errors), "first_errors": errors[:3], "p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3,
            "throughput_rps": requests / seconds, "metrics_requests_total": counted,
            "metrics_ok": counted == requests, "rows_per_run": rows_per_run, "exit_code": exit_code}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per model run (default 1: the server's event loop needs a core too)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("TENSOREGG_CACHE_DIR", tempfile.mkdtemp(prefix="tensoregg-bench-"))
    import tensoregg
    from tensoregg.testing_models import symbolic_batch

    tmp = Path(tempfile.mkdtemp(prefix="tensoregg-serve-"))
    single = tensoregg.compile(str(EXAMPLE)).save(tmp / "tinycnn.tegg")
    batched = tensoregg.compile(symbolic_batch(str(EXAMPLE)), input_shapes={"x": [args.max_batch, 3, 32, 32]})
    batched.save(tmp / f"tinycnn_b{args.max_batch}.tegg")
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = tensoregg.load(single).run(x)[0]
    print(f"{args.clients} clients, {args.requests} JSON requests of 1x3x32x32 each, tinycnn, loopback; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    threads = ["--threads", str(args.threads)]
    rows = [load_test(single, threads, args.clients, args.requests, x, want),
            load_test(tmp / f"tinycnn_b{args.max_batch}.tegg",
                      [*threads, "--max-batch", str(args.max_batch),
                       "--max-delay-ms", str(args.max_delay_ms)],
                      args.clients, args.requests, x, want)]
    for r in rows:
        print(f"{r['options']:45s} errors {r['errors']}  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
              f"{r['throughput_rps']:.0f} req/s  {r['rows_per_run']:.1f} rows/run  "
              f"/metrics requests {r['metrics_requests_total']:.0f} "
              f"({'=' if r['metrics_ok'] else '!='} sent)  exit {r['exit_code']}"
              + (f"  first errors: {r['first_errors']}" if r["errors"] else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    good = all(r["errors"] == 0 and r["metrics_ok"] and r["exit_code"] in (0, -signal.SIGTERM) for r in rows)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
