"""Procedural scenes: what is in a room, where, how it moves, and when the lamp switches.

A ``SceneSpec`` is plain data drawn from a seed (no MuJoCo here), so it is cheap, comparable
and the single source of ground truth for questions, answers and expert traces. ``World``
turns it into pixels. ``Shift`` describes the distribution shifts used for evaluation and
label-free test-time RL: they change pixels, never answers.

Coordinates: metres, z up; the camera stands at negative y looking along +y over a table.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

import cv2

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.1, 0.1), "green": (0.1, 0.7, 0.15), "blue": (0.1, 0.25, 0.9), "yellow": (0.95, 0.85, 0.1),
    "purple": (0.55, 0.15, 0.75), "orange": (1.0, 0.5, 0.05), "cyan": (0.1, 0.8, 0.85), "white": (0.95, 0.95, 0.95),
}
SHAPES = ("cube", "sphere", "cylinder")
WORDS = ("EXIT", "DOCK", "GATE", "ZONE", "BAY", "LAB", "DEPOT", "RAMP", "SHOP", "HALL", "ROOM", "PARK")
FONTS = {"simplex": cv2.FONT_HERSHEY_SIMPLEX, "duplex": cv2.FONT_HERSHEY_DUPLEX, "complex": cv2.FONT_HERSHEY_COMPLEX,
         "triplex": cv2.FONT_HERSHEY_TRIPLEX}
SHIFT_FONTS = {"plain": cv2.FONT_HERSHEY_PLAIN, "script": cv2.FONT_HERSHEY_SCRIPT_SIMPLEX}

TABLE_TOP = 0.75  # height of the table surface
TABLE_X = (-0.9, 0.9)
TABLE_Y = (0.2, 1.6)


@dataclass(frozen=True)
class Shift:
    """A distribution shift. Every field at its default means "no shift"."""

    lighting: float = 1.0
    """Multiplier on the lights' intensity (e.g. 0.5 dim, 1.4 bright)."""
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour of the light (multiplies each channel)."""
    texture: str = "default"
    """Floor and wall texture style: default, stripes, noise."""
    fonts: str = "default"
    """Sign fonts: default (Hershey simplex/duplex/complex/triplex) or shifted (plain/script)."""
    noise: float = 0.0
    """Standard deviation of Gaussian pixel noise added to every rendered frame (0..255)."""
    camera_jitter: float = 0.0
    """Largest random change of the camera's position (metres) and angles (x10 degrees)."""


