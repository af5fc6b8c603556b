"""The ROS 2 transport over Cyclone DDS (``pixelis_ros.ros.dds``), on loopback only.

Each test uses its own DDS domain (derived from the pid) and ``localhost_config()``, so runs in
parallel neither see each other nor the network. Waits are bounded by timeouts; no test asserts
on speed (that is ``python -m pixelis_ros.ros.bench_dds``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

cyclonedds = pytest.importorskip("cyclonedds", reason="the cyclonedds binding (extra 'dds') is not installed")

from pixelis_ros import messages  # noqa: E402
from pixelis_ros.ros import dds, dds_types  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGE = "sensor_msgs/msg/Image"
STRING = "std_msgs/msg/String"
_domains = itertools.count()


@pytest.fixture
def domain_id() -> int:
    return 20 + (os.getpid() + 7 * next(_domains)) % 200


@pytest.fixture
def transport(domain_id):
    with dds.DdsTransport(domain_id, config=dds.localhost_config()) as t:
        yield t


class Inbox:
    """Collects callback arguments; ``wait(n)`` blocks until n arrived or the timeout passes."""

    def __init__(self) -> None:
        self.items: list = []
        self._cond = threading.Condition()

    def __call__(self, item) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait(self, n: int = 1, timeout: float = 10.0) -> list:
        with self._cond:
            self._cond.wait_for(lambda: len(self.items) >= n, timeout=timeout)
            return list(self.items)


def frame(i: int, shape=(480, 640, 3)) -> np.ndarray:
    """A deterministic, distinct test frame (both processes can build it)."""
    return ((np.arange(int(np.prod(shape)), dtype=np.uint32) * 7 + i * 13) % 251).astype(np.uint8).reshape(shape)


KEEP_ALL = dds.DEFAULT.replace(history="keep_all")


# --- QoS (no DDS traffic; names, framing and types are tests/test_dds_types.py) -----------------


def test_qos_presets_follow_ros():
    sensor = dds.SENSOR_DATA
    assert (sensor.reliability, sensor.depth, sensor.durability) == ("best_effort", 5, "volatile")
    assert (dds.DEFAULT.reliability, dds.DEFAULT.depth, dds.DEFAULT.durability) == ("reliable", 10, "volatile")
    assert (dds.LATCHED.reliability, dds.LATCHED.depth, dds.LATCHED.durability) == ("reliable", 1, "transient_local")
    reliable_sensor = dds.SENSOR_DATA.replace(reliability="reliable", depth=1)
    assert reliable_sensor.reliability == "reliable" and dds.SENSOR_DATA.reliability == "best_effort"
    with pytest.raises(ValueError):
        dds.QosProfile(reliability="sometimes")
    with pytest.raises(ValueError):
        dds.QosProfile(depth=0)
    with pytest.raises(ValueError):
        dds.QosProfile(durability="persistent")


# --- one process ------------------------------------------------------------------------------


def test_image_and_string_round_trip(transport):
    images, strings = Inbox(), Inbox()
    isub = transport.subscribe("/image", IMAGE, images, KEEP_ALL)
    ssub = transport.subscribe("/chatter", STRING, strings, KEEP_ALL)
    ipub = transport.publisher("/image", IMAGE, KEEP_ALL)
    spub = transport.publisher("/chatter", STRING)
    assert ipub.wait_for_subscribers(1, timeout=5) and spub.wait_for_subscribers(1, timeout=5)

    img = frame(3)
    sent = messages.image_msg(img, stamp=1234.5678, frame_id="camera_optical")
    ipub.publish(sent)
    spub.publish(messages.string_msg("grüße, pixelis"))

    got = images.wait(1)
    assert len(got) == 1, "no image received"
    msg = got[0]
    assert msg.__msgtype__ == IMAGE
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (sent.header.stamp.sec, sent.header.stamp.nanosec)
    assert msg.header.frame_id == "camera_optical"
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step) == (480, 640, "rgb8", 0, 640 * 3)
    np.testing.assert_array_equal(np.asarray(msg.data), np.asarray(sent.data))
    np.testing.assert_array_equal(messages.image_from_msg(msg), img)

    texts = strings.wait(1)
    assert [s.data for s in texts] == ["grüße, pixelis"]
    assert (isub.received, isub.errors, ssub.received, ssub.errors) == (1, 0, 1, 0)


def test_received_bytes_are_rosbags_cdr(transport, domain_id):
    """What a raw subscriber gets is ``messages.serialize(msg)``; on the wire it is the same
    bytes (padded to 4 with the count in the options) and the binding's own faithful
    serializer, an independent CDR implementation, produces the identical encoding."""
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.idl import make_idl_struct
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    raw_images, raw_strings = Inbox(), Inbox()
    transport.subscribe_raw("/image", IMAGE, raw_images, KEEP_ALL)
    transport.subscribe_raw("/chatter", STRING, raw_strings, KEEP_ALL)

    # An independent reader on the bare binding with a faithful, field-by-field String type.
    String_ = make_idl_struct("String_", "std_msgs::msg::dds_::String_", {"data": str})

    other = DomainParticipant(domain_id)
    faithful_reader = DataReader(other, Topic(other, "rt/chatter", String_), qos=KEEP_ALL.to_cyclone())

    ipub = transport.publisher("/image", IMAGE, KEEP_ALL)
    spub = transport.publisher("/chatter", STRING, KEEP_ALL)
    assert ipub.wait_for_subscribers(1, timeout=5) and spub.wait_for_subscribers(2, timeout=5)
    image = messages.image_msg(frame(1), stamp=7.25, frame_id="camera")
    texts = ["hello", "abcd", "", "ünïcødé"]
    ipub.publish(image)
    for text in texts:
        spub.publish(messages.string_msg(text))

    assert raw_images.wait(1) == [messages.serialize(image)]
    assert messages.serialize(image)[:4] == b"\x00\x01\x00\x00"
    assert raw_strings.wait(len(texts)) == [messages.serialize(messages.string_msg(t)) for t in texts]
    for text in texts:  # the binding's own serializer agrees with rosbags byte for byte
        assert String_(data=text).serialize() == messages.serialize(messages.string_msg(text))

    decoded: list[str] = []
    deadline = time.monotonic() + 5
    while len(decoded) < len(texts) and time.monotonic() < deadline:
        decoded += [s.data for s in faithful_reader.take(N=10)]
        time.sleep(0.02)
    assert decoded == texts

    # And the other way: the binding's own writer (options 0, zero padding) reaches our reader.
    from cyclonedds.pub import DataWriter

    inbox = Inbox()
    transport.subscribe("/chatter", STRING, inbox, KEEP_ALL)
    faithful_writer = DataWriter(other, Topic(other, "rt/chatter", String_), qos=KEEP_ALL.to_cyclone())
    assert dds._wait_until(lambda: faithful_writer.get_publication_matched_status().current_count >= 3, 5)
    faithful_writer.write(String_(data="from the binding"))
    assert "from the binding" in [m.data for m in inbox.wait(1)]


def test_latched_reaches_a_late_subscriber(transport):
    pub = transport.publisher("/map_info", STRING, dds.LATCHED)
    pub.publish(messages.string_msg("old"))
    pub.publish(messages.string_msg("latest"))
    inbox = Inbox()
    transport.subscribe("/map_info", STRING, inbox, dds.LATCHED)
    assert [m.data for m in inbox.wait(1)] == ["latest"]


def test_one_type_per_topic(transport):
    transport.publisher("/chatter", STRING)
    with pytest.raises(dds_types.DdsError):
        transport.publisher("/chatter", IMAGE)
    with pytest.raises(TypeError):
        transport.publisher("/other", STRING).publish(messages.image_msg(frame(0, (4, 4, 3)), 0.0))


def test_bad_input_is_reported_and_the_subscription_goes_on(transport, caplog):
    errors: list[tuple[Exception, bytes]] = []
    inbox = Inbox()
    sub = transport.subscribe("/chatter", STRING, inbox, KEEP_ALL, on_error=lambda exc, raw: errors.append((exc, raw)))
    raw_inbox = Inbox()
    transport.subscribe_raw("/chatter", STRING, raw_inbox, KEEP_ALL)
    pub = transport.publisher("/chatter", STRING, KEEP_ALL)
    assert pub.wait_for_subscribers(2, timeout=5)

    # A message rosbags cannot serialize: the publisher raises, nothing is sent, it stays usable.
    with pytest.raises(dds_types.CdrError):
        pub.publish(messages.msg_type(STRING)(data=12345))
    # Bytes Cyclone's validation refuses (a string length running past the end; a BE header).
    with pytest.raises(dds_types.CdrError):
        pub.publish_raw(b"\x00\x01\x00\x00\xff\x00\x00\x00abc\x00")
    with pytest.raises(dds_types.CdrError):
        pub.publish_raw(b"\x00\x00\x00\x00\x00\x00\x00\x01a\x00")
    # Valid CDR that is not a valid ROS string (not UTF-8): reaches the subscriber, whose
    # deserialization fails -> on_error, counted; the raw subscriber gets the bytes as they are.
    not_utf8 = b"\x00\x01\x00\x00\x03\x00\x00\x00\xff\xfe\x00"
    pub.publish_raw(not_utf8)
    pub.publish(messages.string_msg("after the garbage"))

    assert [m.data for m in inbox.wait(1)] == ["after the garbage"]
    assert raw_inbox.wait(2) == [not_utf8, messages.serialize(messages.string_msg("after the garbage"))]
    assert len(errors) == 1 and isinstance(errors[0][0], dds_types.CdrError) and errors[0][1] == not_utf8
    assert (sub.received, sub.errors) == (1, 1) and sub.last_error is errors[0][0]

    # A callback that raises: logged (no on_error given) and counted; the next message arrives.
    seen = Inbox()

    def flaky(msg):
        seen(msg.data)
        if msg.data == "boom":
            raise RuntimeError("callback failed")

    flaky_sub = transport.subscribe("/chatter2", STRING, flaky, KEEP_ALL)
    pub2 = transport.publisher("/chatter2", STRING, KEEP_ALL)
    assert pub2.wait_for_subscribers(1, timeout=5)
    with caplog.at_level(logging.WARNING, logger="pixelis_ros.ros.dds"):
        pub2.publish(messages.string_msg("boom"))
        pub2.publish(messages.string_msg("fine"))
        assert seen.wait(2) == ["boom", "fine"]
    assert (flaky_sub.received, flaky_sub.errors) == (1, 1)
    assert any("callback failed" in r.getMessage() for r in caplog.records)


def test_two_transports_share_a_domain_in_one_process(domain_id):
    first = dds.DdsTransport(domain_id, config=dds.localhost_config())
    with dds.DdsTransport(domain_id, config=dds.localhost_config()) as second:
        inbox = Inbox()
        second.subscribe("/chatter", STRING, inbox, KEEP_ALL)
        pub = first.publisher("/chatter", STRING, KEEP_ALL)
        assert pub.wait_for_subscribers(1, timeout=5)
        pub.publish(messages.string_msg("across transports"))
        assert [m.data for m in inbox.wait(1)] == ["across transports"]
        first.close()  # must not take the shared domain (and `second`) down with it
        late = second.publisher("/chatter", STRING, KEEP_ALL)
        late.publish(messages.string_msg("still alive"))
        assert [m.data for m in inbox.wait(2)] == ["across transports", "still alive"]


def test_closed_subscription_stops_and_transport_closes_twice(domain_id):
    t = dds.DdsTransport(domain_id, config=dds.localhost_config())
    inbox, control = Inbox(), Inbox()
    # The closed subscription is made first, so the dispatcher would serve it before the control.
    sub = t.subscribe("/chatter", STRING, inbox, KEEP_ALL)
    t.subscribe("/chatter", STRING, control, KEEP_ALL)  # stays open: proves "two" was delivered
    pub = t.publisher("/chatter", STRING, KEEP_ALL)
    assert pub.wait_for_subscribers(2, timeout=5)
    pub.publish(messages.string_msg("one"))
    assert [m.data for m in inbox.wait(1)] == ["one"]
    sub.close()
    pub.publish(messages.string_msg("two"))
    assert [m.data for m in control.wait(2)] == ["one", "two"], "the open subscription got nothing"
    assert [m.data for m in inbox.items] == ["one"] and sub.received == 1
    t.close()
    t.close()
    with pytest.raises(dds_types.DdsError):
        t.publisher("/x", STRING)


# --- across processes -------------------------------------------------------------------------

CHILD = """
import sys
import numpy as np
from pixelis_ros import messages
from pixelis_ros.ros import dds

