/*
 * wsthread._speedups: optional C helpers for the WebSocket frame layer.
 *
 * Only one function lives here: apply_mask(), the XOR of a payload with a
 * repeated 4-byte masking key (RFC 6455 section 5.3). The pure-Python
 * version in wsthread/sansio/frames.py does the same thing and is used
 * when this module was not built (no C compiler at install time) or when
 * the environment variable WSTHREAD_NO_SPEEDUPS is set to a non-empty value.
 *
 * The loop works on 8 bytes at a time through memcpy (which compilers turn
 * into plain unaligned loads and stores, and vectorise at -O2/-O3); the key
 * is repeated twice in one 64-bit word, which is right whatever the byte
 * order because the same bytes are stored in memory as they were loaded.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* Payloads at least this long are XORed with the GIL released, so other
   threads (the other connections of a server) run meanwhile. Below it the
   release and re-acquisition would cost more than the work. */
#define RELEASE_GIL_THRESHOLD (64 * 1024)

static void
xor_mask(const unsigned char *src, unsigned char *dst, Py_ssize_t length,
         const unsigned char key[4])
{
    unsigned char pattern[8];
    uint64_t word_key, word;
    Py_ssize_t i = 0;

    memcpy(pattern, key, 4);
    memcpy(pattern + 4, key, 4);
    memcpy(&word_key, pattern, 8);
    for (; i + 8 <= length; i += 8) {
        memcpy(&word, src + i, 8);
        word ^= word_key;
        memcpy(dst + i, &word, 8);
    }
    /* i is a multiple of 8, so the key restarts at its first byte here. */
    for (; i < length; i++) {
        dst[i] = src[i] ^ key[i & 3];
    }
}

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, mask, /)\n"
"--\n"
"\n"
"XOR ``data`` with the 4-byte ``mask`` repeated (masking and unmasking alike).\n"
"\n"
"Both arguments may be any contiguous bytes-like object; the result is a new\n"
"``bytes``. Raises ValueError when ``mask`` is not exactly 4 bytes long.");

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    PyObject *result = NULL;
    unsigned char key[4];

    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "apply_mask() takes exactly 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_Format(PyExc_ValueError, "mask must be 4 bytes long, not %zd", mask.len);
        PyBuffer_Release(&mask);
        return NULL;
    }
    memcpy(key, mask.buf, 4);
    PyBuffer_Release(&mask);

    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        const unsigned char *src = (const unsigned char *)data.buf;
        if (data.len >= RELEASE_GIL_THRESHOLD) {
            Py_BEGIN_ALLOW_THREADS
            xor_mask(src, dst, data.len, key);
            Py_END_ALLOW_THREADS
        }
        else {
            xor_mask(src, dst, data.len, key);
        }
    }
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL, apply_mask_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(module_doc,
"Optional C helpers for wsthread's frame layer (masking); pure-Python fallbacks exist.");

/* Safe without the GIL (free-threaded CPython 3.13t and later), audited for
   shared mutable state: there is none. The module has no state and no static
   variable that changes (the method table, docstrings and slots are constant);
   apply_mask() works on its arguments, its locals and a new bytes object that
   no other thread sees before it is returned. Its input is held through the
   buffer protocol, so a bytearray cannot be resized or freed meanwhile; another
   thread writing into that bytearray at the same time gets a mix of old and new
   bytes, as it would with the GIL released for a large payload, and wsthread
   never does that (each frame's payload belongs to one reader or writer).
   Py_BEGIN_ALLOW_THREADS on a free-threaded build detaches the thread state
   instead of releasing a GIL, which lets a stop-the-world pause (the garbage
   collector) go ahead during a long XOR. Py_mod_gil exists from 3.13 on; on an
   older Python the slot is left out and nothing changes.
   The same holds for sub-interpreters with their own GIL. */
static PyModuleDef_Slot speedups_slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "wsthread._speedups",
    module_doc,
    0,
    speedups_methods,
    speedups_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
