/* A relay's steady state on a thread of its own, in C, as stunnel relays every connection.
 *
 * `_splice.py` relays between a TLS connection and a plain socket on the event loop.  When a
 * relay is steady (both sides only waiting for bytes, nothing pending, no end of stream seen)
 * it starts a `Relay` here: a thread that polls the two sockets and moves the bytes through
 * the very OpenSSL objects Python's ssl made for the connection (its SSL and memory BIOs):
 * read, decrypt or encrypt a BIO slice at a time, send; what a socket could not take waits in
 * the thread's own buffer until it can.  No GIL, no interpreter: this is what takes a 64-byte
 * round trip through a relay pair below stunnel's, and each connection gets a core of its own.
 *
 * Anything else ends the thread at a clean point, with what it holds: end of stream (FIN or
 * close_notify), a record that needs an answer (KeyUpdate), an error, or the loop asking it to
 * stop.  The thread then calls `notify` (with the GIL), and the loop takes the relay back with
 * `stop()`: the reason, and the bytes decrypted or encrypted but not yet sent, which
 * `_splice.py` handles as it always has.  Between `start()` and `stop()` only the thread
 * touches the SSL and the two sockets; the loop reads only the byte counters.
 *
 * No OpenSSL headers and no link against OpenSSL: the few functions used are looked up through
 * `_ssl`'s own handle (the library Python's ssl runs on, never another), and a Relay refuses to
 * exist unless the SSL it reads out of the SSLObject is the one whose context and BIOs Python
 * says it has.  Where anything does not match, the relay stays on the loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct bio_st BIO;

#define SSL_ERROR_WANT_READ 2
#define SSL_ERROR_SYSCALL 5
#define SSL_ERROR_ZERO_RETURN 6

static int (*p_SSL_read)(SSL *, void *, int);
static int (*p_SSL_write)(SSL *, const void *, int);
static int (*p_SSL_get_error)(const SSL *, int);
static int (*p_SSL_pending)(const SSL *);
static BIO *(*p_SSL_get_rbio)(const SSL *);
static BIO *(*p_SSL_get_wbio)(const SSL *);
static SSL_CTX *(*p_SSL_get_SSL_CTX)(const SSL *);
static int (*p_BIO_write)(BIO *, const void *, int);
static int (*p_BIO_read)(BIO *, void *, int);
static size_t (*p_BIO_ctrl_pending)(BIO *);
static unsigned long (*p_ERR_get_error)(void);
static void (*p_ERR_clear_error)(void);
static const char *(*p_ERR_lib_error_string)(unsigned long);
static const char *(*p_ERR_reason_error_string)(unsigned long);

/* Why a thread ended: the first item of what stop() returns (see _crelay.pyi). */
enum {
    END_STOPPED = 0,     /* the loop asked */
    END_TLS_FIN = 1,     /* FIN from the TLS peer */
    END_PLAIN_FIN = 2,   /* FIN from the plain peer */
    END_DECRYPTED = 3,   /* close_notify, a record to answer, or more than fits: the loop goes on */
    END_TLS_ERROR = 4,   /* OpenSSL refused the bytes */
    END_TLS_RESET = 5,   /* reading from or sending to the TLS socket failed */
    END_PLAIN_RESET = 6, /* reading from or sending to the plain socket failed */
    END_FAILED = 7,      /* the thread itself could not go on (poll failed) */
};

/* Buffers are mapped, not malloc'd: untouched pages cost nothing, and an idle relay gives its
 * pages back (MADV_DONTNEED) after IDLE_MS without traffic. */
#define IDLE_MS 1000

