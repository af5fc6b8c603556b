"""What a task family is: from a rendered scene's ground truth, a question, its answer, the
target to act on, and an expert plan that reaches the answer with the real tools.

Families register by name in ``FAMILIES``. ``make_task`` renders the scene (one frame, or a clip
for video families), asks the family for a ``TaskSpec``, and runs the expert through the
ordinary ``Agent`` to get the trace. A family returns None when a scene cannot pose its
question (e.g. no sign is visible); the caller then moves to the next seed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Callable

from pixelis_ros.agent import Agent
from pixelis_ros.boxes import MIN_BOX_SIDE
from pixelis_ros.episode import Episode
from pixelis_ros.frames import Frame, Frames
from pixelis_ros.sim.expert import ExpertPolicy, Plan
from pixelis_ros.sim.scene import SceneSpec
from pixelis_ros.registry import Registry
from pixelis_ros.sim.world import Render, World
from pixelis_ros.tools import Toolbox

MIN_VISIBLE_PX = 60  # at 640x480, an object with fewer visible pixels is not asked about


@dataclass
class TaskSpec:
    """What a family decides from ground truth."""

    question: str
    answer: str
    question_type: str  # groups questions for the no-tool answer prior
    targets: list[str]  # names of acceptable acting targets (objects, signs, "lamp")
    plan: Callable[[], Plan]
    tolerance: float = 0.0  # for numeric answers (seconds)


@dataclass
class Task:
    id: str
    family: str
    seed: int
    question: str
    answer: str
    question_type: str
    targets: list[str]  # names of the acting targets (objects, signs, "lamp")
    target_boxes: list[tuple[float, float, float, float]]  # their visible boxes in the last frame's pixels
    frames: Frames
    expert: Episode
    tolerance: float = 0.0
    tool_failures: list[str] = field(default_factory=list)

    @property
    def trace(self) -> str:
        return self.expert.trace_text()

    def is_correct(self, answer: str | None) -> bool:
        return answers_match(answer, self.answer, self.tolerance)

    def hit(self, action: dict | None, boxes: list | None = None) -> bool:
        """Whether an episode's action points inside one of the acting targets: their boxes in
        the task's last frame, or ``boxes`` (the targets seen from where the camera looks now;
        None entries are targets out of view)."""
        if not action or "point_2d" not in action:
            return False
        x, y = action["point_2d"]
        boxes = self.target_boxes if boxes is None else boxes
        return any(b is not None and b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in boxes)


def normalise(text: str | None) -> str:
    return re.sub(r"[^a-z0-9.]+", "", (text or "").lower())


def answers_match(given: str | None, truth: str, tolerance: float = 0.0) -> bool:
    if tolerance:
        try:
            return abs(float(normalise(given).rstrip("s") or "nan") - float(truth)) <= tolerance + 1e-6
        except ValueError:
            return False
    return normalise(given) == normalise(truth)


class Family:
    name: str
    video: bool = False
    needs_depth: bool = False

    def pose(self, scene: SceneSpec, renders: list[Render], rng: random.Random) -> TaskSpec | None:  # pragma: no cover
        raise NotImplementedError


class FamilyError(ValueError):
    """A task family name that is not registered."""


FAMILIES: Registry = Registry("task family", FamilyError)


def register_family(cls: type[Family]) -> type[Family]:
    FAMILIES.register(cls.name, cls())
    return cls


def family(name: str) -> Family:
    return FAMILIES[name]


def padded(box, margin: float, width: int, height: int, min_side: float = MIN_BOX_SIDE) -> list[float]:
    """``box`` grown by ``margin`` of its size on each side (and to ``min_side``), clamped."""
    x1, y1, x2, y2 = box
    mx, my = max((x2 - x1) * margin, (min_side - (x2 - x1)) / 2), max((y2 - y1) * margin, (min_side - (y2 - y1)) / 2)
    return [round(max(0.0, x1 - mx), 1), round(max(0.0, y1 - my), 1), round(min(width, x2 + mx), 1), round(min(height, y2 + my), 1)]


def visible(render: Render, names) -> list[str]:
    """The names with enough visible pixels to ask about, scaled to the render's size."""
    h, w = render.rgb.shape[:2]
    least = max(12, MIN_VISIBLE_PX * w * h / (640 * 480))
    return [n for n in names if render.visible_px.get(n, 0) >= least and render.boxes.get(n)]


@dataclass(frozen=True)
class ClipConfig:
    frames: int = 20
    """Frames rendered for video families (20 at 10 fps cover a scene's 2 s of activity)."""
    fps: float = 10.0
    """Frame rate of video clips."""


def make_task(name: str, scene: SceneSpec, world: World, toolbox: Toolbox, clip: ClipConfig = ClipConfig()) -> Task | None:
    fam = family(name)
    world.load(scene)
    if fam.video:
        renders = world.clip(clip.frames, clip.fps, depth=fam.needs_depth)
    else:
        renders = [world.render(0.0, depth=fam.needs_depth)]
    spec = fam.pose(scene, renders, random.Random(f"{name}-{scene.seed}"))
    if spec is None:
        return None
    frames = Frames([Frame(r.rgb, r.time, "sim_camera", r.depth) for r in renders])
    episode = Agent(ExpertPolicy(spec.plan), toolbox).run(spec.question, frames)
    failures = [f"step {i}: {r.result.error}" for i, r in enumerate(episode.records) if r.result is not None and r.result.error]
    if episode.stop_reason != "answer":
        failures.append(f"expert stopped: {episode.stop_reason}: {episode.error}")
    if episode.answer is not None and not answers_match(episode.answer, spec.answer, spec.tolerance):
        failures.append(f"the tools led to '{episode.answer}', the truth is '{spec.answer}'")
    last = renders[-1]
    boxes = [last.boxes[t] for t in spec.targets if last.boxes.get(t)]
    return Task(f"{name}-{scene.seed}", name, scene.seed, spec.question, spec.answer, spec.question_type, spec.targets,
                boxes, frames, episode, spec.tolerance, failures)
