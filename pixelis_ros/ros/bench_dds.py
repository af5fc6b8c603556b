"""Benchmark of the ROS 2 DDS wire (``dds.py``, ``dds_types.py``): 640x480 rgb8 Images across processes.

A child process publishes ``n`` Images as fast as it can with reliable keep-all QoS over
loopback (``localhost_config``); this process subscribes raw, and deserializes each payload
into a rosbags message (what ``DdsTransport.subscribe`` does) and an ndarray
(``messages.image_from_msg``). Reported (medians per message, in ms):

- ``received``/``received_fps``: frames that arrived, and their rate from first to last;
- ``serialize_ms``: rosbags CDR into the publisher's payload buffer, as ``publish`` does it;
- ``publish_ms``/``publish_fps``: the whole ``publish`` call while streaming: serialize, Cyclone's
  validation and copy, and its sending over loopback from the calling thread (with flow control);
- ``publish_unmatched_ms``: ``publish`` with no reader matched, i.e. our cost without the network;
- ``deserialize_ms``/``deserialize_decode_ms``: rosbags, then also ``image_from_msg``;
- ``baseline_numpy_copy_ms``: one ``ndarray.copy()`` of the frame, for scale.

On the 2-core development machine (3 runs, load from other work varying): 790-1400 fps
received, serialize 0.04 ms, publish 0.5-0.9 ms (0.08 ms unmatched), deserialize 0.04 ms,
+ decode 0.05 ms, numpy copy 0.02 ms. Not a test (DESIGN §4.10):
``python -m pixelis_ros.ros.bench_dds [n]`` prints the dict as JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

TOPIC = "/bench/image"
TYPE = "sensor_msgs/msg/Image"
SHAPE = (480, 640, 3)


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e3, 4) if samples else float("nan")


def _frames(k: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, SHAPE, dtype=np.uint8) for _ in range(k)]


def publish_child(domain_id: int, n: int, wait_s: float = 10.0) -> None:
    """The publishing side (run in a child process): prints one JSON line with its timings."""
    from pixelis_ros import messages
    from pixelis_ros.ros import dds
    from pixelis_ros.ros.dds_types import serialize_padded

    frames = _frames()
    with dds.DdsTransport(domain_id, config=dds.localhost_config()) as transport:
        qos = dds.DEFAULT.replace(history="keep_all")
        pub = transport.publisher(TOPIC, TYPE, qos)
        if not pub.wait_for_subscribers(1, timeout=wait_s):
            print(json.dumps({"error": "no subscriber matched"}), flush=True)
            return
        # Serialization alone, as publish does it (into the publisher's reused payload buffer).
        msg = messages.image_msg(frames[0], stamp=time.time(), frame_id="camera")
        buffer, ser = None, []
        for _ in range(50):
            t0 = time.perf_counter()
            buffer = serialize_padded(msg, TYPE, buffer)
            ser.append(time.perf_counter() - t0)
        publish = []
        t_start = time.perf_counter()
        for i in range(n):
            msg = messages.image_msg(frames[i % len(frames)], stamp=time.time(), frame_id="camera")
            t0 = time.perf_counter()
            pub.publish(msg)
            publish.append(time.perf_counter() - t0)
        t_end = time.perf_counter()
        acked = pub.wait_for_acknowledgments(timeout=wait_s)
        print(json.dumps({"serialize_ms": _median_ms(ser), "publish_ms": _median_ms(publish),
                          "publish_fps": round(n / (t_end - t_start), 1), "acked": acked}), flush=True)


def bench_dds(n: int = 300, domain_id: int | None = None, timeout_s: float = 60.0) -> dict:
    """Run the cross-process benchmark; returns the figures (see the module docstring)."""
    from pixelis_ros import messages
    from pixelis_ros.ros import dds

    domain_id = domain_id if domain_id is not None else 150 + os.getpid() % 50
    arrivals: list[float] = []
    deser: list[float] = []
    decode: list[float] = []
    errors: list[str] = []
    done = threading.Event()

    def on_cdr(cdr: bytes) -> None:
        t0 = time.perf_counter()
        msg = messages.deserialize(cdr, TYPE)  # what DdsTransport.subscribe does before the callback
        t1 = time.perf_counter()
        img = messages.image_from_msg(msg)
        t2 = time.perf_counter()
        if img.shape != SHAPE:
            errors.append(f"shape {img.shape}")
        deser.append(t1 - t0)
        decode.append(t2 - t0)
        arrivals.append(t2)
        if len(arrivals) >= n:
            done.set()

    frame = _frames(1)[0]
    copies = []
    for _ in range(50):
        t0 = time.perf_counter()
        frame.copy()
        copies.append(time.perf_counter() - t0)

    with dds.DdsTransport(domain_id, config=dds.localhost_config()) as transport:
        # Our own cost of a publish, without any network: no reader matches this topic.
        lonely = transport.publisher("/bench/unmatched", TYPE, dds.DEFAULT)
        msg = messages.image_msg(frame, 0.0, "camera")
        unmatched = []
        for _ in range(50):
            t0 = time.perf_counter()
            lonely.publish(msg)
            unmatched.append(time.perf_counter() - t0)
        transport.subscribe_raw(TOPIC, TYPE, on_cdr, dds.DEFAULT.replace(history="keep_all"),
                                on_error=lambda exc, raw: errors.append(repr(exc)))
        code = f"from pixelis_ros.ros.bench_dds import publish_child; publish_child({domain_id}, {n})"
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            out, _ = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            out, _ = child.communicate()
        done.wait(timeout=5.0)
    lines = out.strip().splitlines()
    pub_stats = json.loads(lines[-1]) if lines else {"error": f"publisher exited {child.returncode}"}
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    return {
        "n": n, "received": len(arrivals), "errors": errors[:5],
        "received_fps": round((len(arrivals) - 1) / span, 1) if len(arrivals) > 1 else 0.0,
        "deserialize_ms": _median_ms(deser), "deserialize_decode_ms": _median_ms(decode),
        **pub_stats,
        "publish_unmatched_ms": _median_ms(unmatched),
        "baseline_numpy_copy_ms": _median_ms(copies),
        "frame": "640x480 rgb8", "payload_bytes": len(messages.serialize(messages.image_msg(frame, 0.0, "camera"))),
        "qos": "reliable keep_all, loopback", "cpu_count": os.cpu_count(),
    }


if __name__ == "__main__":
    print(json.dumps(bench_dds(int(sys.argv[1]) if len(sys.argv) > 1 else 300), indent=2))