typedef struct {
    PyObject_HEAD
    PyObject *sslobj; /* keeps the SSL and its BIOs alive */
    PyObject *notify; /* called, with the GIL, when the thread ends by itself */
    SSL *ssl;
    BIO *rbio;
    BIO *wbio;
    int tfd;
    int pfd;
    int ctl; /* eventfd: the loop asks the thread to stop */
    Py_ssize_t size;   /* of each buffer */
    Py_ssize_t slice;  /* what goes into a BIO, or through SSL_write, at a time */
    Py_ssize_t record; /* room one TLS record needs */
    char *rbuf;        /* what a recv got */
    char *abuf;        /* plaintext for the plain peer */
    char *bbuf;        /* records for the TLS peer */
    pthread_t thread;
    int running; /* started and not yet stopped (the loop's view) */
    unsigned long long a_to_b; /* bytes sent to the plain peer (thread adds, anyone reads) */
    unsigned long long b_to_a; /* bytes from the plain peer, encrypted */
    /* The thread's state, and what it leaves for stop(). */
    Py_ssize_t a_off, a_end; /* abuf[a_off:a_end]: plaintext the plain peer has not taken */
    Py_ssize_t b_off, b_end; /* bbuf[b_off:b_end]: records the TLS peer has not taken */
    int end;
    int err;       /* errno, for the resets */
    int eof;       /* END_DECRYPTED: close_notify came; END_TLS_ERROR: EOF inside TLS */
    char lib[64];
    char reason[128];
} Relay;

static int resolve(void) {
    PyObject *mod = PyImport_ImportModule("_ssl");
    if (mod == NULL)
        return -1;
    PyObject *file = PyObject_GetAttrString(mod, "__file__");
    Py_DECREF(mod);
    if (file == NULL)
        return -1;
    const char *path = PyUnicode_AsUTF8(file);
    if (path == NULL) {
        Py_DECREF(file);
        return -1;
    }
    /* _ssl is loaded already: this only finds its handle, and dlsym looks in what it links. */
    void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    Py_DECREF(file);
    if (lib == NULL) {
        PyErr_SetString(PyExc_ImportError, "the _ssl module's library cannot be reached");
        return -1;
    }
#define FIND(name)                                                                          \
    do {                                                                                    \
        *(void **)(&p_##name) = dlsym(lib, #name);                                          \
        if (p_##name == NULL) {                                                             \
            PyErr_SetString(PyExc_ImportError, "OpenSSL has no " #name);                    \
            return -1;                                                                      \
        }                                                                                   \
    } while (0)
    FIND(SSL_read);
    FIND(SSL_write);
    FIND(SSL_get_error);
    FIND(SSL_pending);
    FIND(SSL_get_rbio);
    FIND(SSL_get_wbio);
    FIND(SSL_get_SSL_CTX);
    FIND(BIO_write);
    FIND(BIO_read);
    FIND(BIO_ctrl_pending);
    FIND(ERR_get_error);
    FIND(ERR_clear_error);
    FIND(ERR_lib_error_string);
    FIND(ERR_reason_error_string);
#undef FIND
    return 0;
}

/* The pointer CPython's _ssl object holds right after its header (and `skip` fields). */
static void *field(PyObject *obj, const char *type_name, Py_ssize_t skip) {
    PyTypeObject *tp = Py_TYPE(obj);
    for (; tp != NULL; tp = tp->tp_base)
        if (strcmp(tp->tp_name, type_name) == 0)
            break;
    if (tp == NULL ||
        tp->tp_basicsize < (Py_ssize_t)(sizeof(PyObject) + (size_t)(skip + 1) * sizeof(void *)))
        return NULL;
    return *(void **)((char *)obj + sizeof(PyObject) + (size_t)skip * sizeof(void *));
}

static void unmap(Relay *self) {
    char **bufs[] = {&self->rbuf, &self->abuf, &self->bbuf};
    for (size_t i = 0; i < 3; i++) {
        if (*bufs[i] != NULL)
            munmap(*bufs[i], (size_t)self->size);
        *bufs[i] = NULL;
    }
}

/* Never while a thread runs: the thread holds a reference until stop() collects it. */
static void Relay_dealloc(Relay *self) {
    unmap(self);
    if (self->ctl >= 0)
        close(self->ctl);
    Py_XDECREF(self->sslobj);
    Py_XDECREF(self->notify);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Relay_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds)) {
    Relay *self = (Relay *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->ctl = -1;
    return (PyObject *)self;
}

static int Relay_init(Relay *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sslobj", "context", "incoming", "outgoing", "tls_fd", "plain_fd",
                             "size", "slice", "record", "notify", NULL};
    PyObject *sslobj, *context, *incoming, *outgoing, *notify;
    int tfd, pfd;
    Py_ssize_t size, slice, record;
    if (self->sslobj != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Relay is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOiinnnO", kwlist, &sslobj, &context,
                                     &incoming, &outgoing, &tfd, &pfd, &size, &slice, &record,
                                     &notify))
        return -1;
    /* PySSLSocket: header, the socket weakref, then `SSL *ssl` (Modules/_ssl.c). */
    SSL *ssl = field(sslobj, "_ssl._SSLSocket", 1);
    /* PySSLContext: header, then `SSL_CTX *ctx`; PySSLMemoryBIO: header, then `BIO *bio`. */
    SSL_CTX *ctx = field(context, "_ssl._SSLContext", 0);
    BIO *rbio = field(incoming, "_ssl.MemoryBIO", 0);
    BIO *wbio = field(outgoing, "_ssl.MemoryBIO", 0);
    if (ssl == NULL || ctx == NULL || rbio == NULL || wbio == NULL ||
        p_SSL_get_SSL_CTX(ssl) != ctx || p_SSL_get_rbio(ssl) != rbio ||
        p_SSL_get_wbio(ssl) != wbio) {
        PyErr_SetString(PyExc_ValueError,
                        "not the SSL object of that context and those BIOs (another _ssl layout)");
        return -1;
    }
    if (tfd < 0 || pfd < 0 || slice <= 0 || slice > INT_MAX || record <= 0 ||
        size < 4 * record || size < 2 * slice || size > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "bad descriptor or size");
        return -1;
    }
    if (!PyCallable_Check(notify)) {
        PyErr_SetString(PyExc_TypeError, "notify must be callable");
        return -1;
    }
    self->ctl = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (self->ctl < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    Py_INCREF(sslobj);
    self->sslobj = sslobj;
    Py_INCREF(notify);
    self->notify = notify;
    self->ssl = ssl;
    self->rbio = rbio;
    self->wbio = wbio;
    self->tfd = tfd;
    self->pfd = pfd;
    self->size = size;
    self->slice = slice;
    self->record = record;
    return 0;
}