@dataclass(frozen=True)
class Motion:
    """A straight path from ``start`` to ``end`` between times ``t0`` and ``t1`` (seconds)."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    t0: float
    t1: float

    def at(self, t: float) -> tuple[float, float, float]:
        a = min(1.0, max(0.0, (t - self.t0) / (self.t1 - self.t0)))
        return tuple(s + a * (e - s) for s, e in zip(self.start, self.end))  # type: ignore[return-value]


@dataclass(frozen=True)
class ObjectSpec:
    name: str
    shape: str
    colour: str
    size: float  # half extent / radius in metres
    pos: tuple[float, float, float]
    motion: Motion | None = None

    def position(self, t: float) -> tuple[float, float, float]:
        return self.motion.at(t) if self.motion else self.pos

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class SignSpec:
    name: str
    text: str
    font: str
    pos: tuple[float, float, float]
    width: float  # metres; height is width / 4 (the texture's aspect)
    board: str = "white"


@dataclass(frozen=True)
class LampSpec:
    pos: tuple[float, float, float]
    before: str
    after: str
    switch_time: float

    def colour(self, t: float) -> str:
        return self.after if t >= self.switch_time else self.before


@dataclass(frozen=True)
class CameraPose:
    pos: tuple[float, float, float] = (0.0, -0.75, 1.55)
    yaw: float = 0.0  # degrees, positive turns left
    pitch: float = -33.0  # degrees, negative looks down
    fovy: float = 60.0  # degrees; smaller is zoomed in

    def moved(self, pan: float = 0.0, tilt: float = 0.0, zoom: float = 0.0) -> "CameraPose":
        """Gaze action: pan/tilt in degrees, zoom as a factor on the field of view (>0 narrows)."""
        return replace(self, yaw=max(-60.0, min(60.0, self.yaw + pan)), pitch=max(-80.0, min(10.0, self.pitch + tilt)),
                       fovy=max(8.0, min(90.0, self.fovy / math.exp(zoom))))


@dataclass(frozen=True)
class SceneSpec:
    seed: int
    objects: tuple[ObjectSpec, ...]
    signs: tuple[SignSpec, ...]
    lamp: LampSpec
    occluders: tuple[tuple[float, float, float, float], ...]  # (x, y, half width, half height) panels
    camera: CameraPose = field(default_factory=CameraPose)
    shift: Shift = field(default_factory=Shift)
    duration: float = 2.0  # seconds of activity (motions, lamp switch) in a clip

    def object(self, name: str) -> ObjectSpec:
        return next(o for o in self.objects if o.name == name)


def _free_spot(rng: random.Random, taken: list[tuple[float, float, float]], size: float) -> tuple[float, float]:
    for _ in range(200):
        x, y = rng.uniform(TABLE_X[0] + size, TABLE_X[1] - size), rng.uniform(TABLE_Y[0] + size, TABLE_Y[1] - size)
        if all(math.hypot(x - tx, y - ty) > size + ts + 0.05 for tx, ty, ts in taken):
            return x, y
    return x, y  # crowded table: accept an overlap rather than loop forever


def generate_scene(seed: int, shift: Shift | None = None, n_objects: tuple[int, int] = (5, 12),
                   n_moving: tuple[int, int] = (1, 2), duration: float = 2.0) -> SceneSpec:
    """A scene drawn from ``seed``; the same seed always gives the same scene (shift aside)."""
    rng = random.Random(seed)
    shift = shift or Shift()
    taken: list[tuple[float, float, float]] = []
    objects = []
    for i in range(rng.randint(*n_objects)):
        size = rng.uniform(0.035, 0.09)
        x, y = _free_spot(rng, taken, size)
        taken.append((x, y, size))
        objects.append(ObjectSpec(f"obj{i}", rng.choice(SHAPES), rng.choice(list(COLOURS)), size, (x, y, TABLE_TOP + size)))
    for i in rng.sample(range(len(objects)), k=min(len(objects), rng.randint(*n_moving))):
        o = objects[i]
        end_x = max(TABLE_X[0] + o.size, min(TABLE_X[1] - o.size, o.pos[0] + rng.choice((-1, 1)) * rng.uniform(0.3, 0.6)))
        # Slow enough for a tracker at 10 fps: at most ~0.6 m over at least 1 s.
        t0 = rng.uniform(0.0, 0.2 * duration)
        motion = Motion(o.pos, (end_x, o.pos[1], o.pos[2]), t0, t0 + rng.uniform(0.5, 0.8) * duration)
        objects[i] = replace(o, motion=motion)
    fonts = list(FONTS) if shift.fonts == "default" else list(SHIFT_FONTS)
    signs = []
    columns = rng.sample([-1.0, -0.35, 0.3, 0.95], k=rng.randint(1, 3))  # apart, so signs never hide each other
    for i, column in enumerate(columns):
        x, y = column + rng.uniform(-0.15, 0.15), rng.uniform(1.9, 2.9)
        width = rng.choice((0.25, 0.3, 0.4, 0.5))  # the small far ones need a zoom to be read
        text = f"{rng.choice(WORDS)} {rng.randint(10, 99)}"
        font = fonts[int(rng.random() * len(fonts))]  # one draw whatever the font set: shifts keep answers
        signs.append(SignSpec(f"sign{i}", text, font, (x, y, rng.uniform(0.95, 1.2)), width))
    before, after = rng.sample(["green", "red", "blue", "yellow"], 2)
    lamp = LampSpec((rng.uniform(-0.8, 0.8), 1.75, TABLE_TOP + 0.35), before, after,
                    round(rng.uniform(0.25, 0.75) * duration, 1))
    occluders = tuple((rng.uniform(-0.8, 0.8), rng.uniform(0.35, 0.7), 0.08, 0.12) for _ in range(rng.randint(0, 2)))
    camera = CameraPose()
    if shift.camera_jitter:
        j = shift.camera_jitter
        camera = CameraPose(pos=(camera.pos[0] + rng.uniform(-j, j), camera.pos[1] + rng.uniform(-j, j), camera.pos[2] + rng.uniform(-j, j)),
                            yaw=rng.uniform(-10 * j, 10 * j), pitch=camera.pitch + rng.uniform(-10 * j, 10 * j), fovy=camera.fovy)
    return SceneSpec(seed, tuple(objects), tuple(signs), lamp, occluders, camera, shift, duration)
