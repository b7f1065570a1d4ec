"""The C entry point of a model's shared library: ``HEADER`` (``tensoregg.h``, the same for every
model) declares it, ``glue_source`` generates its implementation for one model (tables of its inputs
and outputs, around the LLVM entry point ``model``), compiled with ``cc`` into the library.

Weights: ``tegg_create`` reads them from the artifact's ``weights.npy`` (a 1-D uint8 ``.npy`` file
holding the packed weights, as ``tensoregg extract`` writes it next to the library); the library
knows their size and rejects a file of another. Runs are on the calling thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tensoregg.runtime.signature import TensorSpec

HEADER = r"""/* tensoregg.h: the C entry point of a tensoregg model's shared library (target llvm).
 *
 * One library holds one model. Usage:
 *   tegg_model *m;
 *   if (tegg_create("weights.npy", &m) != TEGG_OK) { puts(tegg_last_error()); ... }
 *   tegg_set_input(m, 0, x, tegg_input_nbytes(0));      // for every input k, C order, its dtype
 *   tegg_run(m);                                         // on the calling thread
 *   tegg_get_output(m, 0, y, tegg_output_nbytes(0));     // for every output k
 *   tegg_destroy(m);
 * Functions returning int return TEGG_OK or an error code; tegg_last_error() then describes the
 * last error of the calling thread. A tegg_model may be used by one thread at a time; several
 * models may run at once. dtype names are numpy's ("float32", "int64", "bool", ...).
 */
#ifndef TENSOREGG_H
#define TENSOREGG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TEGG_ABI_VERSION 1

enum tegg_status {
    TEGG_OK = 0,
    TEGG_ERR_ARGUMENT = 1, /* a null pointer, an index out of range or a wrong byte count */
    TEGG_ERR_WEIGHTS = 2,  /* the weights file cannot be read or is not this model's */
    TEGG_ERR_MEMORY = 3    /* out of memory */
};

typedef struct tegg_model tegg_model;

int tegg_abi_version(void);                 /* TEGG_ABI_VERSION of the library */
int tegg_num_inputs(void);
int tegg_num_outputs(void);
const char *tegg_input_name(int k);         /* NULL if k is out of range */
const char *tegg_input_dtype(int k);
int tegg_input_rank(int k);                 /* -1 if k is out of range */
const int64_t *tegg_input_shape(int k);
size_t tegg_input_nbytes(int k);
const char *tegg_output_name(int k);
const char *tegg_output_dtype(int k);
int tegg_output_rank(int k);
const int64_t *tegg_output_shape(int k);
size_t tegg_output_nbytes(int k);
size_t tegg_weights_nbytes(void);
size_t tegg_workspace_nbytes(void);

