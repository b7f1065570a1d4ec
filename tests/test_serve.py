"""``tensoregg serve`` end to end on loopback: predict as JSON and .npy, 4xx with the error text,
/metrics counting the requests, dynamic batching, SIGTERM answering the request in flight."""

import http.client
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tensoregg
from tensoregg.testing_models import symbolic_batch

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "tinycnn.onnx")
X = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``tensoregg serve ARTIFACT OPTIONS`` in a subprocess, once /healthz answers."""

    def __init__(self, artifact, *options):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "tensoregg.cli", "serve", str(artifact), "--name",
                                      "m", "--port", str(self.port), *options],
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        self.proc.kill()
        raise AssertionError(f"the server did not start: {self.proc.communicate()[1]}")

    def request(self, method, path, body=None, content_type="application/json"):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body, {"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Content-Type")

    def predict(self, body, content_type="application/json", name="m"):
        return self.request("POST", f"/v1/models/{name}:predict", body, content_type)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    single = tensoregg.compile(EXAMPLE).save(tmp / "tinycnn.tegg")
    batched = tensoregg.compile(symbolic_batch(EXAMPLE), input_shapes={"x": [4, 3, 32, 32]})
    return single, batched.save(tmp / "tinycnn4.tegg"), tensoregg.load(single).run(X)[0]


def npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_predict_errors_and_metrics(artifacts):
    single, _, want = artifacts
    server = Server(single, "--workers", "2")
    try:
        status, body, _ = server.predict(json.dumps({"inputs": [X.tolist()]}))
        assert status == 200 and np.allclose(json.loads(body)["outputs"][0], want, atol=1e-6)
        status, body, _ = server.predict(json.dumps({"inputs": {"x": X.tolist()}}))
        assert status == 200 and np.allclose(json.loads(body)["outputs"][0], want, atol=1e-6)
        status, body, kind = server.predict(npy(X), "application/x-npy")
        assert status == 200 and kind == "application/x-npy"
        np.testing.assert_array_equal(np.load(io.BytesIO(body), allow_pickle=False), want)
        bad = [(json.dumps({"inputs": [[1.0, 2.0]]}), "application/json", "shape [2] does not match"),
               ("not json", "application/json", "must be JSON"),
               (json.dumps({"inputs": {"y": 1}}), "application/json", "unknown inputs ['y']"),
               (b"\x93NUMPY garbage", "application/x-npy", "not a readable .npy"),
               (npy(X.astype(np.int64)), "application/x-npy", "dtype int64 does not match")]
        for payload, kind, text in bad:
            status, body, _ = server.predict(payload, kind)
            assert status == 400 and text in json.loads(body)["error"], body
            assert b"Traceback" not in body
        status, body, _ = server.predict(json.dumps({"inputs": [X.tolist()]}), name="other")
        assert status == 404 and "'m'" in json.loads(body)["error"]
        status, text, _ = server.request("GET", "/metrics")
        counts = {line.split()[0]: float(line.split()[1]) for line in text.decode().splitlines()
                  if line.startswith(("tensoregg_requests_total", "tensoregg_request_seconds_count",
                                      "tensoregg_requests_in_flight"))}
        assert counts == {'tensoregg_requests_total{status="200"}': 3,
                          'tensoregg_requests_total{status="400"}': 5,
                          'tensoregg_requests_total{status="404"}': 1, "tensoregg_request_seconds_count": 9,
                          "tensoregg_requests_in_flight": 0}
        assert "tensoregg_model_load_seconds" in text.decode()
    finally:
        server.stop()


def test_batching_and_sigterm_drain(artifacts):
    _, batched, want = artifacts
    server = Server(batched, "--max-batch", "4", "--max-delay-ms", "1500")
    answers = []

    def send(rows):
        status, body, _ = server.predict(json.dumps({"inputs": [np.repeat(X, rows, 0).tolist()]}))
        answers.append((rows, status, body))

    clients = [threading.Thread(target=send, args=(rows,)) for rows in (1, 2)]
    for c in clients:
        c.start()
    time.sleep(0.5)  # both wait in the batcher (1.5 s): SIGTERM must let them be answered
    exit_code = server.stop()
    for c in clients:
        c.join()
    assert exit_code in (0, -signal.SIGTERM)
    assert sorted((rows, status) for rows, status, _ in answers) == [(1, 200), (2, 200)]
    for rows, _, body in answers:
        got = np.array(json.loads(body)["outputs"][0])
        assert got.shape == (rows, 10) and np.allclose(got, np.repeat(want, rows, 0), atol=1e-5)


def test_batching_needs_a_batched_model(artifacts):
    single, _, _ = artifacts
    done = subprocess.run([sys.executable, "-m", "tensoregg.cli", "serve", str(single), "--max-batch", "4"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "compiled for batch 4" in done.stderr and "Traceback" not in done.stderr
