"""ROS 2 topics over Cyclone DDS, without rclpy: the transport of rmw_cyclonedds' wire (DESIGN §4.8).

Why a module of its own: this is *how* samples travel: QoS, domains, participants, publishers,
subscriptions and the dispatcher thread. *What* travels (the ``rt/...`` topic and
``pkg::msg::dds_::Type_`` type names, the padded CDR payloads and the Cyclone topic types that
carry rosbags' bytes) is the type layer, :mod:`pixelis_ros.ros.dds_types`, whose docstring
explains the choice of wire format. To every ROS 2 node on the domain running rmw_cyclonedds,
a ``DdsTransport`` is just another node.

What goes on the wire is exactly ``messages.serialize(msg)`` (padded to 4 bytes, see
``dds_types.pad_payload``). ``publish`` has rosbags serialize straight into a padded payload
buffer that the publisher reuses while the size stays the same (``dds_types.serialize_padded``),
and that buffer's ``ljust`` returns itself, so ``DataWriter.write`` hands it to Cyclone without
a copy; Cyclone copies it once. Receiving, the C layer copies each payload into a Python
``bytes`` and rosbags deserializes it with ``data`` as a view. Figures from
``python -m pixelis_ros.ros.bench_dds`` are in its module docstring.

Matching and bad input
----------------------
Readers and writers ask for the XCDR1 data representation only, which is what ROS 2 speaks; an
XCDR2-only writer would not match instead of delivering bytes that rosbags cannot read. Cyclone
validates each sample against the type before it reaches Python (malformed payloads are dropped
by the C layer, and a malformed ``publish_raw`` is refused), so what a callback can still fail
on is what CDR does not check: e.g. a string that is not UTF-8, or an exception in user code.
Those are counted on the subscription, reported to ``on_error`` (or logged) and the
subscription goes on.

Threads
-------
Callbacks run on one dispatcher thread per transport (a WaitSet over the readers' conditions),
never inside ``publish`` (Cyclone delivers to in-process readers synchronously in the writer's
thread, which is why listeners are not used). A slow callback delays the others on the same
transport, as in a single-threaded rclpy executor. ``publish`` is thread safe; Cyclone sends
from the calling thread, and the binding keeps the GIL while a reliable write waits for lagging
readers, hence the bounded ``QosProfile.max_blocking_s``.

This module imports without ROS and without cyclonedds; the binding is imported when a
transport is first made.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Literal

from pixelis_ros import messages
from pixelis_ros.ros.dds_types import (CdrError, DdsError, PaddedPayload, check_binding_version, dds_topic_name,
                                       dds_type, dds_type_name, pad_payload, ros_type_name, serialize_padded,
                                       unpad_payload)

log = logging.getLogger(__name__)

Reliability = Literal["reliable", "best_effort"]
Durability = Literal["volatile", "transient_local"]
History = Literal["keep_last", "keep_all"]

Callback = Callable[[Any], None]
RawCallback = Callable[[bytes], None]
ErrorCallback = Callable[[Exception, bytes], None]


class DdsTimeoutError(DdsError, TimeoutError):
    """A reliable publish blocked longer than its ``max_blocking_s`` (readers not keeping up)."""


def localhost_config(max_participants: int = 20) -> str:
    """A Cyclone DDS configuration (XML) that keeps all traffic on 127.0.0.1.

    Discovery is unicast to the local participant ports (loopback has no multicast), so every
    process on this host that uses the same configuration and domain finds the others, and
    nothing leaves the machine: what the tests and the benchmark want. Loopback's 64 KiB MTU
    allows 62 kB fragments (Cyclone's default of 1344 B is sized for Ethernet): a 640x480
    image is 15 datagrams instead of ~700 fragments. Pass it as ``DdsTransport(config=...)``
    or put it in ``CYCLONEDDS_URI`` for other processes (the ``cyclonedds`` CLI, a ROS 2 node
    with rmw_cyclonedds).
    """
    return ("<CycloneDDS><Domain Id=\"any\"><General>"
            "<Interfaces><NetworkInterface address=\"127.0.0.1\"/></Interfaces>"
            "<AllowMulticast>false</AllowMulticast>"
            "<MaxMessageSize>65500B</MaxMessageSize><FragmentSize>62000B</FragmentSize></General>"
            "<Discovery><ParticipantIndex>auto</ParticipantIndex>"
            f"<MaxAutoParticipantIndex>{int(max_participants)}</MaxAutoParticipantIndex>"
            "<Peers><Peer address=\"127.0.0.1\"/></Peers></Discovery>"
            "</Domain></CycloneDDS>")


# ---------------------------------------------------------------------------------------------
# QoS


@dataclasses.dataclass(frozen=True)
class QosProfile:
    """The QoS of a publisher or subscription, in ROS 2's terms.

    ``depth`` is the keep-last history depth (ignored with ``history="keep_all"``).
    ``max_blocking_s`` bounds how long a reliable ``publish`` may wait for lagging readers
    (then it raises ``DdsTimeoutError``); rmw_cyclonedds waits forever, but the binding holds
    the GIL while a write blocks, so an unbounded wait would freeze the whole process. Presets:
    ``SENSOR_DATA`` (ROS's sensor-data profile: best effort, keep last 5), ``DEFAULT`` (reliable,
    keep last 10) and ``LATCHED`` (reliable, transient local, keep last 1). Derive variants with
    ``replace``, e.g. ``SENSOR_DATA.replace(reliability="reliable", depth=1)``.
    """

    reliability: Reliability = "reliable"
    depth: int = 10
    durability: Durability = "volatile"
    history: History = "keep_last"
    max_blocking_s: float = 1.0

    def __post_init__(self) -> None:
        if self.reliability not in ("reliable", "best_effort"):
            raise ValueError(f"reliability must be 'reliable' or 'best_effort', not {self.reliability!r}")
        if self.durability not in ("volatile", "transient_local"):
            raise ValueError(f"durability must be 'volatile' or 'transient_local', not {self.durability!r}")
        if self.history not in ("keep_last", "keep_all"):
            raise ValueError(f"history must be 'keep_last' or 'keep_all', not {self.history!r}")
        if self.history == "keep_last" and (not isinstance(self.depth, int) or self.depth < 1):
            raise ValueError(f"keep_last depth must be a positive int, not {self.depth!r}")
        if not self.max_blocking_s >= 0:
            raise ValueError(f"max_blocking_s must be >= 0, not {self.max_blocking_s!r}")

    def replace(self, **changes: Any) -> "QosProfile":
        return dataclasses.replace(self, **changes)

    def to_cyclone(self):
        """The equivalent ``cyclonedds.qos.Qos`` (XCDR1 data representation, as ROS 2 uses)."""
        from cyclonedds.qos import Policy, Qos
        from cyclonedds.util import duration

        reliability = (Policy.Reliability.Reliable(max_blocking_time=duration(seconds=self.max_blocking_s))
                       if self.reliability == "reliable" else Policy.Reliability.BestEffort)
        durability = (Policy.Durability.TransientLocal if self.durability == "transient_local"
                      else Policy.Durability.Volatile)
        history = Policy.History.KeepAll if self.history == "keep_all" else Policy.History.KeepLast(depth=self.depth)
        return Qos(reliability, durability, history,
                   Policy.DataRepresentation(use_cdrv0_representation=True, use_xcdrv2_representation=False))


SENSOR_DATA = QosProfile(reliability="best_effort", depth=5, durability="volatile")
DEFAULT = QosProfile(reliability="reliable", depth=10, durability="volatile")
LATCHED = QosProfile(reliability="reliable", depth=1, durability="transient_local")


def _delete(entity) -> None:
    """Delete a Cyclone entity now rather than at garbage collection (the binding's own path)."""
    if entity is None:
        return
    try:
        entity.__del__()
    except Exception:  # noqa: BLE001 - already gone with its parent
        pass
    if isinstance(getattr(entity, "attached", None), list):
        entity.attached = []  # a WaitSet detaches these again when collected


_domain_lock = threading.Lock()
_domain_users: dict[int, list] = {}  # domain id -> [explicit Domain entity or None, users, config]


def _acquire_domain(domain_id: int, config: str | None) -> None:
    """Count a transport in on ``domain_id``, creating the domain with ``config`` if it is the
    first. Cyclone has one instance of a domain per process and deleting an explicitly created
    domain deletes every participant in it, so the last transport out deletes it."""
    from cyclonedds.core import DDSException
    from cyclonedds.domain import Domain

    with _domain_lock:
        entry = _domain_users.get(domain_id)
        if entry is None:
            domain = None
            if config is not None:
                try:
                    domain = Domain(domain_id, config)
                except DDSException as exc:  # made implicitly by a participant we did not create
                    log.warning("DDS domain %d already exists in this process; config not applied (%s)", domain_id, exc)
            entry = _domain_users[domain_id] = [domain, 0, config]
        elif config is not None and config != entry[2]:
            log.warning("DDS domain %d is already configured in this process; the new config is ignored", domain_id)
        entry[1] += 1


def _release_domain(domain_id: int) -> None:
    with _domain_lock:
        entry = _domain_users.get(domain_id)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _domain_users[domain_id]
            _delete(entry[0])


def _wait_until(predicate: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


# ---------------------------------------------------------------------------------------------
# Publisher / subscription / transport


class DdsPublisher:
    """Writes one ROS topic. Thread safe; made by ``DdsTransport.publisher``."""

    def __init__(self, transport: "DdsTransport", topic: str, type_name: str, qos: QosProfile,
                 wire: str = "topic") -> None:
        from cyclonedds.pub import DataWriter

        self.topic = topic
        self.type_name = ros_type_name(type_name)
        self.qos = qos
        self._transport = transport
        self._sample_cls, dds_topic = transport._topic(topic, self.type_name, wire)
        try:
            self._writer = DataWriter(transport._participant, dds_topic, qos=qos.to_cyclone())
        except Exception as exc:
            raise DdsError(f"cannot create a writer for {topic} ({self.type_name}): {exc}") from exc
        self.published = 0
        self._buffer: PaddedPayload | None = None
        self._buffer_lock = threading.Lock()

    def publish(self, msg: Any) -> None:
        """Serialize a rosbags message and write it: the bytes ``messages.serialize`` gives
        (little endian), serialized by rosbags straight into the padded payload buffer.

        Raises ``TypeError`` for a message of another type, ``CdrError`` when it cannot be
        serialized (a field of the wrong type or range) and ``DdsTimeoutError`` when reliable
        readers do not keep up; the publisher stays usable.
        """
        msgtype = getattr(msg, "__msgtype__", None)
        if msgtype != self.type_name:
            raise TypeError(f"{self.topic} carries {self.type_name}, not {msgtype or type(msg).__name__}")
        with self._buffer_lock:  # the buffer is reused: Cyclone has copied it when write returns
            try:
                self._buffer = serialize_padded(msg, self.type_name, self._buffer)
            except Exception as exc:  # noqa: BLE001 - rosbags raises struct/Type/Value/Attribute errors
                self._buffer = None
                raise CdrError(f"cannot serialize {self.type_name} for {self.topic}: {exc}") from exc
            self._write(self._buffer)

    def publish_raw(self, cdr: bytes) -> None:
        """Write CDR bytes as they are (encapsulation header included, little endian: ``00 01``).

        Cyclone validates them against the type first: malformed bytes raise ``CdrError`` and
        nothing is sent. ``DdsTimeoutError`` as for ``publish``.
        """
        cdr = bytes(cdr)
        if len(cdr) < 4 or cdr[:2] != b"\x00\x01":
            raise CdrError(f"{self.topic}: not little-endian plain CDR (header {cdr[:4].hex() or 'missing'}); "
                           "Cyclone validates samples as little endian")
        self._write(pad_payload(cdr))

    def _write(self, payload: bytes | bytearray) -> None:
        from cyclonedds.core import DDSException

        if self._writer is None:
            raise DdsError(f"{self.topic}: publisher is closed")
        try:
            self._writer.write(self._sample_cls(payload))
        except DDSException as exc:
            if exc.code == DDSException.DDS_RETCODE_BAD_PARAMETER:
                raise CdrError(f"{self.topic}: Cyclone refused the CDR as a {self.type_name}: {exc}") from exc
            if exc.code == DDSException.DDS_RETCODE_TIMEOUT:
                raise DdsTimeoutError(f"{self.topic}: readers did not keep up within "
                                      f"{self.qos.max_blocking_s} s") from exc
            raise DdsError(f"{self.topic}: write failed: {exc}") from exc
        self.published += 1

    @property
    def matched_subscriptions(self) -> int:
        """How many readers (in any process) currently match this writer."""
        return int(self._writer.get_publication_matched_status().current_count)

    def wait_for_subscribers(self, count: int = 1, timeout: float = 5.0) -> bool:
        return _wait_until(lambda: self.matched_subscriptions >= count, timeout)

    def wait_for_acknowledgments(self, timeout: float = 5.0) -> bool:
        """Block until reliable readers have acknowledged everything written (or timeout)."""
        from cyclonedds.core import DDSException
        from cyclonedds.util import duration

        try:
            return bool(self._writer.wait_for_acks(duration(seconds=timeout)))
        except AttributeError:  # 11.0.1 reports its timeout via a typo (Exception.DDS_RETCODE_TIMEOUT)
            return False
        except DDSException as exc:
            if exc.code == DDSException.DDS_RETCODE_TIMEOUT:
                return False
            raise DdsError(f"{self.topic}: waiting for acknowledgments failed: {exc}") from exc

    def close(self) -> None:
        self._transport._forget(self)
        _delete(self._writer)
        self._writer = None


class DdsSubscription:
    """Reads one ROS topic and calls back on the transport's dispatcher thread.

    ``received`` counts samples handed to the callback, ``errors`` the samples whose
    deserialization or callback raised (``last_error`` keeps the latest); each error goes to
    ``on_error(exc, raw_cdr)`` when given, else to the log, and the subscription goes on.
    """

    def __init__(self, transport: "DdsTransport", topic: str, type_name: str, callback: Callable, qos: QosProfile,
                 raw: bool, on_error: ErrorCallback | None, wire: str = "topic") -> None:
        from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState
        from cyclonedds.sub import DataReader

        self.topic = topic
        self.type_name = ros_type_name(type_name)
        self.qos = qos
        self.raw = raw
        self.received = 0
        self.errors = 0
        self.last_error: Exception | None = None
        self._callback = callback
        self._on_error = on_error
        self._transport = transport
        self._closed = False
        self._sample_cls, dds_topic = transport._topic(topic, self.type_name, wire)
        try:
            self._reader = DataReader(transport._participant, dds_topic, qos=qos.to_cyclone())
            self._mask = SampleState.Any | ViewState.Any | InstanceState.Any
            self._condition = ReadCondition(self._reader, self._mask)
        except Exception as exc:
            raise DdsError(f"cannot create a reader for {topic} ({self.type_name}): {exc}") from exc

    @property
    def matched_publishers(self) -> int:
        return int(self._reader.get_subscription_matched_status().current_count)

    def wait_for_publishers(self, count: int = 1, timeout: float = 5.0) -> bool:
        return _wait_until(lambda: self.matched_publishers >= count, timeout)

    def _drain(self) -> None:
        """Take every waiting sample and dispatch it (dispatcher thread only)."""
        while not self._closed:
            samples = self._reader.take(N=32, condition=self._condition)
            if not samples:
                return
            for sample in samples:
                if self._closed:
                    return
                if isinstance(sample, self._sample_cls) and sample.cdr:
                    self._dispatch(sample.cdr)

    def _dispatch(self, data: bytes) -> None:
        try:
            if self.raw:
                self._callback(unpad_payload(data))
            else:
                try:  # rosbags reads past the (at most 3) padding bytes; no need to copy them off
                    msg = messages.deserialize(data, self.type_name)
                except Exception as exc:  # noqa: BLE001
                    raise CdrError(f"{self.topic}: cannot deserialize {self.type_name}: {exc}") from exc
                self._callback(msg)
            self.received += 1
        except Exception as exc:  # noqa: BLE001 - a bad sample or callback must not stop the others
            self.errors += 1
            self.last_error = exc
            if self._on_error is None:
                log.warning("%s: %s: %s", self.topic, type(exc).__name__, exc)
                return
            try:
                self._on_error(exc, unpad_payload(data))
            except Exception:  # noqa: BLE001
                log.exception("%s: on_error raised", self.topic)

    def close(self) -> None:
        with self._transport._dispatch_lock:
            self._closed = True
            self._transport._forget(self)
            _delete(self._condition)
            _delete(self._reader)


class DdsTransport:
    """One DDS participant speaking ROS 2's wire protocol on ``domain_id`` (ROS_DOMAIN_ID).

    ``config`` is a Cyclone XML configuration for this domain (e.g. ``localhost_config()``);
    without it Cyclone reads ``CYCLONEDDS_URI`` as ROS 2 does. A domain's configuration is
    fixed by the first transport of the process on that domain (later ones share it, and a
    different config is ignored with a warning). Use as a context manager or call ``close()``.
    """

    def __init__(self, domain_id: int = 0, config: str | None = None) -> None:
        try:
            from cyclonedds.core import GuardCondition, WaitSet
            from cyclonedds.domain import DomainParticipant
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ImportError("the DDS transport needs the cyclonedds binding: pip install 'pixelis_ros[dds]'") from exc
        check_binding_version()
        self.domain_id = int(domain_id)
        _acquire_domain(self.domain_id, config)
        try:
            self._participant = DomainParticipant(self.domain_id)
        except Exception as exc:
            _release_domain(self.domain_id)
            raise DdsError(f"cannot join DDS domain {self.domain_id}: {exc}") from exc
        self._topics: dict[str, tuple[str, type, Any]] = {}
        self._publishers: list[DdsPublisher] = []
        self._subscriptions: list[DdsSubscription] = []
        self._lock = threading.RLock()
        self._dispatch_lock = threading.RLock()
        self._waitset = WaitSet(self._participant)
        self._wakeup = GuardCondition(self._participant)
        self._waitset.attach(self._wakeup)
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- entities -----------------------------------------------------------------------------

    def _topic(self, topic: str, type_name: str, wire: str = "topic"):
        from cyclonedds.topic import Topic

        name = dds_topic_name(topic, wire)
        with self._lock:
            if self._closed:
                raise DdsError("transport is closed")
            known = self._topics.get(name)
            if known is not None:
                if known[0] != type_name:
                    raise DdsError(f"{topic} already has type {known[0]} in this transport, not {type_name}")
                return known[1], known[2]
            cls = dds_type(type_name, request_header=wire != "topic")
            try:
                dds_topic = Topic(self._participant, name, cls)
            except Exception as exc:
                raise DdsError(f"cannot create topic {name} ({dds_type_name(type_name)}): {exc}") from exc
            self._topics[name] = (type_name, cls, dds_topic)
            return cls, dds_topic

    def publisher(self, topic: str, type_name: str, qos: QosProfile = DEFAULT, wire: str = "topic") -> DdsPublisher:
        """A writer for ``topic`` (ROS name, e.g. ``/camera/image_raw``) of ``type_name``
        (``sensor_msgs/msg/Image``). ``wire``: ``dds_types.REQUEST``/``REPLY`` for the two
        topics of a service (``dds_service`` uses them)."""
        pub = DdsPublisher(self, topic, type_name, qos, wire)
        with self._lock:
            self._publishers.append(pub)
        return pub

    def subscribe(self, topic: str, type_name: str, callback: Callback, qos: QosProfile = DEFAULT,
                  on_error: ErrorCallback | None = None) -> DdsSubscription:
        """Call ``callback(msg)`` with each received message as a rosbags dataclass."""
        return self._add_subscription(topic, type_name, callback, qos, False, on_error)

    def subscribe_raw(self, topic: str, type_name: str, callback: RawCallback, qos: QosProfile = DEFAULT,
                      on_error: ErrorCallback | None = None, wire: str = "topic") -> DdsSubscription:
        """Call ``callback(cdr)`` with each received payload (header included, padding removed:
        the bytes ``messages.serialize`` gave the sender). ``wire`` as for ``publisher``."""
        return self._add_subscription(topic, type_name, callback, qos, True, on_error, wire)

    def _add_subscription(self, topic, type_name, callback, qos, raw, on_error, wire="topic") -> DdsSubscription:
        sub = DdsSubscription(self, topic, type_name, callback, qos, raw, on_error, wire)
        with self._lock:
            self._subscriptions.append(sub)
            self._waitset.attach(sub._condition)
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch_loop, name=f"dds-dispatch-{self.domain_id}",
                                                daemon=True)
                self._thread.start()
        self._wakeup.set(True)  # samples may already be waiting (transient local)
        return sub

    def _forget(self, entity) -> None:
        with self._lock:
            if entity in self._publishers:
                self._publishers.remove(entity)
            if entity in self._subscriptions:
                self._subscriptions.remove(entity)
                try:
                    self._waitset.detach(entity._condition)
                except Exception:  # noqa: BLE001
                    pass

    # -- dispatch -----------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        from cyclonedds.util import duration

        timeout = duration(milliseconds=500)
        while not self._closed:
            try:
                self._waitset.wait(timeout)
                self._wakeup.take()
            except Exception:  # noqa: BLE001 - closing underneath us
                if self._closed:
                    return
                raise
            with self._lock:
                subs = list(self._subscriptions)
            with self._dispatch_lock:
                for sub in subs:
                    if self._closed:
                        return
                    try:
                        sub._drain()
                    except Exception:  # noqa: BLE001 - e.g. the reader deleted while taking
                        if not sub._closed:
                            log.exception("%s: reading failed", sub.topic)
                            time.sleep(0.01)  # no hot loop on a persistent failure

    @property
    def subscriptions(self) -> list[DdsSubscription]:
        with self._lock:
            return list(self._subscriptions)

    @property
    def publishers(self) -> list[DdsPublisher]:
        with self._lock:
            return list(self._publishers)

    def close(self) -> None:
        """Stop the dispatcher and delete every entity of this transport (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wakeup.set(True)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        with self._dispatch_lock:
            for sub in list(self._subscriptions):
                sub._closed = True
            self._subscriptions.clear()
            self._publishers.clear()
            self._topics.clear()
            _delete(self._waitset)
            _delete(self._participant)  # deletes its readers, writers, topics and conditions
        _release_domain(self.domain_id)

    def __enter__(self) -> "DdsTransport":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
