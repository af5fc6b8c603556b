"""The nodes' parameters: one typed dataclass per node, loaded from ROS-style YAML.

``config/agent.yaml`` and ``config/sim.yaml`` hold the defaults in the ``<node>:
ros__parameters:`` layout that ``ros2 launch`` passes to a node; the DDS runners and the tests
read the same files, so a parameter means the same on every transport.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
from dataclasses import dataclass, fields
from pathlib import Path

from pixelis_ros.policy.folder_kind import BACKEND_CHOICES
from pixelis_ros.yaml_input import YamlInputError, read_yaml


class ConfigError(ValueError):
    """A parameter file or value the node cannot use; the message names the parameter."""


def _coerce(name: str, default, value):
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # YAML writes 2.0 as 2 often enough
    if type(value) is not expected:
        shown = repr(value)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        raise ConfigError(f"parameter '{name}' must be {expected.__name__}, got {type(value).__name__} {shown}")
    return value


class NodeParameters:
    """Loading and checking shared by the node configs: ``NODE`` is the node's name in YAML."""

    NODE = ""

    @classmethod
    def from_parameters(cls, params: dict) -> "NodeParameters":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(map(str, set(params) - set(known)))
        if unknown:
            shown = str(unknown[:10])[:200] + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            hint = ("; topics are not parameters: remap them (--ros-args -r image:=/camera/image_raw, or the launch "
                    "files' image:=... arguments)") if any(n.endswith("_topic") for n in unknown) else ""
            raise ConfigError(f"unknown {cls.NODE} parameter(s) {shown}; known: {sorted(known)}{hint}")
        config = cls(**{name: _coerce(name, known[name].default, value) for name, value in params.items()})
        config.check()
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, node: str | None = None) -> "NodeParameters":
        try:
            data = read_yaml(path)
        except YamlInputError as e:
            raise ConfigError(f"cannot read parameters from {e}") from None
        node = node or cls.NODE
        section = data.get(node) if isinstance(data, dict) else None
        params = section.get("ros__parameters") if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise ConfigError(f"{path}: no '{node}: ros__parameters:' mapping (the file holds "
                              f"{'a mapping without it' if isinstance(data, dict) else 'a ' + type(data).__name__})")
        return cls.from_parameters(params)

    def check(self) -> None:
        """Raise ConfigError naming the first parameter with a value the node cannot use."""

    def replace(self, **changes) -> "NodeParameters":
        config = dataclasses.replace(self, **changes)
        config.check()
        return config


