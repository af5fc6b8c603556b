"""``PixelisSim-v0``: the simulator's tasks as a Gymnasium environment for gaze-and-act RL.

An episode is one task (DESIGN §5): the agent sees the current camera view (RGB and depth),
may move its gaze (pan, tilt, zoom) a few times, and ends the episode by committing a point in
the current view. The reward is 1.0 when that point lies inside one of the task's acting targets
*as seen from where the camera now looks*, else 0.0. The question is text, so it travels in
``info`` (Gymnasium spaces have no good text type); so does the answer, for evaluation only.

Tasks come from ``make_task``, so they are the same tasks the CoTA data and benchmarks use
(its expert trace is computed too and kept on ``self.task``). At commit time the env asks the
world for the task's targets' boxes in whatever view the camera then has (segmentation boxes:
visible pixels, occlusion included).
For video families the view is the clip's last frame, which is what their targets refer to.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from pixelis_ros.sim.families import FAMILIES, Task, make_task
from pixelis_ros.sim.scene import CameraPose, SceneSpec, Shift, generate_scene
from pixelis_ros.sim.world import Render, World
from pixelis_ros.tools import Toolbox

GAZE_SCALE = (15.0, 10.0, 0.3)  # per step at |action| = 1: pan degrees, tilt degrees, log-zoom
DEPTH_MAX_M = 100.0  # depth is clipped here so that every observation lies in the (finite) space
MAX_TRIES = 50  # scene draws per reset before giving up (a family may not fit a scene)


class PixelisSimEnv(gymnasium.Env):
    """Gaze (pan, tilt, zoom) and point at the target of a simulator task.

    Actions: ``{"gaze": Box(-1, 1, (3,)), "point": Box(0, 1, (2,)), "commit": Discrete(2)}``.
    ``commit=0`` applies ``gaze`` scaled by ``GAZE_SCALE`` through ``CameraPose.moved`` (positive
    pan turns left, positive tilt looks up, positive zoom narrows the view) and ignores ``point``;
    ``commit=1`` ignores ``gaze``, scores ``point`` (x, y as fractions of the view's width and
    height) and terminates. Episodes without a commit are truncated after ``max_steps`` steps.

    Observations: ``{"rgb": HxWx3 uint8, "depth": HxW float32 metres in [0, DEPTH_MAX_M]}``.
    ``info``: question, family, task_id, camera (pan/tilt/fovy in degrees), time (the frame's
    simulated seconds) and answer; the answer is there for evaluation: a policy must not read it.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, width: int = 320, height: int = 240, families: list[str] | None = None,
                 shift: Shift | None = None, max_steps: int = 10, render_mode: str | None = None):
        """``width``/``height``: render size (small by default: RL needs many frames).
        ``families``: task families to draw from (default all of ``FAMILIES``).
        ``shift``: distribution shift applied to every scene (None: no shift).
        ``max_steps``: steps before truncation. ``render_mode``: None or "rgb_array"."""
        families = sorted(FAMILIES) if families is None else list(families)
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown or not families:
            raise ValueError(f"unknown or no task families {unknown}; known: {sorted(FAMILIES)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} not in {self.metadata['render_modes']}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.width, self.height, self.families = width, height, families
        self.shift, self.max_steps, self.render_mode = shift, max_steps, render_mode
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (height, width, 3), np.uint8),
            "depth": spaces.Box(0.0, DEPTH_MAX_M, (height, width), np.float32),
        })
        self.action_space = spaces.Dict({
            "gaze": spaces.Box(-1.0, 1.0, (3,), np.float32),
            "point": spaces.Box(0.0, 1.0, (2,), np.float32),
            "commit": spaces.Discrete(2),
        })
        self._world: World | None = None  # built on first reset: it costs a GL context (~0.3 s)
        self._toolbox: Toolbox | None = None
        self.task: Task | None = None
        self.scene: SceneSpec | None = None
        self.camera = CameraPose()
        self.time = 0.0
        self._steps = self._moves = 0
        self._done = True
        self._last: Render | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._world is None:
            self._world, self._toolbox = World(self.width, self.height), Toolbox()
        for _ in range(MAX_TRIES):
            # Family and scene are redrawn together: a family that rarely fits (or never does at
            # this resolution) then costs a few tries instead of stalling the reset.
            family = self.families[int(self.np_random.integers(len(self.families)))]
            scene = generate_scene(int(self.np_random.integers(2**31 - 1)), self.shift)
            task = make_task(family, scene, self._world, self._toolbox)
            if task is not None:
                break
        else:
            raise RuntimeError(f"no task after {MAX_TRIES} scenes for families {self.families} at "
                               f"{self.width}x{self.height} (small renders can hide targets below MIN_VISIBLE_PX)")
        self.task, self.scene, self.camera = task, scene, scene.camera
        self.time, self._steps, self._moves, self._done = task.frames[-1].stamp, 0, 0, False
        return self._obs(self._render(boxes=False)), self._info()

    def step(self, action: dict[str, Any]):
        if self._done:
            raise RuntimeError("step() after the episode ended (or before reset()): call reset()")
        self._steps += 1
        reward, terminated = 0.0, False
        if int(action["commit"]):
            render = self._render(boxes=True)
            x, y = np.clip(np.asarray(action["point"], np.float64), 0.0, 1.0) * (self.width, self.height)
            hit = self.task.hit({"point_2d": (x, y)}, [render.boxes.get(n) for n in self.task.targets])
            reward, terminated = (1.0 if hit else 0.0), True
        else:
            pan, tilt, zoom = np.clip(np.asarray(action["gaze"], np.float64), -1.0, 1.0) * GAZE_SCALE
            self.camera = self.camera.moved(float(pan), float(tilt), float(zoom))
            self._moves += 1
            render = self._render(boxes=False)
        truncated = not terminated and self._steps >= self.max_steps
        self._done = terminated or truncated
        return self._obs(render), reward, terminated, truncated, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._last is None:
            return None
        return self._last.rgb.copy()

    def close(self) -> None:
        if self._world is not None:
            self._world.close()
            self._world = None

    def target_boxes(self) -> list[tuple[float, float, float, float]]:
        """The targets' visible boxes in the current view (for tests, demos and reward shaping)."""
        if self.task is None:
            return []
        render = self._world.render(self.time, self.camera, depth=False, boxes=True)
        return [b for b in (render.boxes.get(n) for n in self.task.targets) if b is not None]

    def _render(self, boxes: bool) -> Render:
        # frame_index = gaze moves so far: a noise shift differs between views but not between runs.
        self._last = self._world.render(self.time, self.camera, depth=True, boxes=boxes, frame_index=self._moves)
        return self._last

    def _obs(self, render: Render) -> dict[str, np.ndarray]:
        depth = np.nan_to_num(render.depth, nan=DEPTH_MAX_M, posinf=DEPTH_MAX_M)
        return {"rgb": render.rgb, "depth": np.clip(depth, 0.0, DEPTH_MAX_M).astype(np.float32, copy=False)}

    def _info(self) -> dict[str, Any]:
        task = self.task
        return {"question": task.question, "family": task.family, "task_id": task.id, "answer": task.answer,
                "time": float(self.time),
                "camera": {"pan": float(self.camera.yaw), "tilt": float(self.camera.pitch), "fovy": float(self.camera.fovy)}}