/* -- the thread ------------------------------------------------------------------------ */

/* OpenSSL's first queued error, as (library, reason) in the words Python's ssl uses
 * ("SSL", "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"); the queue is left empty. */
static int tls_failed(Relay *self, int ssl_error) {
    unsigned long code = p_ERR_get_error();
    p_ERR_clear_error();
    const char *lib = code ? p_ERR_lib_error_string(code) : NULL;
    const char *reason = code ? p_ERR_reason_error_string(code) : NULL;
    snprintf(self->lib, sizeof(self->lib), "%s", lib != NULL ? lib : "");
    size_t i = 0;
    if (reason != NULL) {
        for (; reason[i] != '\0' && i < sizeof(self->reason) - 1; i++) {
            char c = reason[i];
            self->reason[i] = (c == ' ') ? '_' : (char)((c >= 'a' && c <= 'z') ? c - 32 : c);
        }
    }
    self->reason[i] = '\0';
    self->eof = (ssl_error == SSL_ERROR_SYSCALL);
    return END_TLS_ERROR;
}

static int would_block(int err) {
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* Read what `fd` has into rbuf (at most `want`): the bytes read, 0 when there was nothing, or
 * minus the END_ for this side (`fin` for a FIN, `reset` for an error). */
static ssize_t take(Relay *self, int fd, size_t want, int reset, int fin) {
    ssize_t got = recv(fd, self->rbuf, want, 0);
    if (got > 0)
        return got;
    if (got == 0)
        return -fin;
    if (would_block(errno))
        return 0;
    self->err = errno;
    return -reset;
}

/* Send what waits in buf[*off:end]; 0 when sent or waiting, else the END_ for this side. */
static int flush(int fd, const char *buf, Py_ssize_t *off, Py_ssize_t end, int reset,
                 Relay *self, unsigned long long *count) {
    while (*off < end) {
        ssize_t sent = send(fd, buf + *off, (size_t)(end - *off), MSG_NOSIGNAL);
        if (sent < 0) {
            if (would_block(errno))
                return 0;
            self->err = errno;
            return reset;
        }
        *off += sent;
        if (count != NULL)
            __atomic_add_fetch(count, (unsigned long long)sent, __ATOMIC_RELAXED);
    }
    return 0;
}

/* TLS readable: read, decrypt a slice at a time, send the plaintext on. */
static int tls_in(Relay *self) {
    ssize_t got = take(self, self->tfd, (size_t)(self->size - 3 * self->record), END_TLS_RESET,
                       END_TLS_FIN);
    if (got <= 0)
        return (int)-got;
    Py_ssize_t room = self->size - self->record;
    Py_ssize_t n = 0;
    p_ERR_clear_error();
    for (Py_ssize_t off = 0; off < got; off += self->slice) {
        int len = (int)((got - off < self->slice) ? got - off : self->slice);
        if (p_BIO_write(self->rbio, self->rbuf + off, len) != len) {
            self->err = ENOMEM;
            return END_FAILED;
        }
        while (n <= room) {
            int r = p_SSL_read(self->ssl, self->abuf + n, (int)self->record);
            if (r > 0) {
                n += r;
                continue;
            }
            int e = p_SSL_get_error(self->ssl, r);
            if (e == SSL_ERROR_WANT_READ)
                break;
            self->a_off = 0;
            self->a_end = n;
            if (e == SSL_ERROR_ZERO_RETURN) {
                self->eof = 1;
                return END_DECRYPTED;
            }
            return tls_failed(self, e);
        }
    }
    self->a_off = 0;
    self->a_end = n;
    if (p_BIO_ctrl_pending(self->wbio) || p_BIO_ctrl_pending(self->rbio) ||
        p_SSL_pending(self->ssl))
        return END_DECRYPTED; /* the loop sends it, and answers or reads on */
    return flush(self->pfd, self->abuf, &self->a_off, self->a_end, END_PLAIN_RESET, self,
                 &self->a_to_b);
}

/* Plain readable: read, encrypt a slice at a time, send the records on. */
static int plain_in(Relay *self) {
    /* Records add some 22 bytes to each 16 KiB: what is read must fit the buffer encrypted. */
    ssize_t got = take(self, self->pfd, (size_t)(self->size - 2 * self->record),
                       END_PLAIN_RESET, END_PLAIN_FIN);
    if (got <= 0)
        return (int)-got;
    Py_ssize_t total = 0;
    p_ERR_clear_error();
    for (Py_ssize_t off = 0; off < got; off += self->slice) {
        int len = (int)((got - off < self->slice) ? got - off : self->slice);
        int r = p_SSL_write(self->ssl, self->rbuf + off, len);
        if (r <= 0)
            return tls_failed(self, p_SSL_get_error(self->ssl, r));
        /* Out of the BIO after each slice: it never holds more than one slice's records. */
        size_t pending = p_BIO_ctrl_pending(self->wbio);
        if (pending > (size_t)(self->size - total)) {
            self->err = ENOBUFS; /* cannot happen: what is read leaves room for the records */
            return END_FAILED;
        }
        int took = p_BIO_read(self->wbio, self->bbuf + total, (int)pending);
        if (took > 0)
            total += took;
    }
    __atomic_add_fetch(&self->b_to_a, (unsigned long long)got, __ATOMIC_RELAXED);
    self->b_off = 0;
    self->b_end = total;
    return flush(self->tfd, self->bbuf, &self->b_off, self->b_end, END_TLS_RESET, self, NULL);
}

static void *run(void *arg) {
    Relay *self = arg;
    int end = 0;
    int dirty = 0; /* the buffers hold pages since the last time they were given back */
    while (!end) {
        int a_wait = self->a_off < self->a_end; /* plaintext waits for the plain peer */
        int b_wait = self->b_off < self->b_end; /* records wait for the TLS peer */
        /* A side waited on for nothing is left out (fd -1): its hangup would spin the poll. */
        struct pollfd fds[3] = {
            {.fd = self->tfd, .events = (short)((a_wait ? 0 : POLLIN) | (b_wait ? POLLOUT : 0))},
            {.fd = self->pfd, .events = (short)((b_wait ? 0 : POLLIN) | (a_wait ? POLLOUT : 0))},
            {.fd = self->ctl, .events = POLLIN},
        };
        if (fds[0].events == 0)
            fds[0].fd = -1;
        if (fds[1].events == 0)
            fds[1].fd = -1;
        int ready = poll(fds, 3, dirty ? IDLE_MS : -1);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            self->err = errno;
            end = END_FAILED;
            break;
        }
        if (ready == 0) { /* a quiet second: give the buffers' pages back */
            if (!a_wait && !b_wait) {
                madvise(self->rbuf, (size_t)self->size, MADV_DONTNEED);
                madvise(self->abuf, (size_t)self->size, MADV_DONTNEED);
                madvise(self->bbuf, (size_t)self->size, MADV_DONTNEED);
                dirty = 0;
            }
            continue;
        }
        if (fds[2].revents) {
            end = END_STOPPED;
            break;
        }
        dirty = 1;
        short t = fds[0].revents, p = fds[1].revents;
        const short out = POLLOUT | POLLHUP | POLLERR, in = POLLIN | POLLHUP | POLLERR;
        if (a_wait && (p & out))
            end = flush(self->pfd, self->abuf, &self->a_off, self->a_end, END_PLAIN_RESET, self,
                        &self->a_to_b);
        if (!end && b_wait && (t & out))
            end = flush(self->tfd, self->bbuf, &self->b_off, self->b_end, END_TLS_RESET, self,
                        NULL);
        if (!end && !a_wait && (t & in))
            end = tls_in(self);
        if (!end && !b_wait && (p & in))
            end = plain_in(self);
    }
    self->end = end;
    if (end != END_STOPPED) {
        PyGILState_STATE gil = PyGILState_Ensure();
        PyObject *got = PyObject_CallNoArgs(self->notify);
        if (got == NULL)
            PyErr_WriteUnraisable(self->notify);
        Py_XDECREF(got);
        PyGILState_Release(gil);
    }
    return NULL;
}

