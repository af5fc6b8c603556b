"""``pixelis bench tools``: median latency of each pixel tool on this machine, as JSON.

Inputs are generated here (no files needed) at the sizes the goals name. Each figure is the
median of ``repeats`` runs after one warm-up; goals are printed beside the figures, and the
baseline row (a plain ``numpy`` copy of the same frame) gives a machine-speed reference for
ratios within the same process. This is a command, not a test: nothing asserts on time.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import cv2
import numpy as np

from pixelis_ros.demo import make_sign_scene
from pixelis_ros.frames import Frame, Frames
from pixelis_ros.image_codec import image_from_fields
from pixelis_ros.progress import progress as progress_bar
from pixelis_ros.tools import ToolContext, Toolbox, ToolboxConfig
from pixelis_ros.tools.segment import GrabCutSegmenter
from pixelis_ros.tools.track import TRACK_BACKENDS

GOALS_MS = {"zoom_1080p_to_448": 2.0, "zoom_1080p_112_up_to_448": 2.0, "ocr_word_crop": 60.0, "ocr_640x480": 250.0, "grabcut_256": 60.0,
            "csrt_per_frame_640x480": 30.0, "kcf_per_frame_640x480": 6.0, "temporal_change_300_frames": 50.0,
            "image_fields_1080p_rgb8": 0.5}


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: lazy model loads, allocator, caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def moving_square(n: int, size=(640, 480), side=60, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    bg = rng.integers(60, 120, (size[1], size[0], 3), dtype=np.uint8)
    bg = cv2.GaussianBlur(bg, (0, 0), 3)
    out = []
    for i in range(n):
        img = bg.copy()
        x, y = 50 + 3 * i % (size[0] - side - 100), 100 + int(40 * np.sin(i / 10))
        cv2.rectangle(img, (x, y), (x + side, y + side), (220, 40, 40), -1)
        cv2.circle(img, (x + side // 2, y + side // 2), side // 4, (30, 30, 200), -1)
        out.append(img)
    return out


def bench_tools(repeats: int = 15) -> dict:
    toolbox = Toolbox(ToolboxConfig())
    scene, sign_box, _ = make_sign_scene(0)
    one = Frames([Frame(scene, 0.0)])
    ctx = ToolContext(frames=one)
    rows: dict[str, float] = {}
    bar = progress_bar(total=len(GOALS_MS) + 1, desc="bench tools", unit="row")  # the goals' rows + the baseline

    def timed(name: str, fn: Callable[[], object], runs: int, per: int = 1) -> None:
        rows[name] = median_ms(fn, runs) / per
        bar.update(1)

    timed("baseline_copy_1080p", lambda: scene.copy(), repeats)
    x1, y1 = sign_box[0] - 50, sign_box[1] - 50
    zoom = toolbox.tool("zoom")
    for name, side in (("zoom_1080p_to_448", 448), ("zoom_1080p_112_up_to_448", 112)):
        args = toolbox.validate("zoom", {"bbox_2d": [x1, y1, x1 + side, y1 + side]})
        timed(name, lambda: zoom.run(args, ctx), repeats)

    ocr = toolbox.tool("ocr")
    # A word crop: the sign's text at the size a 2x zoom gives it (one line, ~40 px high).
    word = cv2.resize(scene[sign_box[1]:sign_box[3], sign_box[0]:sign_box[2]], None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    timed("ocr_word_crop", lambda: ocr.read(word), repeats)
    frame_640 = cv2.resize(scene, (640, 480), interpolation=cv2.INTER_AREA)
    cv2.putText(frame_640, "LOADING BAY 7", (200, 240), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    timed("ocr_640x480", lambda: ocr.read(frame_640), repeats)

    clip = moving_square(31)
    region = cv2.resize(clip[0], (256, 256))
    grabcut = GrabCutSegmenter()
    timed("grabcut_256", lambda: grabcut(region, (60, 60, 200, 200), None), repeats)

    for name in ("csrt", "kcf"):
        tracker = TRACK_BACKENDS[name]()
        box = (50, 100, 110, 160)
        timed(f"{name}_per_frame_640x480", lambda: tracker(clip, box, lambda: False), max(3, repeats // 5), len(clip) - 1)

    temporal = toolbox.tool("temporal")
    clip300 = [clip[i % len(clip)] for i in range(300)]

    def scan():
        frames = Frames([Frame(img, i / 30) for i, img in enumerate(clip300)])  # fresh frames: no cached thumbnails
        temporal.run(toolbox.validate("temporal", {"predicate": "change"}), ToolContext(frames=frames))
    timed("temporal_change_300_frames", scan, max(3, repeats // 3))

    data = np.ascontiguousarray(scene).tobytes()
    timed("image_fields_1080p_rgb8", lambda: image_from_fields(1080, 1920, "rgb8", 0, 1920 * 3, data), repeats * 10)

    bar.close()
    base = rows["baseline_copy_1080p"]
    return {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(), "opencv": cv2.__version__},
        "repeats": repeats,
        "median_ms": {k: round(v, 3) for k, v in rows.items()},
        "goal_ms": GOALS_MS,
        "meets_goal": {k: rows[k] <= g for k, g in GOALS_MS.items()},
        "ratio_to_baseline_copy": {k: round(v / base, 2) for k, v in rows.items() if k != "baseline_copy_1080p"},
    }