def frame(i, shape=(480, 640, 3)):  # as in the test module
    return ((np.arange(int(np.prod(shape)), dtype=np.uint32) * 7 + i * 13) % 251).astype(np.uint8).reshape(shape)

domain, n = int(sys.argv[1]), int(sys.argv[2])
with dds.DdsTransport(domain, config=dds.localhost_config()) as t:
    pub = t.publisher("/camera/image_raw", "sensor_msgs/msg/Image", dds.DEFAULT.replace(history="keep_all"))
    if not pub.wait_for_subscribers(1, timeout=10):
        sys.exit("no subscriber")
    for i in range(n):
        pub.publish(messages.image_msg(frame(i), stamp=100.0 + i, frame_id="camera"))
    print("acked" if pub.wait_for_acknowledgments(timeout=10) else "not acked", flush=True)
"""


def test_images_across_processes_reliable(transport, domain_id):
    n = 25
    inbox = Inbox()
    sub = transport.subscribe("/camera/image_raw", IMAGE, inbox, KEEP_ALL)
    child = subprocess.run([sys.executable, "-c", CHILD, str(domain_id), str(n)], cwd=REPO, capture_output=True,
                           text=True, timeout=30)
    assert child.returncode == 0, child.stderr[-2000:]
    got = inbox.wait(n, timeout=10)
    assert len(got) == n, f"received {len(got)} of {n}; child said {child.stdout!r}"
    assert "acked" in child.stdout
    for i, msg in enumerate(got):  # reliable and in order
        assert msg.header.stamp.sec == 100 + i
        np.testing.assert_array_equal(messages.image_from_msg(msg), frame(i))
    assert sub.errors == 0


# --- the cyclonedds command-line tool as an independent peer ----------------------------------


@functools.lru_cache(maxsize=1)
def _cli_path() -> str | None:
    path = shutil.which("cyclonedds", path=str(Path(sys.executable).parent)) or shutil.which("cyclonedds")
    if path is None:
        return None
    try:
        ok = subprocess.run([path, "--help"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return path if ok else None


def _cli() -> str:
    path = _cli_path()
    if path is None:
        pytest.skip("the cyclonedds command-line tool is not installed or does not run")
    return path


def _run_cli(args: list[str], timeout: float, until: str | None = None) -> str:
    """Run the CLI on our loopback configuration; stop it at ``timeout`` or once ``until``
    appears in its output."""
    env = dict(os.environ, CYCLONEDDS_URI=dds.localhost_config(), COLUMNS="200", NO_COLOR="1")
    proc = subprocess.Popen([_cli(), *args, "--suppress-progress-bar", "--color", "none"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    seen = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if until is not None and until in line:
                seen.set()
        seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen.wait(timeout)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    return "".join(lines)


def test_cyclonedds_cli_sees_the_ros_topic_and_type(transport, domain_id):
    pub = transport.publisher("/image", IMAGE)
    pub.publish(messages.image_msg(frame(0), 1.0))
    out = _run_cli(["ls", "--id", str(domain_id), "--runtime", "3s"], timeout=15)
    assert "rt/image" in out, out
    assert "sensor_msgs::msg::dds_::Image_" in out, out

    idl = _run_cli(["typeof", "rt/image", "--id", str(domain_id)], timeout=15)
    assert "struct Image_ {" in idl.replace("  ", " "), idl  # no base struct
    assert "module sensor_msgs" in idl and "std_msgs::msg::dds_::Header_ header;" in idl, idl


def test_cyclonedds_cli_decodes_our_samples(transport, domain_id):
    pub = transport.publisher("/chatter", STRING)
    stop = threading.Event()

    def talk():
        i = 0
        while not stop.is_set():
            pub.publish(messages.string_msg(f"hello {i}"))
            i += 1
            stop.wait(0.1)

    talker = threading.Thread(target=talk, daemon=True)
    talker.start()
    try:
        out = _run_cli(["subscribe", "rt/chatter", "--id", str(domain_id)], timeout=12, until="String_(data=")
    finally:
        stop.set()
        talker.join(timeout=2)
    assert "String_(data='hello " in out, out