/* -- what the loop calls ------------------------------------------------------------------ */

static PyObject *Relay_start(Relay *self, PyObject *Py_UNUSED(ignored)) {
    if (self->sslobj == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Relay is not initialised");
        return NULL;
    }
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError, "Relay is running already");
        return NULL;
    }
    if (self->rbuf == NULL) {
        char **bufs[] = {&self->rbuf, &self->abuf, &self->bbuf};
        for (size_t i = 0; i < 3; i++) {
            void *m = mmap(NULL, (size_t)self->size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) {
                unmap(self);
                return PyErr_SetFromErrno(PyExc_OSError);
            }
            *bufs[i] = m;
        }
    }
    uint64_t drained;
    while (read(self->ctl, &drained, sizeof(drained)) > 0) /* a stop asked of an earlier run */
        ;
    self->a_off = self->a_end = self->b_off = self->b_end = 0;
    self->end = self->err = self->eof = 0;
    self->lib[0] = self->reason[0] = '\0';
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* OpenSSL's record functions, and the notify call into Python when the thread ends. */
    pthread_attr_setstacksize(&attr, 512 * 1024);
    /* Signals are Python's, for its own threads: the thread starts with all of them blocked
     * (it inherits this mask), and this thread's mask is put back. */
    sigset_t all, before;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &before);
    int failed = pthread_create(&self->thread, &attr, run, self);
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    pthread_attr_destroy(&attr);
    if (failed) {
        errno = failed;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_INCREF(self); /* the thread's reference, dropped by stop() */
    self->running = 1;
    Py_RETURN_NONE;
}

