# Included by the compiled wire modules (`include "flowslots.pxi"`), which cimport
# PyObject and import `Flow` (gateway.sip.flow) first.
#
# A `Flow`'s slots read and written where the instance keeps them, as its member
# descriptors do, rather than through the generic attribute look-up (several per
# registration); only for the Flow class itself (anything else, e.g. a test's stand-in,
# is asked by name).

from cpython.ref cimport Py_INCREF, Py_XDECREF

cdef extern from "structmember.h":  # (not included by Python.h before 3.12)
    ctypedef struct PyMemberDef:
        Py_ssize_t offset

cdef extern from "Python.h":
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member

cdef type _FLOW = Flow


cdef Py_ssize_t _slot_offset(type cls, str name) except -1:
    descr = cls.__dict__[name]
    if type(descr).__name__ != "member_descriptor":
        raise ImportError(f"{cls.__name__}.{name} is not a slot: the pure-Python twin is used")
    return (<PyMemberDescrObject *><PyObject *>descr).d_member.offset


cdef Py_ssize_t _CLOSED = _slot_offset(_FLOW, "closed")
cdef Py_ssize_t _CONNECTION = _slot_offset(_FLOW, "connection")
cdef Py_ssize_t _USERS = _slot_offset(_FLOW, "users")
cdef Py_ssize_t _OBSERVED = _slot_offset(_FLOW, "observed")
cdef Py_ssize_t _LAST_ACTIVITY = _slot_offset(_FLOW, "last_activity")


cdef inline PyObject *_slot(flow, Py_ssize_t offset) noexcept:
    """The slot's value (borrowed), NULL when `flow` is no Flow or the slot is unset."""
    if type(flow) is not _FLOW:
        return NULL
    return (<PyObject **>(<char *><PyObject *>flow + offset))[0]


cdef inline bint _closed(flow) except -1:
    """`flow.closed`."""
    cdef PyObject *value = _slot(flow, _CLOSED)
    if value == NULL:
        return bool(flow.closed)
    return value == <PyObject *>True or (value != <PyObject *>False and bool(<object>value))


cdef inline object _connection(flow):
    """`flow.connection`."""
    cdef PyObject *value = _slot(flow, _CONNECTION)
    return flow.connection if value == NULL else <object>value


cdef inline object _observed(flow):
    """`flow.observed`."""
    cdef PyObject *value = _slot(flow, _OBSERVED)
    return flow.observed if value == NULL else <object>value


cdef inline object _users(flow):
    """`flow.users`."""
    cdef PyObject *value = _slot(flow, _USERS)
    return flow.users if value == NULL else <object>value


cdef inline int _set_slot(flow, Py_ssize_t offset, str name, value) except -1:
    """`setattr(flow, name, value)`, where `offset` is the slot `name` of a Flow."""
    cdef PyObject **at
    cdef PyObject *old
    if type(flow) is not _FLOW:
        setattr(flow, name, value)
        return 0
    at = <PyObject **>(<char *><PyObject *>flow + offset)
    old = at[0]
    Py_INCREF(value)
    at[0] = <PyObject *>value
    Py_XDECREF(old)
    return 0