int tegg_create(const char *weights_path, tegg_model **model);
int tegg_set_input(tegg_model *model, int k, const void *data, size_t nbytes);
int tegg_run(tegg_model *model);
int tegg_get_output(const tegg_model *model, int k, void *data, size_t nbytes);
void tegg_destroy(tegg_model *model);
const char *tegg_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
"""

GLUE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tensoregg.h"

void model(void **inputs, void **outputs, void *weights, void *work, int64_t tid, int64_t nthreads,
           void *barrier);

typedef struct {
    const char *name, *dtype;
    int rank;
    const int64_t *shape;
    size_t nbytes;
    int source; /* outputs: 0 written by the model into slot `at`, 1 input `at`, 2 the constant `data` */
    int at;
    const unsigned char *data;
} tegg_info;

%(tables)s

struct tegg_model {
    void *inputs[N_INPUTS + 1], *outputs[N_OUTPUTS + 1];
    void *weights, *work;
    int64_t barrier[2];
};

static _Thread_local char last_error[512];

static int fail(int code, const char *what, const char *detail) {
    snprintf(last_error, sizeof last_error, "%%s%%s", what, detail ? detail : "");
    return code;
}

const char *tegg_last_error(void) { return last_error; }
int tegg_abi_version(void) { return TEGG_ABI_VERSION; }
int tegg_num_inputs(void) { return N_INPUTS; }
int tegg_num_outputs(void) { return N_OUTPUTS; }
size_t tegg_weights_nbytes(void) { return WEIGHTS_NBYTES; }
size_t tegg_workspace_nbytes(void) { return WORK_NBYTES; }

#define INFO(kind, table, n)                                                                    \
    const char *tegg_##kind##_name(int k) { return k >= 0 && k < n ? table[k].name : NULL; }    \
    const char *tegg_##kind##_dtype(int k) { return k >= 0 && k < n ? table[k].dtype : NULL; }  \
    int tegg_##kind##_rank(int k) { return k >= 0 && k < n ? table[k].rank : -1; }              \
    const int64_t *tegg_##kind##_shape(int k) { return k >= 0 && k < n ? table[k].shape : NULL; } \
    size_t tegg_##kind##_nbytes(int k) { return k >= 0 && k < n ? table[k].nbytes : 0; }
INFO(input, INPUTS, N_INPUTS)
INFO(output, OUTPUTS, N_OUTPUTS)

static void *zeroed(size_t n) {
    size_t rounded = (n + 63) / 64 * 64 + 64;
    void *p = aligned_alloc(64, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

static int read_weights(const char *path, void *into) {
    FILE *f = fopen(path, "rb");
    if (!f) return fail(TEGG_ERR_WEIGHTS, "cannot open the weights file ", path);
    unsigned char head[10];
    int status = TEGG_OK;
    if (fread(head, 1, 10, f) != 10 || memcmp(head, "\x93NUMPY", 6) != 0 || head[6] < 1 || head[6] > 3) {
        status = fail(TEGG_ERR_WEIGHTS, "not a .npy file: ", path);
    } else {
        size_t len = head[8] | (size_t)head[9] << 8;
        if (head[6] > 1) {  /* versions 2 and 3: a 4-byte header length */
            unsigned char more[2];
            if (fread(more, 1, 2, f) != 2) len = 0;
            len |= (size_t)more[0] << 16 | (size_t)more[1] << 24;
        }
        char *text = len > 0 && len < 65536 ? calloc(len + 1, 1) : NULL;
        const char *shape = NULL;
        if (text && fread(text, 1, len, f) == len) shape = strstr(text, "'shape': (");
        if (!shape || !strstr(text, "'descr': '|u1'") || !strstr(text, "'fortran_order': False")
            || strtoull(shape + 10, NULL, 10) != (unsigned long long)WEIGHTS_NBYTES)
            status = fail(TEGG_ERR_WEIGHTS, "not this model's weights (a 1-D uint8 array of the "
                          "library's tegg_weights_nbytes()): ", path);
        else if (fread(into, 1, WEIGHTS_NBYTES, f) != WEIGHTS_NBYTES)
            status = fail(TEGG_ERR_WEIGHTS, "the weights file is truncated: ", path);
        free(text);
    }
    fclose(f);
    return status;
}

void tegg_destroy(tegg_model *m) {
    if (!m) return;
    for (int k = 0; k < N_INPUTS; k++) free(m->inputs[k]);
    for (int k = 0; k < N_OUTPUTS; k++) free(m->outputs[k]);
    free(m->weights);
    free(m->work);
    free(m);
}

int tegg_create(const char *weights_path, tegg_model **out) {
    if (!weights_path || !out) return fail(TEGG_ERR_ARGUMENT, "tegg_create: a null argument", NULL);
    *out = NULL;
    tegg_model *m = calloc(1, sizeof *m);
    if (!m) return fail(TEGG_ERR_MEMORY, "tegg_create: out of memory", NULL);
    int ok = (m->weights = zeroed(WEIGHTS_NBYTES)) && (m->work = zeroed(WORK_NBYTES));
    for (int k = 0; ok && k < N_INPUTS; k++) ok = (m->inputs[k] = zeroed(INPUTS[k].nbytes)) != NULL;
    for (int k = 0; ok && k < N_OUTPUTS; k++)
        if (OUTPUTS[k].source == 0 && OUTPUTS[k].at == k)
            ok = (m->outputs[k] = zeroed(OUTPUTS[k].nbytes)) != NULL;
    if (!ok) {
        tegg_destroy(m);
        return fail(TEGG_ERR_MEMORY, "tegg_create: out of memory", NULL);
    }
    int status = read_weights(weights_path, m->weights);
    if (status != TEGG_OK) {
        tegg_destroy(m);
        return status;
    }
    *out = m;
    return TEGG_OK;
}

int tegg_set_input(tegg_model *m, int k, const void *data, size_t nbytes) {
    if (!m || !data || k < 0 || k >= N_INPUTS)
        return fail(TEGG_ERR_ARGUMENT, "tegg_set_input: a null argument or no such input", NULL);
    if (nbytes != INPUTS[k].nbytes)
        return fail(TEGG_ERR_ARGUMENT, "tegg_set_input: wrong byte count for input ", INPUTS[k].name);
    memcpy(m->inputs[k], data, nbytes);
    return TEGG_OK;
}

int tegg_run(tegg_model *m) {
    if (!m) return fail(TEGG_ERR_ARGUMENT, "tegg_run: a null model", NULL);
    model(m->inputs, m->outputs, m->weights, m->work, 0, 1, m->barrier);
    return TEGG_OK;
}

int tegg_get_output(const tegg_model *m, int k, void *data, size_t nbytes) {
    if (!m || !data || k < 0 || k >= N_OUTPUTS)
        return fail(TEGG_ERR_ARGUMENT, "tegg_get_output: a null argument or no such output", NULL);
    if (nbytes != OUTPUTS[k].nbytes)
        return fail(TEGG_ERR_ARGUMENT, "tegg_get_output: wrong byte count for output ", OUTPUTS[k].name);
    const tegg_info *o = &OUTPUTS[k];
    const void *from = o->source == 0 ? m->outputs[o->at] : o->source == 1 ? m->inputs[o->at] : o->data;
    if (nbytes) memcpy(data, from, nbytes);
    return TEGG_OK;
}
"""