static PyObject *Relay_stop(Relay *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->running)
        Py_RETURN_NONE;
    uint64_t one = 1;
    if (write(self->ctl, &one, sizeof(one)) < 0 && errno != EAGAIN)
        return PyErr_SetFromErrno(PyExc_OSError);
    int failed;
    Py_BEGIN_ALLOW_THREADS /* the thread may be waiting for the GIL to notify */
    failed = pthread_join(self->thread, NULL);
    Py_END_ALLOW_THREADS
    self->running = 0;
    if (failed) {
        errno = failed;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *a_left = PyBytes_FromStringAndSize(self->abuf + self->a_off,
                                                 self->a_end - self->a_off);
    PyObject *b_left = PyBytes_FromStringAndSize(self->bbuf + self->b_off,
                                                 self->b_end - self->b_off);
    PyObject *got = NULL;
    if (a_left != NULL && b_left != NULL)
        got = Py_BuildValue("(iiOssOO)", self->end, self->err, self->eof ? Py_True : Py_False,
                            self->lib, self->reason, a_left, b_left);
    Py_XDECREF(a_left);
    Py_XDECREF(b_left);
    Py_DECREF(self); /* the thread's */
    return got;
}

static PyObject *Relay_counts(Relay *self, void *Py_UNUSED(closure)) {
    return Py_BuildValue("(KK)", __atomic_load_n(&self->a_to_b, __ATOMIC_RELAXED),
                         __atomic_load_n(&self->b_to_a, __ATOMIC_RELAXED));
}

