"""Suites: named, versioned task mixes (train, val, test, shifted, smoke) read from ``sim/suites/*.yaml``.

A suite fixes everything that decides which tasks come out: the families and their shares, the
base seed, the render size, the clip, the distribution shift and the scene options. Episode ``i``
of a suite is therefore the same task on every machine and in every process:

* its family is the ``i``-th entry of a smooth weighted round-robin over ``families`` (exact
  shares: equal weights cycle through the families in file order);
* its scene seed is ``seed + SEED_STRIDE * i``; when the family cannot pose its question in that
  scene (``make_task`` returns None) the next seeds ``+1, +2, ...`` are tried, at most
  ``SEED_STRIDE`` of them, so episodes never share a scene seed. A suite of N episodes uses
  seeds ``seed .. seed + SEED_STRIDE * N - 1``: keep suites' seed ranges apart (train's 1000
  episodes use 0..15999; val starts at 100000, test at 200000).

``shifted`` uses test's seeds with a ``Shift``: the same scenes, other pixels. A shift can make a
scene unable to pose its question (a sign lost in the dark) and the episode then moves on to the
next seed, so a few episodes may differ from test's.

``load_suite`` validates strictly and raises ``SuiteError`` naming the file, the field and what
was expected. This module imports no MuJoCo: the CLI loads it on every start.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

from pixelis_ros.paths import data_dir
from pixelis_ros.sim.scene import Shift

if TYPE_CHECKING:  # the families pull in MuJoCo and the tools: imported where used
    from pixelis_ros.sim.families.base import ClipConfig, Task
    from pixelis_ros.sim.world import World
    from pixelis_ros.tools import Toolbox, ToolboxConfig

SEED_STRIDE = 16
"""Scene seeds reserved per episode; also the most scenes an episode tries before giving up."""
TEXTURES = ("default", "stripes", "noise")
FONT_SETS = ("default", "shifted")


class SuiteError(ValueError):
    """A suite that cannot be loaded or cannot produce its episodes; the message says why."""


def _default_clip() -> "ClipConfig":
    from pixelis_ros.sim.families.base import ClipConfig
    return ClipConfig()


@dataclass(frozen=True)
class SceneOptions:
    """How ``generate_scene`` draws a suite's scenes."""

    n_objects: tuple[int, int] = (5, 12)
    """Inclusive [min, max] number of objects on the table (at most World's MAX_OBJECTS = 12)."""
    n_moving: tuple[int, int] = (1, 2)
    """Inclusive [min, max] number of those objects that move during the clip."""
    duration: float = 2.0
    """Seconds over which motions and the lamp switch happen (a clip should cover them)."""


@dataclass(frozen=True)
class Suite:
    """A named task mix. Every field but ``families`` has a default; YAML files use the same names
    (``clip``, ``shift`` and ``scene`` are nested mappings)."""

    name: str
    """The suite's name (the YAML file's stem unless the file sets ``name``)."""
    families: dict[str, float]
    """Family name -> weight (> 0); episodes follow the weights exactly, in this order."""
    episodes: int = 100
    """Episodes an export produces when no count is given."""
    seed: int = 0
    """Base scene seed (>= 0): episode i starts at seed + SEED_STRIDE * i."""
    width: int = 640
    """Render width in pixels (even, at most the world's offscreen buffer, 1280)."""
    height: int = 480
    """Render height in pixels (even, at most the world's offscreen buffer, 960)."""
    clip: "ClipConfig" = field(default_factory=_default_clip)
    """Frames and fps of the clips rendered for video families (tracking, temporal)."""
    shift: Shift = field(default_factory=Shift)
    """Distribution shift (lighting, tint, texture, fonts, noise, camera_jitter); default none."""
    scene: SceneOptions = field(default_factory=SceneOptions)
    """Scene generation options (object and mover counts, activity duration)."""
    description: str = ""
    """One line on what the suite is for."""

    def to_json(self) -> dict:
        """Every field as plain JSON (lists for tuples), in declaration order."""
        return {"name": self.name, "description": self.description, "families": dict(self.families),
                "episodes": self.episodes, "seed": self.seed, "width": self.width, "height": self.height,
                "clip": {"frames": self.clip.frames, "fps": self.clip.fps},
                "shift": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.shift).items()},
                "scene": {"n_objects": list(self.scene.n_objects), "n_moving": list(self.scene.n_moving),
                          "duration": self.scene.duration}}


FIELDS = tuple(f.name for f in fields(Suite))


# --- loading -------------------------------------------------------------------------------------

def suites_dir() -> Path:
    return data_dir("sim") / "suites"


def list_suites() -> list[str]:
    """Names of the shipped suites (``sim/suites/*.yaml``)."""
    try:
        folder = suites_dir()
    except FileNotFoundError:
        return []
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _is_path(name_or_path: str | os.PathLike) -> bool:
    text = os.fspath(name_or_path)
    return isinstance(name_or_path, os.PathLike) or "/" in text or os.sep in text or text.endswith((".yaml", ".yml"))


