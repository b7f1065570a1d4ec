"""The runner: a small C program, linked statically with a model's object file, that runs the model
once under qemu-user. Its source is here (not a package data file) so that it travels with the code.

Usage: ``runner WEIGHTS WORK_BYTES N_IN IN... N_OUT (OUT BYTES)...``. It reads the weights blob and
each input from its file into 64-byte aligned memory, allocates a zeroed workspace of ``WORK_BYTES``,
calls ``model(inputs, outputs, weights, workspace, 0, 1, barrier)`` (one thread) and writes output
slot k's ``BYTES`` to ``OUT``; an ``OUT`` of ``-`` is a slot the model does not write (a null
pointer). Exit status 2, with a line on stderr, if a file cannot be read or written.
"""

from __future__ import annotations

RUNNER_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void model(void **inputs, void **outputs, void *weights, void *work, int64_t tid, int64_t nthreads,
           void *barrier);

static void fail(const char *what, const char *name) {
    fprintf(stderr, "runner: %s %s\n", what, name);
    exit(2);
}

static void *zeroed(size_t n) {
    size_t rounded = (n + 63) / 64 * 64 + 64;
    void *p = aligned_alloc(64, rounded);
    if (!p) fail("out of memory for", "a buffer");
    memset(p, 0, rounded);
    return p;
}

static void *load(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) fail("cannot open", path);
    if (fseek(f, 0, SEEK_END) != 0) fail("cannot seek", path);
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) fail("cannot seek", path);
    void *p = zeroed((size_t)n);
    if (n > 0 && fread(p, 1, (size_t)n, f) != (size_t)n) fail("cannot read", path);
    fclose(f);
    return p;
}

int main(int argc, char **argv) {
    if (argc < 5) fail("usage:", "runner WEIGHTS WORK_BYTES N_IN IN... N_OUT (OUT BYTES)...");
    int64_t barrier[2] = {0, 0};
    void *weights = load(argv[1]);
    void *work = zeroed(strtoull(argv[2], NULL, 10));
    int n_in = atoi(argv[3]);
    if (n_in < 0 || argc < 5 + n_in) fail("too few arguments for", "the inputs");
    void **inputs = calloc((size_t)n_in + 1, sizeof(void *));
    for (int k = 0; k < n_in; k++) inputs[k] = load(argv[4 + k]);
    int at = 4 + n_in;
    int n_out = atoi(argv[at++]);
    if (n_out < 0 || argc != at + 2 * n_out) fail("wrong number of arguments for", "the outputs");
    void **outputs = calloc((size_t)n_out + 1, sizeof(void *));
    for (int k = 0; k < n_out; k++) {
        if (strcmp(argv[at + 2 * k], "-") != 0) outputs[k] = zeroed(strtoull(argv[at + 2 * k + 1], NULL, 10));
    }
    model(inputs, outputs, weights, work, 0, 1, barrier);
    for (int k = 0; k < n_out; k++) {
        if (!outputs[k]) continue;
        const char *path = argv[at + 2 * k];
        size_t n = strtoull(argv[at + 2 * k + 1], NULL, 10);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(outputs[k], 1, n, f) != n || fclose(f) != 0) fail("cannot write", path);
    }
    return 0;
}
"""
