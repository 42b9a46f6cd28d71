/*
 * audio._speedups: the few per-packet steps of a call that cost most in the interpreter.
 *
 * Why C here (bench/README.md, "Third round"): a call's media tick runs once per 20 ms, long
 * enough for the CPU caches to forget the interpreter and numpy, so each Python-level step
 * costs 10-40 us however little it computes. These functions replace a numpy dispatch chain
 * with one small C call. Every one has a pure-Python twin in audio/speedups.py, which is used
 * when this module is not built, and the tests check that both give the same bytes
 * (tests/unit/test_speedups.py). Policy (what to encode, what a frame means) stays in Python.
 *
 *   g711_encode(table, pcm)  -> bytes      table: 65536 codes indexed by the uint16 pattern
 *   g711_decode(table, data) -> bytearray  table: 256 native int16 samples; result int16
 *   rms_int16(pcm)           -> float      root mean square of native int16 samples
 *
 * Sans-IO like the rest of audio/: the socket read of the same kind lives in
 * firmware/runtime/_udp.c.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

static PyObject *g711_encode(PyObject *self, PyObject *args) {
    const char *table;
    Py_ssize_t table_len;
    Py_buffer pcm;
    if (!PyArg_ParseTuple(args, "y#y*", &table, &table_len, &pcm)) return NULL;
    if (table_len != 65536 || pcm.len % 2) {
        PyBuffer_Release(&pcm);
        PyErr_SetString(PyExc_ValueError, "g711_encode: need a 65536-byte table and int16 PCM");
        return NULL;
    }
    Py_ssize_t n = pcm.len / 2;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out != NULL) {
        const uint16_t *in = (const uint16_t *)pcm.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
        const unsigned char *codes = (const unsigned char *)table;
        for (Py_ssize_t i = 0; i < n; i++) dst[i] = codes[in[i]];
    }
    PyBuffer_Release(&pcm);
    return out;
}

static PyObject *g711_decode(PyObject *self, PyObject *args) {
    const char *table;
    Py_ssize_t table_len;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y#y*", &table, &table_len, &data)) return NULL;
    if (table_len != 512) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "g711_decode: need a 512-byte table");
        return NULL;
    }
    PyObject *out = PyByteArray_FromStringAndSize(NULL, data.len * 2);
    if (out != NULL) {
        int16_t samples[256];
        memcpy(samples, table, sizeof samples); /* the table may not be aligned */
        const unsigned char *in = (const unsigned char *)data.buf;
        int16_t *dst = (int16_t *)PyByteArray_AS_STRING(out);
        for (Py_ssize_t i = 0; i < data.len; i++) dst[i] = samples[in[i]];
    }
    PyBuffer_Release(&data);
    return out;
}

static PyObject *rms_int16(PyObject *self, PyObject *arg) {
    Py_buffer pcm;
    if (PyObject_GetBuffer(arg, &pcm, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (pcm.len % 2) {
        PyBuffer_Release(&pcm);
        PyErr_SetString(PyExc_ValueError, "rms_int16: odd byte count");
        return NULL;
    }
    Py_ssize_t n = pcm.len / 2;
    const int16_t *x = (const int16_t *)pcm.buf;
    /* exact: int64 holds 2^31 squares of 2^30, far more than any frame */
    int64_t sum = 0;
    for (Py_ssize_t i = 0; i < n; i++) sum += (int64_t)x[i] * x[i];
    PyBuffer_Release(&pcm);
    return PyFloat_FromDouble(n ? sqrt((double)sum / (double)n) : 0.0);
}

static PyMethodDef methods[] = {
    {"g711_encode", g711_encode, METH_VARARGS, "G.711 codes of int16 PCM through a 65536-entry table."},
    {"g711_decode", g711_decode, METH_VARARGS, "int16 PCM (a bytearray) of G.711 codes through a 256-entry table."},
    {"rms_int16", rms_int16, METH_O, "Root mean square of native int16 samples (0.0 when empty)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "audio._speedups", "C versions of per-packet hot spots (see audio/speedups.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
