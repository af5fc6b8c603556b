"""The ROS 2 type layer on Cyclone DDS, without rclpy: names, CDR payloads and topic types.

Why a module of its own: this is the part of the wire protocol of rmw_cyclonedds (DESIGN §4.8)
that says *what* goes on the wire, independent of how it is sent. It has no entities, threads or
QoS, and it is the part that depends on the exact cyclonedds binding version, so it is kept,
tested and pinned on its own; :mod:`pixelis_ros.ros.dds` (the transport) builds on it.

A ROS 2 topic ``/ns/name`` of type ``pkg/msg/Type`` is, on the DDS wire, the DDS topic
``rt/ns/name`` whose type is named ``pkg::msg::dds_::Type_`` and whose samples are plain CDR
(XCDR1, little endian: encapsulation ``00 01``). rmw_cyclonedds matches endpoints on that type
name (it announces no XTypes type information), so a Python process that uses the same names and
the same bytes is, to every ROS 2 node on the domain, just another node. The CDR comes from
``rosbags`` through :mod:`pixelis_ros.messages`, the one typestore the project uses.

How a ROS message reaches the wire (the choice, and why)
--------------------------------------------------------
The Cyclone DDS Python binding (``cyclonedds==11.0.1``, pinned: see below) takes a class
derived from ``IdlStruct`` as a topic's type. It uses that class for two separate things:

1. **Type description.** ``Topic`` builds XTypes type information from the class's annotations
   and its ``typename``; the C layer (``clayer/pysertype.c``) needs it: it compiles it into the
   CDR-stream description with which it *validates and normalizes every sample*, written or
   received, and it names the DDS type after it.
2. **(De)serialization.** ``DataWriter.write(sample)`` checks ``isinstance(sample, topic type)``
   and sends ``sample.serialize(use_version_2=...)`` (padded with zeros to 4 bytes);
   ``DataReader.take`` turns each received payload into ``topic type.deserialize(bytes)`` and
   attaches ``sample_info`` to it. These are ``IdlStruct``'s public methods.

A faithful ``IdlStruct`` serializes ``sequence<uint8>`` element by element in Python: ~30 ms for
a 640x480 image (DESIGN §6). Swapping one field's (de)serializer inside the binding's machinery
would be fast but reaches into ``idl/_machinery.py``. We do neither. For each ROS type we
generate (from rosbags' field definitions) an ``IdlStruct`` subclass whose **annotations are the
faithful ROS layout**, so the type name, the XTypes description and Cyclone's validation are
right, and whose ``serialize``/``deserialize`` are replaced so that an *instance only carries a
CDR payload*: ``serialize`` returns the bytes it was given, ``deserialize`` wraps the bytes it
receives. (The methods are set on each class, not inherited from a helper base: the binding
would describe a Python base class to XTypes as an IDL base struct.) The Python machinery never
runs on a sample; rosbags produces and consumes the bytes. The only binding behaviour this
relies on is the ``serialize``/``deserialize`` protocol of ``DataWriter.write``/``DataReader.take``
above; the tests pin it down byte for byte against rosbags' CDR, against the binding's own
faithful serializer (both directions) and through the ``cyclonedds`` CLI as a foreign peer.

What goes on the wire is exactly ``messages.serialize(msg)``: header ``00 01 00 00`` and
rosbags' CDR. DDSI wants payloads padded to a multiple of 4 bytes; when rosbags' CDR is not, we
append the 1-3 zero bytes and record their count in the low two bits of the encapsulation
options (header ``00 01 00 0p``), which is what Cyclone's C serializer does (XTypes 1.3
§7.6.3.1.2). Readers that ignore the options (rmw_cyclonedds, rosbags, the Python binding) stop
at the end of the struct; ours strip the padding, so a raw subscriber gets rosbags' bytes back
exactly. A 640x480 ``rgb8`` Image with a 6-character frame_id is already aligned (921652 bytes).

Cost. ``DdsPublisher.publish`` has rosbags serialize straight into a padded payload buffer that the publisher
reuses while the size stays the same (``serialize_padded``, through rosbags' public ``Msgdef``
interface, ~0.03 ms for a 640x480 image), and that buffer's ``ljust`` returns itself, so
``DataWriter.write`` hands it to Cyclone without a copy; Cyclone copies it once. This matters
more than the copy suggests: an extra transient ~1 MB buffer per message (``bytes`` of rosbags'
output) made glibc return and re-fault heap pages, ~400 page faults or ~0.9 ms per image, and
halved the cross-process frame rate. Receiving, the C layer copies each payload into a Python
``bytes`` and rosbags deserializes it with ``data`` as a view (~0.05 ms). Figures from
``python -m pixelis_ros.ros.bench_dds`` are in its module docstring.

XTypes and real ROS peers
-------------------------
Our endpoints announce XTypes type information (the binding always does; the C layer cannot
validate without it). A peer that announces none, as rmw_cyclonedds does, is matched on the type
name alone, so the name must be exact: ``dds_type_name`` builds it the way rosidl does. Between
two processes of ours both sides carry the same description and match as assignable.

Version pin
-----------
``cyclonedds==11.0.1`` is the version the ``serialize``/``deserialize`` protocol was checked
against (``tests/test_dds_types.py``, ``tests/test_dds_transport.py``); ``CYCLONEDDS_VERSION``
records it, the ``dds`` extra (``pixelis_ros/extras.py``) pins it exactly, and a different
version logs a warning when the first DDS type is made.

This module imports without ROS and without cyclonedds; the binding is imported when a DDS type
is first made.
"""