static PyObject *Relay_running(Relay *self, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(self->running);
}

static PyMethodDef Relay_methods[] = {
    {"start", (PyCFunction)Relay_start, METH_NOARGS,
     "Start the thread: from now on only it reads and writes the sockets and the SSL."},
    {"stop", (PyCFunction)Relay_stop, METH_NOARGS,
     "Stop the thread (or collect one that ended by itself) and say why and what it left: "
     "(end, errno, eof, library, reason, plaintext left, records left); None if not running."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Relay_getset[] = {
    {"counts", (getter)Relay_counts, NULL,
     "(bytes sent to the plain peer, bytes from it encrypted) by the thread, over all runs", NULL},
    {"running", (getter)Relay_running, NULL, "started and not yet stopped", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RelayType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "paraconnect.tunnel._crelay.Relay",
    .tp_basicsize = sizeof(Relay),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A relay's steady state on a thread of its own, in C (see _crelay.c).",
    .tp_new = Relay_new,
    .tp_init = (initproc)Relay_init,
    .tp_dealloc = (destructor)Relay_dealloc,
    .tp_methods = Relay_methods,
    .tp_getset = Relay_getset,
};

static struct PyModuleDef crelay_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_crelay",
    .m_doc = "A relay's steady state on a thread of its own, in C (see _crelay.c).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__crelay(void) {
    if (resolve() < 0)
        return NULL;
    if (PyType_Ready(&RelayType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&crelay_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RelayType);
    if (PyModule_AddObject(m, "Relay", (PyObject *)&RelayType) < 0) {
        Py_DECREF(&RelayType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
