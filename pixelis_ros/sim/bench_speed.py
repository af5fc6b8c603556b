"""``pixelis bench sim``: how fast the simulator makes pixels and tasks on this machine, as JSON.

Scene generation + one 640x480 RGB-D render is the unit the goal names (≤ 60 ms median); the
per-family task times (render, expert with the real tools) predict what an export costs. A
plain copy of a 640x480 frame is the in-process baseline for ratios. Not a test.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from pixelis_ros.progress import progress as progress_bar
from pixelis_ros.sim.families import FAMILIES, make_task
from pixelis_ros.sim.scene import generate_scene
from pixelis_ros.sim.world import World
from pixelis_ros.tools import Toolbox


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def bench_sim(repeats: int = 20, tasks_per_family: int = 5) -> dict:
    t = time.perf_counter()
    world = World(640, 480)
    world_ms = (time.perf_counter() - t) * 1000
    frame = np.zeros((480, 640, 3), np.uint8)
    rows: dict[str, list[float]] = {"baseline_copy_640x480": [], "scene_generate": [], "scene_generate_and_rgbd_render": [],
                                    "rgbd_render_with_gt_boxes": []}
    world.load(generate_scene(0))
    world.render(0.0)  # warm-up
    for seed in progress_bar(range(repeats), desc="bench sim: scenes", unit="scene"):
        t = time.perf_counter()
        frame.copy()
        rows["baseline_copy_640x480"].append(time.perf_counter() - t)
        t = time.perf_counter()
        scene = generate_scene(seed)
        rows["scene_generate"].append(time.perf_counter() - t)
        world.load(scene)
        world.render(0.0, depth=True, boxes=False)
        rows["scene_generate_and_rgbd_render"].append(time.perf_counter() - t)
        t = time.perf_counter()
        world.render(0.0, depth=True, boxes=True)
        rows["rgbd_render_with_gt_boxes"].append(time.perf_counter() - t)
    toolbox = Toolbox()
    per_family = {}
    for name in progress_bar(sorted(FAMILIES), desc="bench sim: tasks", unit="family"):
        samples = []
        for seed in range(tasks_per_family):
            t = time.perf_counter()
            make_task(name, generate_scene(1000 + seed), world, toolbox)
            samples.append(time.perf_counter() - t)
        per_family[name] = _median_ms(samples)
    world.close()
    medians = {k: _median_ms(v) for k, v in rows.items()}
    base = max(medians["baseline_copy_640x480"], 1e-6)
    return {
        "world_startup_ms": round(world_ms, 1),
        "median_ms": medians,
        "goal_ms": {"scene_generate_and_rgbd_render": 60.0},
        "meets_goal": {"scene_generate_and_rgbd_render": medians["scene_generate_and_rgbd_render"] <= 60.0},
        "task_median_ms": per_family,
        "ratio_to_baseline_copy": {k: round(v / base, 1) for k, v in medians.items() if k != "baseline_copy_640x480"},
        "repeats": repeats,
    }