@dataclass(frozen=True)
class AgentNodeConfig(NodeParameters):
    NODE = "pixelis_agent"

    model: str = ""
    """Local model folder for the policy (a trained model folder, or ``pixelis export onnx`` output);
    empty = the bundled ``models/pixelis-small`` (its ONNX export, cached on first use, for onnx),
    or no model when ``accept_scripts`` is on (every query brings its script)."""
    backend: str = "auto"
    """Policy backend for ``model``: auto (the one the folder is for: an ONNX export has
    manifest.json, a torch checkpoint config.json + model.safetensors; torch for the bundled
    model), torch, onnx or tensorrt."""
    trace: str = ""
    """A CoTA script replayed by the ScriptedPolicy instead of the model (demos, tests); wins over ``model``."""
    image_reliability: str = "best_effort"
    """QoS reliability of the image subscription: best_effort (sensor data) or reliable."""
    buffer_frames: int = 300
    """Frames kept in the FrameBuffer."""
    buffer_mb: int = 512
    """Megabytes kept in the FrameBuffer."""
    max_frame_age_s: float = 2.0
    """A query is refused when the newest frame is older than this (stale camera); 0 = no limit."""
    use_sim_time: bool = False
    """ROS time comes from /clock (rosgraph_msgs/Clock), as for any ROS node in a simulation; it
    judges frame age. rclpy declares this parameter itself."""
    max_steps: int = 8
    """Turns per episode."""
    max_query_chars: int = 2000
    """Longest query accepted."""
    tool_time_budget_s: float = 10.0
    """Per tool call time budget."""
    ocr_backend: str = "rapidocr"
    """OCR backend: rapidocr or paddleocr."""
    segment_backend: str = "grabcut"
    """Segmentation backend: grabcut or sam2 (needs segment_checkpoint)."""
    segment_checkpoint: str = ""
    """SAM 2 weights (.safetensors) for the sam2 segment/track backends."""
    track_backend: str = "csrt"
    """Tracking backend: csrt, kcf, mil or sam2."""
    publish_annotated: bool = True
    """Publish the annotated image after each episode."""
    accept_scripts: bool = False
    """Accept queries of the form {"query": ..., "script": CoTA} and replay the script instead of the
    policy: the simulator's oracle in ``pixelis sim loop --policy oracle``. Tests and demos only."""
    ttrl: bool = False
    """Test-time RL: a background worker adapts a LoRA adapter on the answered queries, label-free,
    inside a KL-to-EMA corridor, and swaps it into the served policy between queries. Needs a model
    (torch folder, or an ONNX export with ``--lora adapters``); false costs nothing."""
    ttrl_config: str = ""
    """YAML file of test-time RL settings (``TTRLConfig`` fields); empty = the defaults."""
    ttrl_state: str = ""
    """Folder of the saved test-time state (restored on start); empty = ``$PIXELIS_CACHE/ttrl/<model>``."""

    def check(self) -> None:
        if self.image_reliability not in ("best_effort", "reliable"):
            raise ConfigError(f"parameter 'image_reliability' must be best_effort or reliable, got {self.image_reliability!r}")
        if self.backend not in BACKEND_CHOICES:
            raise ConfigError(f"parameter 'backend' must be torch, onnx or tensorrt, or auto (read from the model "
                              f"folder), got {self.backend!r}")
        for name in ("buffer_frames", "buffer_mb", "max_steps", "max_query_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"parameter '{name}' must be >= 1, got {getattr(self, name)}")
        if self.ttrl and (self.trace or (self.accept_scripts and not self.model)):
            raise ConfigError("parameter 'ttrl' needs a model to adapt; it cannot adapt a replayed script (trace) "
                              "or a script-only node")


@dataclass(frozen=True)
class SimNodeConfig(NodeParameters):
    NODE = "pixelis_sim"

    suite: str = "smoke"
    """Task suite: a shipped name (sim/suites/) or a .yaml path."""
    episodes: int = 0
    """Episodes to play; 0 = the suite's count."""
    start: int = 0
    """First episode index of the suite's schedule."""
    speed: float = 1.0
    """Streaming speed relative to the clip's frame rate (2 = twice as fast); 0 = back to back."""
    still_frames: int = 3
    """Frames streamed for a still task (identical, one clip period apart)."""
    answer_timeout_s: float = 120.0
    """Seconds to wait for the agent's answer before scoring the episode as unanswered."""
    frame_id: str = "sim_camera"
    """frame_id of the camera's messages."""
    oracle: bool = False
    """Send each query with its expert trace (for an agent with accept_scripts)."""

    def check(self) -> None:
        for name in ("episodes", "start"):
            if getattr(self, name) < 0:
                raise ConfigError(f"parameter '{name}' must be >= 0, got {getattr(self, name)}")
        if self.still_frames < 1:
            raise ConfigError(f"parameter 'still_frames' must be >= 1, got {self.still_frames}")
        if self.speed < 0:
            raise ConfigError(f"parameter 'speed' must be >= 0 (0 = back to back), got {self.speed}")
        if self.answer_timeout_s <= 0:
            raise ConfigError(f"parameter 'answer_timeout_s' must be > 0, got {self.answer_timeout_s}")


@functools.lru_cache(maxsize=None)
def parameter_docs(cls: type = AgentNodeConfig) -> dict[str, str]:
    """Each field's docstring (the string under it), for ROS parameter descriptions."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs
