"""Benchmarks of the agent node on the ROS 2 wire (``pixelis bench node``, ``pixelis bench soak``).

A child process plays the camera (640x480 rgb8 Images over Cyclone DDS on loopback, reliable
QoS); this process runs the agent node (``DdsAgentNode``: the same code as ``pixelis node
agent``) with a ScriptedPolicy that answers at once, so what is measured is the node, not a
model. Figures (goals from the ROS integration issue):

- ``ingest``: frames the node decoded into its FrameBuffer per second while the camera publishes
  as fast as it can (goal >= 300 fps). Baseline in the same process: the same stream received
  raw (bytes only, no node), so ``ratio_to_raw`` is the node's share of the wire's rate.
- ``episode_start``: with the camera at 30 Hz, queries at random phases of the frame period:
  ``newest_frame_ms``, the time from the newest frame's arrival in the buffer to the start of the
  episode that uses it (goal <= one frame period, 33.3 ms); ``frame_age_ms``, the same from the
  frame's stamp (camera and node share the wall clock), i.e. plus the wire's latency; and how
  long a query waits before its episode starts.
- ``soak``: the node's RSS over a long 30 Hz run with a query every 2 s (goal: growth <= 5% from
  the first sample after warm-up to the end).

Benchmarks, not tests (DESIGN §4.10): run them on a quiet machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pixelis_ros import messages
from pixelis_ros.node.config import AgentNodeConfig
from pixelis_ros.ros import dds
from pixelis_ros.ros.dds_nodes import DdsAgentNode

SHAPE = (480, 640, 3)
PERIOD_30HZ = 1 / 30
QUICK_SCRIPT = "<think>Answer at once: the node is what is measured.</think>\n<answer>ok</answer>"


def camera_child(domain_id: int, fps: float, seconds: float, reliable: bool = True) -> None:
    """Publish ``/image`` at ``fps`` (0: as fast as possible) for ``seconds``; print a JSON line."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, SHAPE, dtype=np.uint8) for _ in range(4)]
    qos = dds.DEFAULT.replace(depth=1, reliability="reliable" if reliable else "best_effort")
    with dds.DdsTransport(domain_id, config=dds.localhost_config()) as transport:
        pub = transport.publisher("/image", "sensor_msgs/msg/Image", qos)
        if not pub.wait_for_subscribers(1, timeout=30):
            print(json.dumps({"error": "no subscriber"}), flush=True)
            return
        time.sleep(0.5)  # let the subscriber's side of discovery settle too
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            pub.publish(messages.image_msg(frames[n % 4], time.time(), "camera"))
            n += 1
            if fps:
                next_at = start + n / fps
                time.sleep(max(0.0, next_at - time.perf_counter()))
        pub.wait_for_acknowledgments(5)
        print(json.dumps({"published": n, "publish_s": round(time.perf_counter() - start, 3)}), flush=True)


def _spawn_camera(domain_id: int, fps: float, seconds: float) -> subprocess.Popen:
    code = f"from pixelis_ros.ros.bench_node import camera_child; camera_child({domain_id}, {fps}, {seconds})"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _child_result(child: subprocess.Popen, timeout: float) -> dict:
    try:
        out, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.communicate()
    lines = out.strip().splitlines()
    return json.loads(lines[-1]) if lines else {"error": f"camera exited {child.returncode}"}


def _rate(stamps: list[float]) -> float:
    return round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 1) if len(stamps) > 1 else 0.0


def _agent(transport: dds.DdsTransport, tmp: Path, **params) -> DdsAgentNode:
    """An agent node (not started yet) whose policy answers at once."""
    script = tmp / "quick_script.txt"
    script.write_text(QUICK_SCRIPT)
    config = AgentNodeConfig(trace=str(script), image_reliability="reliable", publish_annotated=False, **params)
    return DdsAgentNode(transport, config)


def bench_ingest(domain_id: int, seconds: float, tmp: Path) -> dict:
    """Frames per second into the node's FrameBuffer, and the same stream received raw."""
    arrivals: list[float] = []
    with dds.DdsTransport(domain_id, config=dds.localhost_config()) as transport:
        sub = transport.subscribe_raw("/image", "sensor_msgs/msg/Image", lambda raw: arrivals.append(time.perf_counter()),
                                      dds.DEFAULT.replace(depth=1))
        _child_result(_spawn_camera(domain_id, 0, seconds), seconds + 60)
        sub.close()
        raw_fps = _rate(arrivals)

        node = _agent(transport, tmp, buffer_frames=300)
        ingested: list[float] = []
        on_image = node.core.on_image

        def timed(msg):
            on_image(msg)
            ingested.append(time.perf_counter())

        node.core.on_image = timed  # before start(), which subscribes it: time each frame into the buffer
        node.start()
        cam = _child_result(_spawn_camera(domain_id, 0, seconds), seconds + 60)
        node.stop()
    return {"ingest_fps": _rate(ingested), "frames_ingested": len(ingested), "published": cam.get("published"),
            "bad_images": node.core.counters.bad_images, "raw_receive_fps": raw_fps,
            "ratio_to_raw": round(_rate(ingested) / raw_fps, 3) if raw_fps else None, "goal_fps": 300}


def bench_episode_start(domain_id: int, queries: int, tmp: Path) -> dict:
    """Frame age at episode start with a 30 Hz camera, over ``queries`` queries."""
    with dds.DdsTransport(domain_id, config=dds.localhost_config()) as transport:
        node = _agent(transport, tmp, max_frame_age_s=0.0)
        node.start()
        camera = _spawn_camera(domain_id, 30, queries * 0.4 + 5)
        ages, arrivals, waits = [], [], []
        deadline = time.monotonic() + 30
        while len(node.core.frames) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        for _ in range(queries):
            before = node.core.counters.episodes
            node.core.on_query("What is in view?")  # straight to the node: the DDS query path adds ~0.1 ms
            while node.core.counters.episodes == before and time.monotonic() < deadline + 60:
                time.sleep(0.002)
            ages.append(node.core.counters.last_frame_age_ms)
            arrivals.append(node.core.counters.last_arrival_age_ms)
            waits.append(node.core.counters.last_queue_ms)
            time.sleep(0.2 + np.random.default_rng(len(ages)).uniform(0, PERIOD_30HZ))  # sample every phase of the frame period
        _child_result(camera, 60)
        node.stop()
    def stats(values: list[float]) -> dict:
        return {"p50": round(statistics.median(values), 2), "p99": round(float(np.percentile(values, 99)), 2),
                "max": round(max(values), 2)}

    return {"newest_frame_ms": stats(arrivals), "frame_age_ms": stats(ages), "queue_ms": stats(waits),
            "queries": queries, "goal_ms": round(PERIOD_30HZ * 1000, 1)}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_soak(domain_id: int, seconds: float, tmp: Path, warmup_s: float = 30.0, sample_s: float = 10.0) -> dict:
    """RSS of this process (the node) over a 30 Hz camera stream with a query every 2 s."""
    samples: list[tuple[float, float]] = []
    with dds.DdsTransport(domain_id, config=dds.localhost_config()) as transport:
        node = _agent(transport, tmp, max_frame_age_s=0.0)
        node.start()
        camera = _spawn_camera(domain_id, 30, seconds + warmup_s)
        start = time.monotonic()
        next_query = next_sample = start + warmup_s
        while time.monotonic() - start < seconds + warmup_s:
            now = time.monotonic()
            if now >= next_query:
                node.core.on_query("What is in view?")
                next_query += 2.0
            if now >= next_sample:
                samples.append((round(now - start, 1), round(rss_mb(), 1)))
                next_sample += sample_s
            time.sleep(0.05)
        cam = _child_result(camera, 60)
        counters = dict(vars(node.core.counters))
        node.stop()
    first, last = samples[0][1], samples[-1][1]
    return {"seconds": seconds, "warmup_s": warmup_s, "rss_mb": {"after_warmup": first, "end": last,
            "max": max(r for _, r in samples)}, "growth_pct": round(100 * (last - first) / first, 2),
            "frames": counters["frames"], "episodes": counters["episodes"], "published": cam.get("published"),
            "samples": samples, "goal_growth_pct": 5.0}


def bench_node(ingest_s: float = 5.0, queries: int = 40, repeats: int = 3) -> dict:
    """Ingest and episode-start figures, medians over ``repeats`` runs."""
    import tempfile

    domain = 120 + os.getpid() % 80
    with tempfile.TemporaryDirectory() as tmp:
        ingest = [bench_ingest(domain, ingest_s, Path(tmp)) for _ in range(repeats)]
        start = bench_episode_start(domain, queries, Path(tmp))
    fps = sorted(r["ingest_fps"] for r in ingest)
    return {"ingest": {**ingest[[r["ingest_fps"] for r in ingest].index(fps[len(fps) // 2])], "runs_fps": fps},
            "episode_start": start, "frame": "640x480 rgb8", "qos": "reliable, keep last 1, loopback",
            "cpu_count": os.cpu_count()}


def soak(minutes: float = 10.0) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return bench_soak(140 + os.getpid() % 60, minutes * 60, Path(tmp))
