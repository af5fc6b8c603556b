"""ROS 2 services over Cyclone DDS without rclpy, as rmw_cyclonedds puts them on the wire.

A service ``/ns/name`` of type ``pkg/srv/T`` is two DDS topics: requests on
``rq/ns/nameRequest`` (type ``pkg::srv::dds_::T_Request_``) and replies on ``rr/ns/nameReply``
(``pkg::srv::dds_::T_Response_``). Each sample is the request's or response's CDR with
rmw_cyclonedds' 16-byte header in front of its fields (``dds_types.REQUEST_HEADER``): the
client's 64-bit id and a sequence number. A server echoes both into the reply; a client keeps
the replies that carry its id. The header is 8-byte aligned, so the fields after it keep the
alignment they have in a message of their own: the bytes are rosbags' CDR with the header
spliced in after the encapsulation.

Used for the ``Ask`` action's ``send_goal``, ``get_result`` and ``cancel_goal`` services
(``dds_action``). QoS is rmw's services default (reliable, volatile, keep last 10).
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from typing import Any, Callable

from pixelis_ros import messages
from pixelis_ros.ros import dds
from pixelis_ros.ros.dds_types import REPLY, REQUEST, REQUEST_HEADER, CdrError

log = logging.getLogger(__name__)

SERVICES = dds.DEFAULT
_CDR_HEADER = 4  # the encapsulation: 00 01 00 0p


def _frame(guid: int, seq: int, msg) -> bytes:
    cdr = messages.serialize(msg)
    return cdr[:_CDR_HEADER] + REQUEST_HEADER.pack(guid, seq) + cdr[_CDR_HEADER:]


def _unframe(cdr: bytes, type_name: str) -> tuple[int, int, Any]:
    end = _CDR_HEADER + REQUEST_HEADER.size
    if len(cdr) < end:
        raise CdrError(f"a {type_name} of {len(cdr)} bytes has no request header")
    guid, seq = REQUEST_HEADER.unpack_from(cdr, _CDR_HEADER)
    # The options' padding count is for the whole sample; rosbags reads up to the struct's end.
    return guid, seq, messages.deserialize(cdr[:_CDR_HEADER] + cdr[end:], type_name)


class DdsServiceServer:
    """Serves ``handler(request) -> response | None`` on a service. ``None`` defers the reply:
    keep the ``Pending`` the handler was given and ``reply`` later (an action's get_result
    answers when the goal ends). Handlers run on the transport's dispatcher thread; one that
    raises is logged and the request gets no reply (as an rclpy service callback that fails)."""

    def __init__(self, transport: dds.DdsTransport, name: str, srv_type: str,
                 handler: Callable[[Any, "Pending"], Any]):
        self.name, self.srv_type, self.handler = name, srv_type, handler
        self._replies = transport.publisher(name, f"{srv_type}_Response", SERVICES, wire=REPLY)
        self._requests = transport.subscribe_raw(name, f"{srv_type}_Request", self._on_request, SERVICES, wire=REQUEST)

    def _on_request(self, cdr: bytes) -> None:
        guid, seq, request = _unframe(cdr, f"{self.srv_type}_Request")
        pending = Pending(self, guid, seq)
        response = self.handler(request, pending)
        if response is not None:
            pending.reply(response)

    def close(self) -> None:
        self._requests.close()
        self._replies.close()


class Pending:
    """A request waiting for its reply; ``reply`` sends it (once)."""

    def __init__(self, server: DdsServiceServer, guid: int, seq: int):
        self.server, self.guid, self.seq = server, guid, seq
        self._sent = False

    def reply(self, response) -> None:
        if self._sent:
            return
        self._sent = True
        try:
            self.server._replies.publish_raw(_frame(self.guid, self.seq, response))
        except dds.DdsError as e:  # the client may be gone: nothing to tell it
            log.warning("%s: reply not sent: %s", self.server.name, e)


class DdsServiceClient:
    """Calls a service: ``call(request, timeout)`` returns the response or raises TimeoutError."""

    def __init__(self, transport: dds.DdsTransport, name: str, srv_type: str):
        self.name, self.srv_type = name, srv_type
        self.guid = secrets.randbits(64)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, list] = {}  # seq -> [event, response]
        self._requests = transport.publisher(name, f"{srv_type}_Request", SERVICES, wire=REQUEST)
        self._replies = transport.subscribe_raw(name, f"{srv_type}_Response", self._on_reply, SERVICES, wire=REPLY)

    def wait_for_service(self, timeout: float) -> bool:
        """Whether a server reads the requests and writes the replies (both matched)."""
        return self._requests.wait_for_subscribers(1, timeout) and self._replies.wait_for_publishers(1, timeout)

    def _on_reply(self, cdr: bytes) -> None:
        guid, seq, response = _unframe(cdr, f"{self.srv_type}_Response")
        if guid != self.guid:
            return  # another client's reply (replies go to every reader of the topic)
        with self._lock:
            slot = self._waiting.get(seq)
        if slot is not None:
            slot[1] = response
            slot[0].set()

    def call(self, request, timeout: float = 10.0):
        seq = next(self._seq)
        slot = [threading.Event(), None]
        with self._lock:
            self._waiting[seq] = slot
        try:
            self._requests.publish_raw(_frame(self.guid, seq, request))
            if not slot[0].wait(timeout):
                raise TimeoutError(f"{self.name}: no reply within {timeout:g} s")
            return slot[1]
        finally:
            with self._lock:
                self._waiting.pop(seq, None)

    def close(self) -> None:
        self._replies.close()
        self._requests.close()
