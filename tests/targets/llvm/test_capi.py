"""The C entry point of an artifact's shared library: a C program built with ``cc`` against the
extracted ``tensoregg.h`` and library computes what Python computes, and reports errors as codes."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tensoregg

ROOT = Path(__file__).resolve().parents[3]

DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "tensoregg.h"

static void *slurp(const char *path, size_t n) {
    void *p = malloc(n);
    FILE *f = fopen(path, "rb");
    if (!p || !f || fread(p, 1, n, f) != n) { fprintf(stderr, "cannot read %s\n", path); exit(3); }
    fclose(f);
    return p;
}

int main(int argc, char **argv) {
    /* argv: weights.npy, then one file per input, then one per output */
    tegg_model *m = NULL;
    if (tegg_create("no/such/weights.npy", &m) != TEGG_ERR_WEIGHTS || m || !*tegg_last_error()) return 10;
    int status = tegg_create(argv[1], &m);
    if (status != TEGG_OK) { fprintf(stderr, "create: %d %s\n", status, tegg_last_error()); return 11; }
    int n_in = tegg_num_inputs(), n_out = tegg_num_outputs();
    if (argc != 2 + n_in + n_out || tegg_abi_version() != TEGG_ABI_VERSION) return 12;
    for (int k = 0; k < n_in; k++) {
        printf("input %s %s rank %d dim0 %lld\n", tegg_input_name(k), tegg_input_dtype(k), tegg_input_rank(k),
               (long long)tegg_input_shape(k)[0]);
        size_t n = tegg_input_nbytes(k);
        if (tegg_set_input(m, k, slurp(argv[2 + k], n), n + 1) != TEGG_ERR_ARGUMENT) return 13;
        if (tegg_set_input(m, k, slurp(argv[2 + k], n), n) != TEGG_OK) return 14;
    }
    if (tegg_set_input(m, n_in, "", 0) != TEGG_ERR_ARGUMENT || tegg_input_name(n_in) != NULL) return 15;
    for (int repeat = 0; repeat < 2; repeat++)
        if (tegg_run(m) != TEGG_OK) return 16;
    for (int k = 0; k < n_out; k++) {
        size_t n = tegg_output_nbytes(k);
        void *y = malloc(n);
        if (tegg_get_output(m, k, y, n) != TEGG_OK) return 17;
        FILE *f = fopen(argv[2 + n_in + k], "wb");
        if (!f || fwrite(y, 1, n, f) != n || fclose(f)) return 18;
        printf("output %s %s %zu bytes\n", tegg_output_name(k), tegg_output_dtype(k), n);
    }
    tegg_destroy(m);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_driver_computes_what_python_computes(tmp_path):
    module = tensoregg.compile(str(ROOT / "examples" / "tinycnn.onnx"))
    files = tmp_path / "files"
    tensoregg.extract(module.save(tmp_path / "tinycnn.tegg"), files)
    (tmp_path / "driver.c").write_text(DRIVER)
    subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-o", str(tmp_path / "driver"),
                    str(tmp_path / "driver.c"), f"-I{files}", f"-L{files}", "-ltensoregg_model",
                    f"-Wl,-rpath,{files}"], check=True)
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal(s).astype(d) for s, d in zip(module.input_shapes, module.input_dtypes)]
    ins = [tmp_path / f"in{k}.bin" for k in range(len(feeds))]
    outs = [tmp_path / f"out{k}.bin" for k in range(len(module.output_names))]
    for path, x in zip(ins, feeds):
        path.write_bytes(x.tobytes())
    command = [str(tmp_path / "driver"), str(files / "weights.npy"), *map(str, ins), *map(str, outs)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert "input x float32 rank 4 dim0 1" in done.stdout and "output probs float32 40 bytes" in done.stdout
    for path, want in zip(outs, module.run(*feeds)):
        np.testing.assert_array_equal(np.fromfile(path, want.dtype).reshape(want.shape), want)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_api_refuses_another_models_weights(tmp_path):
    module = tensoregg.compile(str(ROOT / "examples" / "tinycnn.onnx"), optimize=False)
    files = tmp_path / "files"
    tensoregg.extract(module.save(tmp_path / "a.tegg"), files)
    np.save(files / "other.npy", np.zeros(7, np.uint8))
    nbytes = module.artifact().manifest["code"]["weights_nbytes"]
    np.save(files / "floats.npy", np.zeros(nbytes // 4, np.float32))
    script = f"""
import ctypes
lib = ctypes.CDLL({str(files / 'libtensoregg_model.so')!r})
lib.tegg_last_error.restype = ctypes.c_char_p
m = ctypes.c_void_p()
for name in ("other.npy", "floats.npy"):
    assert lib.tegg_create({str(files)!r}.encode() + b"/" + name.encode(), ctypes.byref(m)) == 2
    assert b"not this model's weights" in lib.tegg_last_error(), lib.tegg_last_error()
assert lib.tegg_create({str(files / 'weights.npy')!r}.encode(), ctypes.byref(m)) == 0
lib.tegg_destroy(m)
"""
    subprocess.run([sys.executable, "-c", script], check=True)