from __future__ import annotations

import functools
import logging
import struct
import threading
from typing import Any

import numpy as np

from pixelis_ros import messages

log = logging.getLogger(__name__)

CYCLONEDDS_VERSION = "11.0.1"
"""The cyclonedds Python binding version whose (de)serialization protocol this module relies on."""

ROS_TOPIC_PREFIX = "rt/"
REQUEST, REPLY = "request", "reply"
"""Wire kinds of ``dds_topic_name`` and ``dds_type`` besides plain topics: a service's two topics."""
_SERVICE_WIRE = {REQUEST: ("rq/", "Request"), REPLY: ("rr/", "Reply")}
REQUEST_HEADER = struct.Struct("<Qq")
"""rmw_cyclonedds' request header (``cdds_request_header_t``), before the request's or reply's
fields: the client's 64-bit id and the request's sequence number; a server echoes both."""


class DdsError(RuntimeError):
    """A DDS operation failed (entity creation, write, a type that cannot be mapped)."""


class CdrError(DdsError, ValueError):
    """A message could not be turned into CDR, or CDR bytes were refused or unreadable."""


# ---------------------------------------------------------------------------------------------
# ROS 2 names on the DDS wire


def dds_topic_name(topic: str, wire: str = "topic") -> str:
    """ROS 2 topic name -> DDS topic name: ``/image`` and ``image`` -> ``rt/image``,
    ``/ns/image`` -> ``rt/ns/image`` (names without a node namespace resolve against ``/``).
    A service ``/ns/srv`` travels on ``rq/ns/srvRequest`` (``wire=REQUEST``) and
    ``rr/ns/srvReply`` (``wire=REPLY``), as rmw_cyclonedds names them."""
    name = topic[1:] if topic.startswith("/") else topic
    if not name or name.endswith("/") or "//" in name or "~" in name or any(c.isspace() for c in name):
        raise ValueError(f"not a valid absolute ROS 2 topic name: {topic!r}")
    if wire in _SERVICE_WIRE:
        prefix, suffix = _SERVICE_WIRE[wire]
        return prefix + name + suffix
    return ROS_TOPIC_PREFIX + name


