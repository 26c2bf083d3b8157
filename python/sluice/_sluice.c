/*
 * sluice._sluice: the C extension of the sluice package, a thin wrapper of
 * libsluice (include/sluice/client.h, docs/spec/CLIENT.md).
 *
 * What: one type, _sluice.Core, that owns one struct sl_client, and a few
 * module functions (strerror, the error codes). sluice.Client (_client.py)
 * wraps it with the Python conveniences: seconds instead of milliseconds,
 * conversion of other dtypes in bounded chunks, the report dict, and the
 * exceptions of sluice._errors.
 *
 * How: Core.send(ids, values, times_us) takes three objects with the buffer
 * protocol and reads them in place (PyObject_GetBuffer, C-contiguous, 1-D,
 * format uint32 / float32 / int64 in native little-endian order): no copy
 * and no Python object per reading. An object that is not such a buffer is
 * not an error here: send returns NotImplemented and the Python layer
 * converts it in chunks and calls again. Lengths that differ raise
 * sluice.ArgumentError before anything is taken.
 *
 * Blocking: the library's blocking calls (an append that waits for a free
 * frame slot, flush, finish) run with the GIL released. They are cut into
 * slices of SLICE_MS (the library's block_timeout_ms is set to SLICE_MS and
 * flush is called with at most SLICE_MS) so that between slices the thread
 * takes the GIL back, runs signal handlers (Ctrl-C interrupts a long flush)
 * and checks the caller's own deadline. A slice that runs out costs nothing:
 * the next call goes on where the last stopped (the library keeps its
 * state: backoff timers, frames in flight).
 *
 * Threads: a client is one thread's (client.h). While one thread is inside a
 * call with the GIL released, a call from another thread on the same Core
 * raises sluice.Error instead of entering the library twice.
 *
 * Memory: the Core object (about 100 bytes) and what sl_client_open takes
 * (Core.memory_bytes, from sl_client_memory); nothing per call or reading.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "sluice/client.h"

/* How long one blocking call of the library may hold the thread without the GIL. */
#define SLICE_MS 100

/* The exception classes of sluice._errors, looked up once at import. */
static PyObject *sluice_error;          /* sluice.Error */
static PyObject *sluice_argument_error; /* sluice.ArgumentError */

struct core {
    PyObject_HEAD
    struct sl_client *client; /* NULL once closed */
    int busy;                 /* a call is under way with the GIL released */
    int32_t block_timeout_ms; /* the caller's bound for a send's wait; -1: none */
    int64_t memory_bytes;     /* what sl_client_open allocated */
};

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Raise sluice.Error unless the Core can be entered now. */
static int core_enter(struct core *self)
{
    if (self->client == NULL) {
        PyErr_SetString(sluice_error, "the client is closed");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(sluice_error, "the client is in use by another thread (a client is one thread's)");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ open and close */

static int core_init(struct core *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"target", "stream_id", "first_seq", "batch_readings", "frame_bytes_max",
                            "window", "block_timeout_ms", "connect_timeout_ms", "ack_timeout_ms",
                            "backoff_min_ms", "backoff_max_ms", "flags", "socket_buffer_bytes", NULL};
    const char *target;
    unsigned long stream_id;
    unsigned long long first_seq = 0;
    unsigned long batch_readings = 0, frame_bytes_max = 0, window = 0, connect_ms = 0, ack_ms = 0;
    unsigned long backoff_min_ms = 0, backoff_max_ms = 0, flags = 0, socket_buffer_bytes = 0;
    long block_ms = SL_CLIENT_BLOCK_DEFAULT_MS;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sk|$Kkkklkkkkkk", names, &target, &stream_id, &first_seq,
                                     &batch_readings, &frame_bytes_max, &window, &block_ms, &connect_ms,
                                     &ack_ms, &backoff_min_ms, &backoff_max_ms, &flags, &socket_buffer_bytes))
        return -1;
    if (self->client != NULL) {
        PyErr_SetString(sluice_error, "the client is already open");
        return -1;
    }
    if (stream_id > UINT32_MAX || batch_readings > UINT32_MAX || frame_bytes_max > UINT32_MAX ||
        window > UINT32_MAX || connect_ms > UINT32_MAX || ack_ms > UINT32_MAX || backoff_min_ms > UINT32_MAX ||
        backoff_max_ms > UINT32_MAX || flags > UINT32_MAX || socket_buffer_bytes > UINT32_MAX ||
        block_ms < -1 || block_ms > (long)SL_CLIENT_TIMEOUT_MAX_MS) {
        PyErr_SetString(sluice_argument_error, "an option is out of range");
        return -1;
    }
    struct sl_client_options o;
    sl_client_options_init(&o);
    o.stream_id = (uint32_t)stream_id;
    o.first_seq = first_seq;
    o.batch_readings = (uint32_t)batch_readings;
    o.frame_bytes_max = (uint32_t)frame_bytes_max;
    o.window = (uint32_t)window;
    /* The library waits at most a slice; core_send waits the rest, slice by slice (above). */
    o.block_timeout_ms = SLICE_MS;
    o.connect_timeout_ms = (uint32_t)connect_ms;
    o.ack_timeout_ms = (uint32_t)ack_ms;
    o.backoff_min_ms = (uint32_t)backoff_min_ms;
    o.backoff_max_ms = (uint32_t)backoff_max_ms;
    o.flags = (uint32_t)flags & ~(uint32_t)SL_CLIENT_NONBLOCK;
    o.socket_buffer_bytes = (uint32_t)socket_buffer_bytes;
    self->block_timeout_ms = (int32_t)block_ms;

    int64_t memory = sl_client_memory(target, &o);
    struct sl_client *client = NULL;
    int rc = memory < 0 ? (int)memory : 0;
    if (rc == 0) {
        Py_BEGIN_ALLOW_THREADS /* open resolves the host name */
        rc = sl_client_open(&client, target, &o);
        Py_END_ALLOW_THREADS
    }
    if (rc < 0) {
        PyObject *cls = (rc == -EINVAL || rc == SL_CLIENT_ETARGET) ? sluice_argument_error : sluice_error;
        PyObject *err = Py_BuildValue("(is)", rc, sl_client_strerror(rc));
        if (err != NULL) {
            PyErr_SetObject(cls, err);
            Py_DECREF(err);
        }
        return -1;
    }
    self->client = client;
    self->memory_bytes = memory;
    return 0;
}

