/*
 * firmware.runtime._udp: read every datagram queued on a UDP socket in one call.
 *
 * Why C (bench/README.md, "Third round"): the media thread drains a call's RTP socket once per
 * 20 ms tick. In Python that is a recvmsg() per datagram, the ancillary data parsed per
 * datagram, and one more recvmsg() that ends the loop by raising BlockingIOError - with cold
 * caches, about 80 us a tick. firmware/runtime/udp.py has the Python twin, used when this
 * module is not built; tests/unit/test_udp.py checks that both give the same results.
 *
 *   recv_datagrams(sock, max_count, bufsize) -> [(data, stamp, address), ...]
 *       reads what is queued on a non-blocking UDP socket (the object or its descriptor), at
 *       most max_count datagrams, each with its SO_TIMESTAMPNS kernel arrival time
 *       (CLOCK_REALTIME seconds, or None) and the sender's address as the socket module gives
 *       it (IPv6: host, port, flowinfo, scope id; the host without a %scope suffix); stops
 *       quietly at EAGAIN or any error (an ICMP error queued on the socket, a closed
 *       descriptor): the next tick reads on.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static PyObject *address_of(const struct sockaddr_storage *ss) {
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        if (!inet_ntop(AF_INET, &a->sin_addr, host, sizeof host)) return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, ntohs(a->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (!inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host)) return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(siII)", host, ntohs(a->sin6_port), (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

static PyObject *recv_datagrams(PyObject *self, PyObject *args) {
    PyObject *sock;
    int max_count;
    Py_ssize_t bufsize;
    if (!PyArg_ParseTuple(args, "Oin", &sock, &max_count, &bufsize)) return NULL;
    int fd = PyObject_AsFileDescriptor(sock); /* a socket object, or a descriptor number */
    if (fd < 0) return NULL;
    if (bufsize <= 0 || bufsize > 65536) {
        PyErr_SetString(PyExc_ValueError, "recv_datagrams: bufsize must be 1..65536");
        return NULL;
    }
    PyObject *result = PyList_New(0);
    if (result == NULL) return NULL;
    char *buf = PyMem_Malloc(bufsize);
    if (buf == NULL) {
        Py_DECREF(result);
        return PyErr_NoMemory();
    }
    for (int i = 0; i < max_count; i++) {
        struct sockaddr_storage from;
        union {
            struct cmsghdr align;
            char space[CMSG_SPACE(sizeof(struct timespec))];
        } control;
        struct iovec iov = {buf, (size_t)bufsize};
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_name = &from;
        msg.msg_namelen = sizeof from;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.space;
        msg.msg_controllen = sizeof control.space;
        ssize_t got;
        do { /* the GIL is kept: a non-blocking read returns at once */
            got = recvmsg(fd, &msg, MSG_DONTWAIT);
        } while (got < 0 && errno == EINTR);
        if (got < 0) break; /* EAGAIN: drained; anything else (ICMP errors): try next tick */
        PyObject *stamp = NULL;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS &&
                c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof ts);
                stamp = PyFloat_FromDouble((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
                break;
            }
        }
        if (stamp == NULL) stamp = Py_NewRef(Py_None);
        PyObject *address = address_of(&from);
        PyObject *data = PyBytes_FromStringAndSize(buf, got);
        PyObject *item = (address && data) ? PyTuple_Pack(3, data, stamp, address) : NULL;
        Py_XDECREF(data);
        Py_XDECREF(address);
        Py_DECREF(stamp);
        if (item == NULL || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(result);
            PyMem_Free(buf);
            return NULL;
        }
        Py_DECREF(item);
    }
    PyMem_Free(buf);
    return result;
}

static PyMethodDef methods[] = {
    {"recv_datagrams", recv_datagrams, METH_VARARGS,
     "Queued datagrams of a UDP socket as (data, kernel arrival time or None, address)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "firmware.runtime._udp", "Batch UDP receive (see firmware/runtime/udp.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__udp(void) { return PyModule_Create(&module); }