def load_suite(name_or_path: str | os.PathLike) -> Suite:
    """A shipped suite by name (``sim/suites/<name>.yaml``) or a suite file by path."""
    if _is_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise SuiteError(f"suite file {path} does not exist")
    else:
        path = suites_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise SuiteError(f"unknown suite '{name_or_path}'; known suites: {list_suites()} "
                             f"(in {suites_dir()}), or give the path of a .yaml file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SuiteError(f"cannot read suite file {path}: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    return parse_suite(data, default_name=path.stem, source=str(path))


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, message: str) -> SuiteError:
        return SuiteError(f"{self.source}: {message}")

    def wrong_type(self, where: str, expected: str, value: Any) -> SuiteError:
        return self.fail(f"field '{where}' must be {expected}, got {_type_name(value)} ({value!r})")

    def integer(self, where: str, value: Any, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong_type(where, "an integer", value)
        if minimum is not None and value < minimum:
            raise self.fail(f"field '{where}' must be >= {minimum}, got {value}")
        return value

    def number(self, where: str, value: Any, positive: bool = False, minimum: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.wrong_type(where, "a finite number", value)
        if positive and value <= 0:
            raise self.fail(f"field '{where}' must be > 0, got {value}")
        if minimum is not None and value < minimum:
            raise self.fail(f"field '{where}' must be >= {minimum}, got {value}")
        return float(value)

    def string(self, where: str, value: Any, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            raise self.wrong_type(where, "a string", value)
        if choices is not None and value not in choices:
            raise self.fail(f"field '{where}' must be one of {list(choices)}, got '{value}'")
        return value

    def mapping(self, where: str, value: Any, allowed: tuple[str, ...] | None = None) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.wrong_type(where, "a mapping", value)
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise self.fail(f"field '{where}' has a non-string key {bad[0]!r}")
        if allowed is not None:
            unknown = [k for k in value if k not in allowed]
            if unknown:
                raise self.fail(f"unknown {where} field '{unknown[0]}'; allowed {where} fields: {list(allowed)}")
        return value

    def int_range(self, where: str, value: Any, low: int, high: int) -> tuple[int, int]:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise self.wrong_type(where, "a [min, max] list of two integers", value)
        lo, hi = (self.integer(f"{where}[{k}]", v) for k, v in enumerate(value))
        if lo > hi:
            raise self.fail(f"field '{where}' is a bad range: min {lo} > max {hi}")
        if lo < low:
            raise self.fail(f"field '{where}' is a bad range: min {lo} is below {low}")
        if hi > high:
            raise self.fail(f"field '{where}' is a bad range: max {hi} is above {high}")
        return lo, hi


def _offscreen_size() -> tuple[int, int]:
    """The world's offscreen framebuffer (``<global offwidth offheight>`` of room.xml): the
    largest render the World can make."""
    try:
        node = ET.parse(data_dir("sim") / "worlds" / "room.xml").getroot().find("visual/global")
        return int(node.get("offwidth", 640)), int(node.get("offheight", 480))
    except (OSError, ET.ParseError, AttributeError, ValueError):  # pragma: no cover - a broken install
        return 640, 480


def parse_suite(data: Any, default_name: str = "suite", source: str = "<suite>") -> Suite:
    """A validated Suite from parsed YAML (a mapping); ``source`` names it in errors."""
    from pixelis_ros.sim.families import FAMILIES, ClipConfig
    from pixelis_ros.sim.world import MAX_OBJECTS

    c = _Checker(source)
    if not isinstance(data, dict):
        raise c.fail(f"a suite file must be a YAML mapping of fields {list(FIELDS)}, got {_type_name(data)}")
    for key in data:
        if key not in FIELDS:
            raise c.fail(f"unknown field '{key}'; allowed fields: {list(FIELDS)}")
    if "families" not in data:
        raise c.fail("missing field 'families' (a mapping of family name -> weight)")
    families: dict[str, float] = {}
    for fam, weight in c.mapping("families", data["families"]).items():
        if fam not in FAMILIES:
            raise c.fail(f"unknown family '{fam}'; known families: {sorted(FAMILIES)}")
        w = c.number(f"families.{fam}", weight)
        if w <= 0:
            raise c.fail(f"family '{fam}' has weight {weight}; weights must be > 0")
        families[fam] = w
    if not families:
        raise c.fail("field 'families' is empty; give at least one of " + str(sorted(FAMILIES)))
    kwargs: dict[str, Any] = {"name": c.string("name", data.get("name", default_name)), "families": families}
    if "description" in data:
        kwargs["description"] = c.string("description", data["description"])
    if "episodes" in data:
        kwargs["episodes"] = c.integer("episodes", data["episodes"], minimum=1)
    if "seed" in data:
        kwargs["seed"] = c.integer("seed", data["seed"], minimum=0)
    max_w, max_h = _offscreen_size()
    for key, limit in (("width", max_w), ("height", max_h)):
        if key in data:
            v = c.integer(key, data[key])
            if v <= 0 or v % 2:
                raise c.fail(f"field '{key}' must be a positive multiple of 2, got {v}")
            if v > limit:
                raise c.fail(f"field '{key}' is {v}, above the world's offscreen buffer ({limit}; sim/worlds/room.xml)")
            kwargs[key] = v
    if "clip" in data:
        clip = c.mapping("clip", data["clip"], allowed=tuple(f.name for f in fields(ClipConfig)))
        default = ClipConfig()
        kwargs["clip"] = ClipConfig(frames=c.integer("clip.frames", clip.get("frames", default.frames), minimum=2),
                                    fps=c.number("clip.fps", clip.get("fps", default.fps), positive=True))
    if "shift" in data:
        kwargs["shift"] = _parse_shift(c, data["shift"])
    if "scene" in data:
        scene = c.mapping("scene", data["scene"], allowed=tuple(f.name for f in fields(SceneOptions)))
        default_scene = SceneOptions()
        n_objects = c.int_range("scene.n_objects", scene.get("n_objects", list(default_scene.n_objects)), 1, MAX_OBJECTS)
        n_moving = c.int_range("scene.n_moving", scene.get("n_moving", list(default_scene.n_moving)), 0, n_objects[1])
        duration = c.number("scene.duration", scene.get("duration", default_scene.duration), positive=True)
        kwargs["scene"] = SceneOptions(n_objects, n_moving, duration)
    return Suite(**kwargs)


def _parse_shift(c: _Checker, value: Any) -> Shift:
    allowed = tuple(f.name for f in fields(Shift))
    shift = c.mapping("shift", value, allowed=allowed)
    out: dict[str, Any] = {}
    if "lighting" in shift:
        out["lighting"] = c.number("shift.lighting", shift["lighting"], positive=True)
    if "tint" in shift:
        tint = shift["tint"]
        if not isinstance(tint, (list, tuple)) or len(tint) != 3:
            raise c.wrong_type("shift.tint", "a list of three numbers [r, g, b]", tint)
        out["tint"] = tuple(c.number(f"shift.tint[{k}]", v, minimum=0.0) for k, v in enumerate(tint))
    if "texture" in shift:
        out["texture"] = c.string("shift.texture", shift["texture"], TEXTURES)
    if "fonts" in shift:
        out["fonts"] = c.string("shift.fonts", shift["fonts"], FONT_SETS)
    if "noise" in shift:
        out["noise"] = c.number("shift.noise", shift["noise"], minimum=0.0)
    if "camera_jitter" in shift:
        out["camera_jitter"] = c.number("shift.camera_jitter", shift["camera_jitter"], minimum=0.0)
    return Shift(**out)


# --- episodes ------------------------------------------------------------------------------------

def family_schedule(suite: Suite, n: int) -> list[str]:
    """The families of episodes 0..n-1: smooth weighted round-robin, exact to the weights and the
    same for every ``n`` (a prefix of a longer schedule is the shorter one)."""
    credit = {f: 0.0 for f in suite.families}
    total = sum(suite.families.values())
    out = []
    for _ in range(n):
        for f, w in suite.families.items():
            credit[f] += w
        best = max(credit, key=credit.__getitem__)  # ties go to the earlier family in file order
        credit[best] -= total
        out.append(best)
    return out


def scene_seeds(suite: Suite, index: int) -> range:
    """The scene seeds episode ``index`` tries, in order."""
    base = suite.seed + SEED_STRIDE * index
    return range(base, base + SEED_STRIDE)


def make_episode(suite: Suite, index: int, family: str, world: "World", toolbox: "Toolbox") -> "Task":
    """Episode ``index`` of ``suite`` (whose family the schedule gives as ``family``): the first
    of its scene seeds that can pose the family's question. Raises SuiteError when none can."""
    from pixelis_ros.sim.families import make_task
    from pixelis_ros.sim.scene import generate_scene

    opts = suite.scene
    seeds = scene_seeds(suite, index)
    for seed in seeds:
        scene = generate_scene(seed, suite.shift, opts.n_objects, opts.n_moving, opts.duration)
        task = make_task(family, scene, world, toolbox, suite.clip)
        if task is not None:
            return task
    raise SuiteError(f"suite '{suite.name}': episode {index} ({family}): none of scene seeds {seeds.start}..{seeds.stop - 1} "
                     f"can pose a {family} question; widen scene.n_objects / scene.n_moving")


def iter_tasks(suite: Suite, episodes: int | None = None, start: int = 0,
               toolbox_config: "ToolboxConfig | None" = None) -> Iterator["Task"]:
    """Episodes ``start .. start + episodes - 1`` (default: the suite's count from ``start``),
    deterministic by index. One World (suite.width x suite.height) and one Toolbox serve them all."""
    from pixelis_ros.sim.world import World
    from pixelis_ros.tools import Toolbox

    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    n = suite.episodes - start if episodes is None else episodes
    schedule = family_schedule(suite, start + max(0, n))
    world = World(suite.width, suite.height)
    toolbox = Toolbox(toolbox_config)
    try:
        for i in range(start, start + max(0, n)):
            yield make_episode(suite, i, schedule[i], world, toolbox)
    finally:
        world.close()