static void core_dealloc(struct core *self)
{
    if (self->client != NULL) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback); /* a dealloc must leave the current exception be */
        struct sl_client_counts n;
        sl_client_counts(self->client, &n);
        /* Readings the caller never flushed are lost: say so, as an unclosed file does. */
        if ((n.pending > 0 || n.buffered > 0) &&
            PyErr_WarnFormat(PyExc_ResourceWarning, 1,
                             "sluice client dropped without close(): %llu batches not acknowledged and "
                             "%llu readings not cut are lost",
                             (unsigned long long)n.pending, (unsigned long long)n.buffered) < 0)
            PyErr_WriteUnraisable((PyObject *)self);
        sl_client_close(self->client);
        self->client = NULL;
        PyErr_Restore(type, value, traceback);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *core_close(struct core *self, PyObject *unused)
{
    (void)unused;
    if (self->busy) {
        PyErr_SetString(sluice_error, "the client is in use by another thread (a client is one thread's)");
        return NULL;
    }
    sl_client_close(self->client); /* NULL is fine */
    self->client = NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ send */

enum kind { KIND_U32, KIND_F32, KIND_I64 };

/* Does a buffer's struct-module format describe one native little-endian item of this kind? */
static int format_matches(const char *format, Py_ssize_t itemsize, enum kind kind)
{
    if (format == NULL)
        return 0; /* unsigned bytes */
    if (*format == '@' || *format == '=')
        format++;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    else if (*format == '<')
        format++;
#endif
    if (format[0] == '\0' || format[1] != '\0')
        return 0;
    switch (kind) {
    case KIND_U32:
        return itemsize == 4 && (format[0] == 'I' || format[0] == 'L');
    case KIND_F32:
        return itemsize == 4 && format[0] == 'f';
    case KIND_I64:
        return itemsize == 8 && (format[0] == 'q' || format[0] == 'l');
    }
    return 0;
}

/* 1: *view is a C-contiguous 1-D buffer of this kind (release it); 0: o is not one (nothing to release). */
static int get_buffer(PyObject *o, Py_buffer *view, enum kind kind)
{
    if (PyObject_GetBuffer(o, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear(); /* no buffer protocol, or not contiguous: the Python layer converts it */
        return 0;
    }
    if (view->ndim != 1 || !format_matches(view->format, view->itemsize, kind)) {
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

/*
 * Append n readings, waiting for room slice by slice until the caller's block timeout.
 * Returns the count taken; *rc_out is 0 when all were, else why not (-ETIMEDOUT or a stopping
 * code). -1 with an exception set when a signal handler raised (readings taken so far stay).
 */
static int64_t append_all(struct core *self, const uint32_t *ids, const float *values, const int64_t *times_us,
                          size_t n, int64_t *rc_out)
{
    int64_t deadline_ms = self->block_timeout_ms < 0 ? INT64_MAX : monotonic_ms() + self->block_timeout_ms;
    size_t done = 0;
    *rc_out = 0;
    while (done < n) {
        int64_t r;
        self->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        r = sl_client_append_array(self->client, ids + done, values + done, times_us ? times_us + done : NULL,
                                   n - done);
        Py_END_ALLOW_THREADS
        self->busy = 0;
        if (r > 0) {
            done += (size_t)r;
        } else if (r != -ETIMEDOUT && r != -EAGAIN) {
            *rc_out = r;
            break;
        }
        if (done == n)
            break;
        if (PyErr_CheckSignals() < 0)
            return -1;
        if (monotonic_ms() >= deadline_ms) {
            *rc_out = -ETIMEDOUT;
            break;
        }
    }
    return (int64_t)done;
}

/*
 * send(ids, values, times_us=None) -> (taken, rc), or NotImplemented when an argument is not a
 * buffer of the right type (the caller converts it). rc is 0 when every reading was taken.
 */
static PyObject *core_send(struct core *self, PyObject *args)
{
    PyObject *ids_o, *values_o, *times_o = Py_None;
    if (!PyArg_ParseTuple(args, "OO|O:send", &ids_o, &values_o, &times_o))
        return NULL;
    if (core_enter(self) < 0)
        return NULL;
    Py_buffer ids, values, times;
    int have_times = times_o != Py_None;
    if (!get_buffer(ids_o, &ids, KIND_U32))
        Py_RETURN_NOTIMPLEMENTED;
    if (!get_buffer(values_o, &values, KIND_F32)) {
        PyBuffer_Release(&ids);
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (have_times && !get_buffer(times_o, &times, KIND_I64)) {
        PyBuffer_Release(&ids);
        PyBuffer_Release(&values);
        Py_RETURN_NOTIMPLEMENTED;
    }
    Py_ssize_t n = ids.shape[0];
    PyObject *result = NULL;
    if (values.shape[0] != n || (have_times && times.shape[0] != n)) {
        PyErr_Format(sluice_argument_error, "send: lengths differ: %zd ids, %zd values, %zd times_us", n,
                     values.shape[0], have_times ? times.shape[0] : n);
    } else {
        int64_t rc = 0;
        int64_t taken = n == 0 ? 0 : append_all(self, ids.buf, values.buf, have_times ? times.buf : NULL,
                                                (size_t)n, &rc);
        if (taken >= 0)
            result = Py_BuildValue("(LL)", (long long)taken, (long long)rc);
    }
    PyBuffer_Release(&ids);
    PyBuffer_Release(&values);
    if (have_times)
        PyBuffer_Release(&times);
    return result;
}

/* matches(obj, kind) -> bool: would send read obj in place as kind 0 (uint32), 1 (float32), 2 (int64)? */
static PyObject *module_matches(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *o;
    int kind;
    if (!PyArg_ParseTuple(args, "Oi:matches", &o, &kind))
        return NULL;
    if (kind < KIND_U32 || kind > KIND_I64) {
        PyErr_SetString(PyExc_ValueError, "kind is 0, 1 or 2");
        return NULL;
    }
    Py_buffer view;
    if (!get_buffer(o, &view, (enum kind)kind))
        Py_RETURN_FALSE;
    PyBuffer_Release(&view);
    Py_RETURN_TRUE;
}

/* ------------------------------------------------------------------ flush, finish, counts */

/*
 * Flush for at most timeout_ms (-1: no bound), slice by slice. Returns the library's code
 * (0, -ETIMEDOUT or a stopping code); *interrupted is 1 when a signal handler raised between
 * slices (the exception is set).
 */
static int flush_sliced(struct core *self, int64_t timeout_ms, int *interrupted)
{
    int64_t deadline_ms = timeout_ms < 0 ? INT64_MAX : monotonic_ms() + timeout_ms;
    *interrupted = 0;
    for (;;) {
        int64_t left_ms = deadline_ms == INT64_MAX ? SLICE_MS : deadline_ms - monotonic_ms();
        int slice_ms = left_ms <= 0 ? 0 : left_ms < SLICE_MS ? (int)left_ms : SLICE_MS;
        int rc;
        self->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        rc = sl_client_flush(self->client, slice_ms);
        Py_END_ALLOW_THREADS
        self->busy = 0;
        if (rc != -ETIMEDOUT || slice_ms == 0)
            return rc;
        if (PyErr_CheckSignals() < 0) {
            *interrupted = 1;
            return rc;
        }
    }
}

static int parse_timeout(PyObject *args, const char *fmt, long long *timeout_ms)
{
    *timeout_ms = -1;
    if (!PyArg_ParseTuple(args, fmt, timeout_ms))
        return -1;
    if (*timeout_ms < -1 || *timeout_ms > (long long)SL_CLIENT_TIMEOUT_MAX_MS) {
        PyErr_SetString(sluice_argument_error, "a timeout is -1 (none) or 0 .. 86,400,000 ms");
        return -1;
    }
    return 0;
}

/* flush(timeout_ms=-1) -> rc: 0, -ETIMEDOUT or a stopping code. */
static PyObject *core_flush(struct core *self, PyObject *args)
{
    long long timeout_ms;
    if (parse_timeout(args, "|L:flush", &timeout_ms) < 0 || core_enter(self) < 0)
        return NULL;
    int interrupted;
    int rc = flush_sliced(self, timeout_ms, &interrupted);
    if (interrupted)
        return NULL;
    return PyLong_FromLong(rc);
}

/* finish(timeout_ms=-1) -> rc: flush (sliced), then sl_client_finish with what is left. */
static PyObject *core_finish(struct core *self, PyObject *args)
{
    long long timeout_ms;
    if (parse_timeout(args, "|L:finish", &timeout_ms) < 0 || core_enter(self) < 0)
        return NULL;
    int64_t start_ms = monotonic_ms();
    int interrupted;
    int rc = flush_sliced(self, timeout_ms, &interrupted);
    if (interrupted)
        return NULL;
    if (rc == 0) {
        int64_t left_ms = timeout_ms < 0 ? -1 : timeout_ms - (monotonic_ms() - start_ms);
        int finish_ms = left_ms < 0 ? (timeout_ms < 0 ? SL_CLIENT_FOREVER : 0) : (int)left_ms;
        self->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        rc = sl_client_finish(self->client, finish_ms);
        Py_END_ALLOW_THREADS
        self->busy = 0;
    }
    return PyLong_FromLong(rc);
}

/* push() -> rc: cut the frame being filled and write what the socket takes now. */
static PyObject *core_push(struct core *self, PyObject *unused)
{
    (void)unused;
    if (core_enter(self) < 0)
        return NULL;
    int rc;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = sl_client_push(self->client);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    return PyLong_FromLong(rc);
}

/*
 * Every field of struct sl_client_counts, by name. The size check makes a field added to the
 * header break this build until it is added here too, so the report stays complete.
 */
_Static_assert(sizeof(struct sl_client_counts) == 21 * sizeof(uint64_t),
               "struct sl_client_counts changed: bring core_counts up to date");

static int put_count(PyObject *d, const char *name, unsigned long long value)
{
    PyObject *v = PyLong_FromUnsignedLongLong(value);
    if (v == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, name, v);
    Py_DECREF(v);
    return rc;
}

/* counts() -> dict of every field of struct sl_client_counts. */
static PyObject *core_counts(struct core *self, PyObject *unused)
{
    (void)unused;
    if (core_enter(self) < 0)
        return NULL;
    struct sl_client_counts n;
    sl_client_counts(self->client, &n);
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
#define PUT(field)                                                                                 \
    if (put_count(d, #field, n.field) < 0)                                                         \
        goto fail;
    PUT(batches) PUT(readings) PUT(sent) PUT(sent_readings) PUT(acked) PUT(duplicate) PUT(accepted)
    PUT(rejected) PUT(overloaded) PUT(resent) PUT(reconnects) PUT(sockets) PUT(connect_failures)
    PUT(ack_timeouts) PUT(refused)
    PUT(refused_seq) PUT(refused_status) PUT(udp_errors) PUT(pending) PUT(buffered) PUT(next_seq)
#undef PUT
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

/* last_error() -> int: the last connection or socket error (negative), or 0. */
static PyObject *core_last_error(struct core *self, PyObject *unused)
{
    (void)unused;
    if (core_enter(self) < 0)
        return NULL;
    return PyLong_FromLong(sl_client_last_error(self->client));
}

static PyObject *core_get_closed(struct core *self, void *unused)
{
    (void)unused;
    return PyBool_FromLong(self->client == NULL);
}

static PyObject *core_get_memory(struct core *self, void *unused)
{
    (void)unused;
    return PyLong_FromLongLong(self->memory_bytes);
}

static PyMethodDef core_methods[] = {
    {"send", (PyCFunction)core_send, METH_VARARGS, "send(ids, values, times_us=None) -> (taken, rc) or NotImplemented"},
    {"flush", (PyCFunction)core_flush, METH_VARARGS, "flush(timeout_ms=-1) -> rc"},
    {"finish", (PyCFunction)core_finish, METH_VARARGS, "finish(timeout_ms=-1) -> rc"},
    {"push", (PyCFunction)core_push, METH_NOARGS, "push() -> rc"},
    {"counts", (PyCFunction)core_counts, METH_NOARGS, "counts() -> dict"},
    {"last_error", (PyCFunction)core_last_error, METH_NOARGS, "last_error() -> int"},
    {"close", (PyCFunction)core_close, METH_NOARGS, "close(): free everything, without waiting"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef core_getset[] = {
    {"closed", (getter)core_get_closed, NULL, "True after close()", NULL},
    {"memory_bytes", (getter)core_get_memory, NULL, "bytes the library allocated at open", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject core_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sluice._sluice.Core",
    .tp_basicsize = sizeof(struct core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One libsluice sender (sluice.Client wraps it).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)core_init,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_methods = core_methods,
    .tp_getset = core_getset,
};

/* ------------------------------------------------------------------ module */

static PyObject *module_strerror(PyObject *module, PyObject *args)
{
    (void)module;
    int code;
    if (!PyArg_ParseTuple(args, "i:strerror", &code))
        return NULL;
    return PyUnicode_FromString(sl_client_strerror(code));
}

static PyMethodDef module_methods[] = {
    {"strerror", module_strerror, METH_VARARGS, "strerror(code) -> the library's text for a code"},
    {"matches", module_matches, METH_VARARGS, "matches(obj, kind) -> would send read obj in place?"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "sluice._sluice", "The C extension of sluice over libsluice.", -1, module_methods,
};

static int add_int(PyObject *m, const char *name, long value)
{
    return PyModule_AddIntConstant(m, name, value);
}

PyMODINIT_FUNC PyInit__sluice(void)
{
    PyObject *errors = PyImport_ImportModule("sluice._errors");
    if (errors == NULL)
        return NULL;
    sluice_error = PyObject_GetAttrString(errors, "Error");
    sluice_argument_error = PyObject_GetAttrString(errors, "ArgumentError");
    Py_DECREF(errors);
    if (sluice_error == NULL || sluice_argument_error == NULL)
        return NULL;
    if (PyType_Ready(&core_type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    Py_INCREF(&core_type);
    if (PyModule_AddObject(m, "Core", (PyObject *)&core_type) < 0 ||
        add_int(m, "ETIMEDOUT", -ETIMEDOUT) < 0 || add_int(m, "EAGAIN", -EAGAIN) < 0 ||
        add_int(m, "EINVAL", -EINVAL) < 0 || add_int(m, "ETARGET", SL_CLIENT_ETARGET) < 0 ||
        add_int(m, "ERESOLVE", SL_CLIENT_ERESOLVE) < 0 || add_int(m, "EREFUSED", SL_CLIENT_EREFUSED) < 0 ||
        add_int(m, "EPROTOCOL", SL_CLIENT_EPROTOCOL) < 0 || add_int(m, "ECLOSED", SL_CLIENT_ECLOSED) < 0 ||
        add_int(m, "NO_ACK", SL_CLIENT_NO_ACK) < 0 || add_int(m, "NO_GSO", SL_CLIENT_NO_GSO) < 0 ||
        add_int(m, "FOREVER", SL_CLIENT_FOREVER) < 0 || add_int(m, "SLICE_MS", SLICE_MS) < 0 ||
        PyModule_AddStringConstant(m, "LIBRARY_VERSION", SL_CLIENT_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