def _c_string(text: str) -> str:
    return '"' + "".join(c if c.isalnum() or c in " _-.:/" else f"\\{ord(c):03o}"
                         for c in text) + '"'


def _table(kind: str, specs: Sequence[TensorSpec], sources: Sequence[tuple[int, int, bytes]]) -> str:
    lines, rows = [], []
    for k, (spec, (source, at, data)) in enumerate(zip(specs, sources)):
        dims = ", ".join(map(str, spec.shape)) or "0"
        lines.append(f"static const int64_t {kind}_shape{k}[] = {{{dims}}};")
        blob = "NULL"
        if source == 2:
            values = ", ".join(map(str, data)) or "0"
            lines.append(f"static const unsigned char {kind}_data{k}[] = {{{values}}};")
            blob = f"{kind}_data{k}"
        rows.append(f"    {{{_c_string(spec.name)}, {_c_string(spec.dtype.name)}, {len(spec.shape)}, "
                    f"{kind}_shape{k}, {spec.nbytes}u, {source}, {at}, {blob}}},")
    rows = rows or ["    {0}"]
    return "\n".join([*lines, f"static const tegg_info {kind.upper()}[] = {{", *rows, "};"])


def glue_source(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], slots: Mapping[str, int],
                constants: Mapping[str, np.ndarray], work_nbytes: int, weights_nbytes: int) -> str:
    """The C API of a model with these inputs and outputs (an output is written by the code into
    output slot ``slots[name]``, else it is an input, else one of ``constants``)."""
    positions = {t.name: k for k, t in enumerate(inputs)}
    sources = []
    for t in outputs:
        if t.name in slots:
            sources.append((0, slots[t.name], b""))
        elif t.name in positions:
            sources.append((1, positions[t.name], b""))
        else:
            sources.append((2, 0, np.ascontiguousarray(constants[t.name]).tobytes()))
    tables = "\n".join([f"#define N_INPUTS {len(inputs)}", f"#define N_OUTPUTS {len(outputs)}",
                        f"#define WEIGHTS_NBYTES ((size_t){weights_nbytes}u)",
                        f"#define WORK_NBYTES ((size_t){work_nbytes}u)",
                        _table("inputs", inputs, [(0, 0, b"")] * len(inputs)),
                        _table("outputs", outputs, sources)])
    return GLUE % {"tables": tables}