def ros_type_name(type_name: str) -> str:
    """Normalize ``pkg/Type`` or ``pkg/msg/Type`` to rosbags' ``pkg/msg/Type`` (``pkg/srv/...`` and
    ``pkg/action/...`` stay as they are)."""
    parts = type_name.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"not a ROS 2 message type name: {type_name!r} (want pkg/msg/Type)")
    return "/".join(parts)


def dds_type_name(type_name: str) -> str:
    """``sensor_msgs/msg/Image`` -> ``sensor_msgs::msg::dds_::Image_`` (rosidl's DDS name)."""
    pkg, kind, name = ros_type_name(type_name).split("/")
    return f"{pkg}::{kind}::dds_::{name}_"


# ---------------------------------------------------------------------------------------------
# CDR payload framing


def pad_payload(cdr: bytes) -> bytes:
    """Pad CDR to a multiple of 4 bytes, recording the count in the encapsulation options."""
    pad = -len(cdr) % 4
    if not pad:
        return cdr
    return b"".join((cdr[:3], bytes((cdr[3] | pad,)), cdr[4:], b"\0" * pad))


def unpad_payload(data: bytes) -> bytes:
    """Inverse of ``pad_payload``: drop the padding the options announce and clear them."""
    if len(data) < 4:
        return data
    pad = data[3] & 3
    if not pad or len(data) < 4 + pad:
        return data
    return b"".join((data[:3], bytes((data[3] & ~3,)), data[4:len(data) - pad]))


class PaddedPayload(bytearray):
    """A padded CDR payload on its way into ``DataWriter.write``, which pads what ``serialize``
    returns with ``ljust``: this one is padded already, so ``ljust`` hands it over as it is
    instead of copying ~1 MB (a copy of that size costs more in page faults than in bytes)."""

    def ljust(self, width, fillchar=b"\0"):  # noqa: D102
        return self if width <= len(self) else bytearray(self).ljust(width, fillchar)


def serialize_padded(msg: Any, type_name: str, reuse: PaddedPayload | None = None) -> PaddedPayload:
    """``pad_payload(messages.serialize(msg))`` (little endian) without an intermediate copy:
    rosbags serializes into the payload buffer through its ``Msgdef`` interface, as
    ``Typestore.serialize_cdr`` does into a buffer of its own. ``reuse`` is taken when it has
    the right size (a camera's frames all do), so a stream allocates nothing per message."""
    store = messages.typestore()
    msgdef = store.get_msgdef(type_name)
    size = 4 + msgdef.getsize_cdr(0, msg, store)
    pad = -size % 4
    if reuse is not None and len(reuse) == size + pad:
        payload = reuse
        np.frombuffer(payload, np.uint8).fill(0)  # rosbags leaves NULs and alignment gaps unwritten
    else:
        payload = PaddedPayload(size + pad)
    payload[0:4] = bytes((0, 1, 0, pad))  # CDR_LE, options = padding count (XTypes 7.6.3.1.2)
    end = msgdef.serialize_cdr_le(memoryview(payload)[4:], 0, msg, store)
    if end + 4 != size:
        raise CdrError(f"{type_name}: rosbags wrote {end + 4} bytes, announced {size}")
    return payload


# ---------------------------------------------------------------------------------------------
# DDS types: faithful layout for Cyclone, rosbags bytes on the wire

@functools.lru_cache(maxsize=1)
def check_binding_version() -> str:
    import cyclonedds

    version = getattr(cyclonedds, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as dist_version
            version = dist_version("cyclonedds")
        except Exception:  # noqa: BLE001 - only for the warning below
            version = "unknown"
    if version != CYCLONEDDS_VERSION:
        log.warning("cyclonedds %s found; the CDR carrier was checked against %s", version, CYCLONEDDS_VERSION)
    return version


class _CdrCarrier:
    """The methods that make an ``IdlStruct`` subclass carry CDR bytes instead of fields.

    They are copied onto each generated class rather than inherited: the binding describes a
    struct's first base class to XTypes as its IDL base struct, so the ROS type must derive
    from ``IdlStruct`` directly.
    """

    def __init__(self, cdr: bytes) -> None:
        self.cdr = cdr

    def serialize(self, buffer=None, endianness=None, use_version_2=None) -> bytes:  # noqa: ARG002
        return self.cdr

    @classmethod
    def deserialize(cls, data, has_header=True, use_version_2=None):  # noqa: ARG003
        return cls(data)

    @classmethod
    def deserialize_key(cls, data, has_header=True, use_version_2=None):  # noqa: ARG003
        return cls(b"")  # ROS 2 types are keyless: a key sample holds nothing

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.cdr)} bytes of CDR)"


def _install_carrier(cls: type) -> type:
    for name in ("__init__", "serialize", "deserialize", "deserialize_key", "__repr__"):
        setattr(cls, name, _CdrCarrier.__dict__[name])
    return cls


_type_lock = threading.RLock()
_types: dict[str, type] = {}


def dds_type(type_name: str, request_header: bool = False) -> type:
    """The Cyclone topic type for a ROS message type (cached; one class per type per process).

    Its annotations mirror the ROS definition (rosidl's IDL mapping: ``byte`` is ``octet``,
    ``char`` is ``uint8``, ``T[N]`` an array, ``T[]``/``T[<=N]`` a sequence, ``string<=N`` a
    bounded string), nested types get their own ``pkg::msg::dds_::Type_`` names; instances carry
    CDR bytes (see the module docstring). ``request_header``: a service's request or reply type,
    whose samples start with ``REQUEST_HEADER`` (Cyclone validates them with it).
    """
    from cyclonedds.idl import make_idl_struct, types
    from rosbags.interfaces import Nodetype

    check_binding_version()  # the carrier below relies on this binding's (de)serialization calls

    base_map = {"bool": bool, "byte": types.byte, "char": types.uint8, "int8": types.int8,
                "uint8": types.uint8, "int16": types.int16, "uint16": types.uint16,
                "int32": types.int32, "uint32": types.uint32, "int64": types.int64,
                "uint64": types.uint64, "float32": types.float32, "float64": types.float64}
    store = messages.typestore()

    def field_type(node, owner: str):
        kind, arg = node
        if kind == Nodetype.BASE:
            name, bound = arg
            if name == "string":
                return types.bounded_str[bound] if bound else str
            if name not in base_map:
                raise DdsError(f"{owner}: field type {name!r} has no DDS mapping here")
            return base_map[name]
        if kind == Nodetype.NAME:
            return build(arg)
        if kind == Nodetype.ARRAY:
            return types.array[field_type(arg[0], owner), arg[1]]
        if kind == Nodetype.SEQUENCE:
            inner = field_type(arg[0], owner)
            return types.sequence[inner, arg[1]] if arg[1] else types.sequence[inner]
        raise DdsError(f"{owner}: unknown field node {node!r}")

    def build(name: str, header: bool = False) -> type:
        name = ros_type_name(name)
        cls = _types.get(name)
        if cls is not None:
            return cls
        if name not in store.fielddefs:
            raise DdsError(f"unknown message type {name!r} (not in the rosbags typestore)")
        _, fields = store.fielddefs[name]
        annotations = {"client_guid_": types.uint64, "sequence_number_": types.int64} if header else {}
        annotations.update((fname, field_type(node, name)) for fname, node in fields)
        cls = _install_carrier(make_idl_struct(name.replace("/", "__"), dds_type_name(name), annotations,
                                               dataclassify=False))
        cls.ros_type_name = name
        _types[name] = cls
        return cls

    with _type_lock:
        # A service type is only ever a request/reply (with its header), never a plain topic,
        # so one cache entry per name suffices.
        return build(type_name, request_header)
