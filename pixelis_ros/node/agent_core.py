"""AgentNodeCore: the agent node's logic with no ROS in it.

The rclpy node (``pixelis_ros/ros/agent_node.py``), the ROS-2-wire DDS runner and the rosbag2
player all drive this one class: they hand it messages (rosbags dataclasses or rclpy messages —
only field names are read) and give it a ``publish(topic, message)`` callback that takes
rosbags dataclasses. Inference runs on a worker thread, never in a subscription callback; the
camera callback only decodes into the FrameBuffer. Bad input (undecodable images, empty or huge
queries, queries before any frame, a stale camera) produces an error on ``answer`` and in the
diagnostics, and the node keeps running.

Time. Frame stamps are the camera's (ROS time, or simulation time). A frame stamped *earlier*
than the newest buffered one means its source restarted (a simulation reset, a looping bag, a
camera driver restart): like tf2, the node clears its buffer and starts a new history, counting
a ``time_reset``. ROS time (``now()``: ``clock``, wall time by default, or with ``use_sim_time``
the latest ``/clock`` message) judges how stale the newest frame is and stamps diagnostics;
latencies are measured on the monotonic clock.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pixelis_ros import messages as M
from pixelis_ros.agent import Agent, AgentLimits
from pixelis_ros.cota import clip
from pixelis_ros.episode import Episode
from pixelis_ros.frames import Frame, FrameBuffer, Frames
from pixelis_ros.image_codec import ImageDecodeError
from pixelis_ros.node.config import AgentNodeConfig, ConfigError
from pixelis_ros.policy.scripted import ScriptedPolicy
from pixelis_ros.render import render_episode
from pixelis_ros.tools import ToolError, Toolbox, ToolboxConfig
from pixelis_ros.tools.base import parse_image_ref
from pixelis_ros.trace_file import TraceFileError, read_trace

Publish = Callable[[str, object], None]
TOPICS = {"answer": "std_msgs/msg/String", "detections": "vision_msgs/msg/Detection2DArray",
          "target": "geometry_msgs/msg/PointStamped", "annotated": "sensor_msgs/msg/Image",
          "diagnostics": "diagnostic_msgs/msg/DiagnosticArray"}
DEPTH_PAIRING_S = 0.1  # a depth image pairs with the colour frame nearest in time within this
WARN_EVERY_S = 5.0  # a repeated warning (bad or dropped frames) is logged at most this often
CLOCK_MISMATCH_S = 3600.0  # frames stamped this far from the node's clock are not in its time base
Log = Callable[[str, str], None]  # (level: "info" | "warn" | "error", message)


# A library logs nowhere until its application says where (``pixelis node`` does: ROS's format
# on stderr); without this, Python's last-resort handler would print warnings of bag replays.
logging.getLogger("pixelis_agent").addHandler(logging.NullHandler())


def python_log(level: str, message: str) -> None:
    """The default ``log``: Python logging under ``pixelis_agent`` (the rclpy node uses its logger)."""
    logging.getLogger("pixelis_agent").log({"info": logging.INFO, "warn": logging.WARNING}.get(level, logging.ERROR),
                                            message)


@dataclass
class AskGoal:
    """One goal of the Ask action as the core runs it; the rclpy and DDS nodes fill it from their
    message and callbacks. Runs on the episode worker in turn with topic queries."""

    question: str
    frame_stamp: float = 0.0
    """Answer about the frames stamped at or before this (seconds); 0 = up to the newest."""
    tools: list[str] = field(default_factory=list)
    """Tools the policy may call; empty = all the node offers."""
    max_steps: int = 0
    """Step cap of this episode; 0 = the node's ``max_steps`` (which also caps a larger value)."""
    on_step: Callable[[int, dict, float], None] = lambda number, step, elapsed_ms: None
    """Feedback: (1-based step number, ``StepRecord.to_json()``, ms since the episode started)."""
    cancelled: Callable[[], bool] = lambda: False
    """Asked before each step; True ends the episode there (``stop_reason`` "cancelled")."""
    on_started: Callable[[], None] = lambda: None
    """The episode is about to start (the goal goes from accepted to executing)."""
    on_done: Callable[[dict, tuple[float, float, float] | None, float, str], None] = lambda *a: None
    """The end: (the record published on ``answer``, the target point or None, frame stamp, frame id)."""


@dataclass
class Counters:
    frames: int = 0
    dropped_frames: int = 0
    bad_images: int = 0
    queries: int = 0
    rejected_queries: int = 0
    episodes: int = 0
    time_resets: int = 0
    last_latency_ms: float = 0.0  # query received -> outputs published
    last_queue_ms: float = 0.0  # query received -> episode started
    last_frame_age_ms: float = 0.0  # age of the newest frame (by its stamp) when the episode started
    last_arrival_age_ms: float = 0.0  # time since the newest frame reached the buffer, at episode start
    last_error: str = ""
    goals: int = 0  # Ask action goals accepted
    cancelled_goals: int = 0


def build_policy(config: AgentNodeConfig):
    """The policy the node serves: a ScriptedPolicy replaying ``config.trace`` (demos, tests), else
    the model folder through its backend (default: the bundled model; ``auto``: the backend the
    folder is for), else none when only queries that bring their own script are served
    (``accept_scripts`` and no model)."""
    if config.trace:
        try:
            return ScriptedPolicy(read_trace(config.trace))
        except TraceFileError as e:
            raise ConfigError(f"parameter 'trace': cannot read {e}") from None
    if config.accept_scripts and not config.model:
        return None
    from pixelis_ros.policy.base import PolicyError
    from pixelis_ros.policy.registry import load_policy

    what = f"parameter 'model' ({config.model or 'the bundled model'}, backend {config.backend})"
    try:
        return load_policy(config.backend, config.model)  # the folder's kind is checked before any import
    except (PolicyError, OSError, ImportError) as e:
        raise ConfigError(f"{what}: {_bounded(str(e), 600)}") from None
    except Exception as e:  # noqa: BLE001 -- transformers/tokenizers/ORT on a folder the checks let through
        # The folder checks catch the known ways a folder breaks; whatever else a library raises
        # while loading must still stop start-up with our error, not a traceback.
        raise ConfigError(f"{what}: the backend could not load it ({type(e).__name__}: {_bounded(str(e), 300)}); "
                          "check the folder against the checkpoint it came from") from None


def _bounded(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


class AgentNodeCore:
    def __init__(self, config: AgentNodeConfig, publish: Publish, clock: Callable[[], float] = time.time,
                 log: Log = python_log):
        config.check()
        self.config = config
        self.publish = publish
        self.clock = clock
        self.log = log
        self._warned: dict[str, tuple[float, int]] = {}  # warning kind -> (last logged, suppressed since)
        self.frames = FrameBuffer(config.buffer_frames, config.buffer_mb * 1024 * 1024)
        self.counters = Counters()
        self.camera_k: np.ndarray | None = None
        self._depth: tuple[float, np.ndarray] | None = None
        self._frame_arrived = 0.0  # time.monotonic() when the newest frame reached the buffer
        self._sim_time: float | None = None  # the latest /clock, with use_sim_time
        self._queries: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self.agent: Agent | None = None
        self.ttrl = None  # the test-time RL worker, with ttrl:=true

    # --- lifecycle: load on activate, free on deactivate ----------------------------------------
    def activate(self) -> None:
        c = self.config

        def sam2_options(backend: str) -> dict:  # only the sam2 backends take a checkpoint
            return {"checkpoint": c.segment_checkpoint} if backend == "sam2" else {}

        toolbox = Toolbox(ToolboxConfig(ocr_backend=c.ocr_backend, segment_backend=c.segment_backend,
                                        segment_options=sam2_options(c.segment_backend), track_backend=c.track_backend,
                                        track_options=sam2_options(c.track_backend), tool_time_budget_s=c.tool_time_budget_s))
        try:
            toolbox.build_all()  # a bad backend or SAM 2 checkpoint fails here, not on every call
        except ToolError as e:
            raise ConfigError(f"the tools cannot start: {e}") from None
        policy = build_policy(c)
        if c.ttrl:
            policy = self._start_ttrl(policy)
        self.agent = Agent(policy, toolbox, AgentLimits(max_steps=c.max_steps, max_query_chars=c.max_query_chars))
        self._worker = threading.Thread(target=self._serve, name="pixelis-agent", daemon=True)
        self._worker.start()
        served = (f"script {c.trace}" if c.trace else "scripts brought by the queries" if policy is None
                  else f"model {getattr(policy, 'folder', None) or c.model or 'bundled'} (backend {getattr(policy, 'name', c.backend)})")
        self.log("info", f"active: {served}, tools {', '.join(toolbox.enabled)}, max_steps {c.max_steps}"
                         + (", test-time RL on" if c.ttrl else ""))
        self.publish_diagnostics()  # a fresh node says it is up before any frame arrives

    def _start_ttrl(self, policy):
        """The served policy wrapped for adapter swaps, and the test-time RL worker started."""
        from pixelis_ros.policy.base import PolicyError
        from pixelis_ros.policy.bundled import bundled_model, cache_dir
        from pixelis_ros.training.config import ConfigError as RecipeError, load_config
        from pixelis_ros.ttrl.config import TTRLConfig
        from pixelis_ros.ttrl.worker import start_ttrl

        c = self.config
        try:
            ttrl_config = load_config(c.ttrl_config or None, cls=TTRLConfig)
        except RecipeError as e:
            raise ConfigError(f"parameter 'ttrl_config': {e}") from None
        model_dir = Path(c.model) if c.model else (bundled_model() if c.backend == "torch" else policy.folder)
        state = Path(c.ttrl_state) if c.ttrl_state else cache_dir() / "ttrl" / model_dir.name
        try:
            serving, self.ttrl = start_ttrl(policy, model_dir, ttrl_config, state, log=self._error)
        except (PolicyError, OSError) as e:
            raise ConfigError(f"parameter 'ttrl': {e}") from None
        return serving

    def deactivate(self) -> None:
        if self._worker is not None:
            self._queries.put(None)
            self._worker.join(timeout=30)
        if self.ttrl is not None:
            self.ttrl.stop()  # saves the state
        self._worker, self.agent, self.ttrl = None, None, None

    # --- inputs -----------------------------------------------------------------------------------
    def on_image(self, msg) -> None:
        """Camera callback: decode into the FrameBuffer, nothing more."""
        try:
            image = M.image_from_msg(msg)
            stamp = M.stamp_seconds(msg.header)
            newest = self.frames.newest_stamp()
            if newest is not None and stamp < newest:
                self.frames.clear()
                self.counters.time_resets += 1
                self._error(f"time jumped back from {newest:.3f} s to {stamp:.3f} s: frame buffer cleared "
                            "(simulation reset, bag loop or camera restart)", warn="time_reset")
            self.frames.add(image, stamp, msg.header.frame_id, depth=self._paired_depth(stamp))
            self._frame_arrived = time.monotonic()
            self.counters.frames += 1
            offset = self.now() - stamp
            if abs(offset) > CLOCK_MISMATCH_S:  # logged only: the frame is fine, the setup is not
                self._warn("clock_mismatch", f"frames are stamped {offset:.0f} s from the node's clock: the camera does "
                           "not stamp in this node's time (set use_sim_time for simulated or replayed time, or fix the "
                           "camera driver's clock); frame ages and max_frame_age_s are meaningless until then")
        except ImageDecodeError as e:
            self.counters.bad_images += 1
            self._error(f"bad image message: {e}", warn="bad_image")
        except ValueError as e:  # out of order or too large for the buffer
            self.counters.dropped_frames += 1
            self._error(f"frame dropped: {e}", warn="dropped_frame")

    def on_depth(self, msg) -> None:
        try:
            depth = M.image_from_msg(msg)
        except ImageDecodeError as e:
            self.counters.bad_images += 1
            self._error(f"bad depth message: {e}", warn="bad_depth")
            return
        metres = depth.astype(np.float32) / 1000.0 if depth.dtype == np.uint16 else depth.astype(np.float32)
        self._depth = (M.stamp_seconds(msg.header), metres)

    def on_clock(self, msg) -> None:
        """rosgraph_msgs/Clock: the simulation's time (used with ``use_sim_time``)."""
        self._sim_time = M.stamp_seconds(msg)

    def now(self) -> float:
        """ROS time: the simulation's (0 until the first /clock) with ``use_sim_time``, else ``clock()``."""
        if self.config.use_sim_time:
            return self._sim_time or 0.0
        return self.clock()

    def on_camera_info(self, msg) -> None:
        self.camera_k = np.asarray(msg.k, np.float64).reshape(3, 3)

    def on_query(self, text) -> None:
        self.counters.queries += 1
        script = None
        if self.config.accept_scripts:
            text, script, problem = self._scripted_query(text)
        else:
            problem = None
        problem = problem or self._check_query(text)
        if problem:
            self.counters.rejected_queries += 1
            self._answer_error(str(text)[:200], problem)
            return
        self._queries.put((text, time.monotonic(), script, None))

    def submit_goal(self, goal: AskGoal) -> str | None:
        """Queue an Ask goal; the reason it cannot run, else None. A goal that cannot run ends at
        once: ``on_done`` gets a record with that ``error`` (``stop_reason`` "rejected")."""
        problem = self._check_query(goal.question)
        if problem is None and goal.tools:
            try:
                self.agent.toolbox.subset(goal.tools)
            except ToolError as e:
                problem = f"goal tools: {e}"
        if problem is not None:
            self.counters.rejected_queries += 1
            self.log("warn", f"goal rejected: {problem}")
            goal.on_done({"query": goal.question, "answer": None, "error": problem, "stop_reason": "rejected"}, None, 0.0, "")
            return problem
        self.counters.queries += 1
        self.counters.goals += 1
        self._queries.put((goal.question, time.monotonic(), None, goal))
        return None

    def on_bad_query(self, problem: str) -> None:
        """A query message that could not be read at all (e.g. a string that is not UTF-8)."""
        self.counters.queries += 1
        self.counters.rejected_queries += 1
        self._answer_error("", problem)

    @staticmethod
    def _scripted_query(text) -> tuple[str, str | None, str | None]:
        """``accept_scripts``: a query is ``{"query": ..., "script": ...}`` (the simulator's oracle
        sends each question with its expert trace); plain text still uses the node's policy."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            return text, None, None
        except RecursionError:  # json nests by recursion: a 100,000-deep query would end the callback
            return str(text), None, "the query is JSON nested too deeply to read (a scripted query is one flat object)"
        if not isinstance(data, dict) or not isinstance(data.get("query"), str) or not isinstance(data.get("script"), str):
            return str(text), None, 'a scripted query must be {"query": str, "script": str}'
        return data["query"], data["script"], None

    # --- episode worker ------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            job = self._queries.get()
            if job is None:
                return
            self._run(*job)

    def run_query(self, text: str, script: str | None = None, goal: AskGoal | None = None) -> Episode | None:
        """Run one query now, on the calling thread, and publish its outputs (bag replays; the
        nodes queue theirs for the worker). ``script``: a CoTA script instead of the policy."""
        if goal is None:  # a goal was counted when submitted
            self.counters.queries += 1
        return self._run(text, time.monotonic(), script, goal)

    def _run(self, text: str, received: float, script: str | None, goal: AskGoal | None) -> Episode | None:
        """One episode on the current frames (up to the goal's stamp), its outputs published.
        ``received``: ``time.monotonic()`` when the query arrived."""
        goal = goal or AskGoal(text)
        frames = self.frames.snapshot()
        if goal.frame_stamp and len(frames):
            frames = Frames([f for f in frames if f.stamp <= goal.frame_stamp + 1e-6])
            if len(frames) == 0:
                return self._goal_error(goal, text, f"no buffered frame is stamped at or before {goal.frame_stamp:.3f} s")
        if len(frames) == 0:
            return self._goal_error(goal, text, "no camera frame has been received yet")
        if script is None and self.agent.policy is None:
            return self._goal_error(goal, text, "this node has no policy: the query must bring a script (accept_scripts)")
        if goal.cancelled():
            self.counters.cancelled_goals += 1
            return self._goal_error(goal, text, "cancelled before it started", stop_reason="cancelled")
        started = time.monotonic()
        self.counters.last_queue_ms = (started - received) * 1000
        self.counters.last_frame_age_ms = (self.now() - frames[-1].stamp) * 1000
        self.counters.last_arrival_age_ms = (started - self._frame_arrived) * 1000
        agent = self._agent_for(script, goal)
        goal.on_started()
        steps: list = []

        def on_step(record) -> None:
            steps.append(record)
            goal.on_step(len(steps), record.to_json(), (time.monotonic() - started) * 1000)

        episode = agent.run(text, frames, on_step=on_step, cancelled=goal.cancelled)
        self.counters.episodes += 1
        self.counters.cancelled_goals += episode.stop_reason == "cancelled"
        self.counters.last_error = episode.error or ""  # diagnostics show the latest news, not old errors
        self.counters.last_latency_ms = (time.monotonic() - received) * 1000
        record, target = self._publish_episode(episode, frames)
        self.log("info", f"query {clip(text, 120)} -> {clip(str(episode.answer), 120)} ({episode.stop_reason}, "
                         f"{len(episode.records)} steps, {self.counters.last_latency_ms:.0f} ms)"
                         + (f": {clip(episode.error, 200)}" if episode.error else ""))
        goal.on_done(record, target, frames[-1].stamp, frames[-1].frame_id)
        if self.ttrl is not None and script is None and episode.error is None:
            self.ttrl.submit(text, frames)
        return episode

    def _agent_for(self, script: str | None, goal: AskGoal) -> Agent:
        """The node's agent, or one with the script's policy, the goal's tools or step cap."""
        agent = self.agent
        if script is None and not goal.tools and not goal.max_steps:
            return agent
        limits = agent.limits
        if goal.max_steps:
            limits = AgentLimits(max_steps=min(goal.max_steps, limits.max_steps), max_episode_pixels=limits.max_episode_pixels,
                                 max_query_chars=limits.max_query_chars)
        policy = ScriptedPolicy(script) if script is not None else agent.policy
        return Agent(policy, agent.toolbox.subset(goal.tools) if goal.tools else agent.toolbox, limits)

    def _goal_error(self, goal: AskGoal, text: str, message: str, stop_reason: str = "error") -> None:
        record = self._answer_error(text, message)
        goal.on_done({**record, "stop_reason": stop_reason}, None, 0.0, "")
        return None

    def _publish_episode(self, episode: Episode, frames: Frames) -> tuple[dict, tuple[float, float, float] | None]:
        """Publish an episode's outputs; the answer record and the target point (or None)."""
        frame = frames[-1]
        stamp, frame_id = frame.stamp, frame.frame_id
        record = {"query": episode.query, "answer": episode.answer, "action": episode.action,
                  "stop_reason": episode.stop_reason, "error": episode.error,
                  "frame": {"stamp": stamp, "frame_id": frame_id}, "latency_ms": round(self.counters.last_latency_ms, 2),
                  "queue_ms": round(self.counters.last_queue_ms, 2), "trace": episode.to_json()}
        self.publish("answer", M.answer_msg(record))
        self.publish("detections", M.detections_msg(self._current_boxes(episode, frames), stamp, frame_id))
        target = None
        if episode.action:
            target = self._target_point(episode.action["point_2d"], frame)
            self.publish("target", M.point_msg(*target, stamp, frame_id))
        if self.config.publish_annotated:
            self.publish("annotated", M.image_msg(render_episode(episode, frames), stamp, frame_id))
        self.publish_diagnostics()
        return record, target

    @staticmethod
    def _current_boxes(episode: Episode, frames: Frames) -> list[tuple[str, tuple, float]]:
        """(label, box, score) of the detections in the newest frame, the one the message's
        header names: a track's boxes in earlier frames stay in the trace only."""
        newest = len(frames) - 1
        boxes = []
        for det in episode.detections:
            ref, box = episode.to_frame(det)
            try:
                kind, value = parse_image_ref(ref)
                index = frames.index_at(value) if isinstance(value, float) else frames.index_of(value)
            except (ToolError, LookupError):
                continue
            if kind == "frame" and index == newest:
                boxes.append((det.label, box, det.score if det.score is not None else 1.0))
        return boxes

    def _target_point(self, point, frame: Frame) -> tuple[float, float, float]:
        """3D in the camera frame when depth and intrinsics exist; else pixel x, y and z = 0."""
        x, y = point
        if frame.depth is None or self.camera_k is None:
            return float(x), float(y), 0.0
        h, w = frame.depth.shape
        z = float(frame.depth[min(h - 1, int(y)), min(w - 1, int(x))])
        k = self.camera_k
        if not np.isfinite(z) or z <= 0:
            return float(x), float(y), 0.0
        return (x - k[0, 2]) * z / k[0, 0], (y - k[1, 2]) * z / k[1, 1], z

    # --- helpers ---------------------------------------------------------------------------------
    def _paired_depth(self, stamp: float) -> np.ndarray | None:
        if self._depth is not None and abs(self._depth[0] - stamp) <= DEPTH_PAIRING_S:
            return self._depth[1]
        return None

    def _check_query(self, text) -> str | None:
        if not isinstance(text, str) or not text.strip():
            return "the query is empty"
        if len(text) > self.config.max_query_chars:
            return f"the query has {len(text)} characters, over the limit of {self.config.max_query_chars}"
        if self.agent is None:
            return "the node is not active (no policy loaded)"
        frames = self.frames.snapshot()
        if len(frames) == 0:
            return "no camera frame has been received yet"
        age = self.now() - frames[-1].stamp
        if self.config.max_frame_age_s and age > self.config.max_frame_age_s:
            return f"the newest camera frame is {age:.2f} s old (max_frame_age_s={self.config.max_frame_age_s:g}); is the camera running?"
        return None

    def _answer_error(self, query: str, message: str) -> dict:
        self.counters.last_error = message
        record = {"query": query, "answer": None, "error": message}
        self.publish("answer", M.answer_msg(record))
        self.publish_diagnostics()
        self.log("warn", f"query {clip(str(query), 120)} not answered: {message}")
        return record

    def _error(self, message: str, warn: str | None = None) -> None:
        """Record an error for the diagnostics; ``warn``: also log it (``_warn``, of that kind)."""
        self.counters.last_error = message
        self.publish_diagnostics()
        if warn is not None:
            self._warn(warn, message)

    def _warn(self, kind: str, message: str) -> None:
        """Log a warning at most every ``WARN_EVERY_S`` per kind (a broken camera must not flood the log)."""
        now = time.monotonic()
        last, suppressed = self._warned.get(kind, (-WARN_EVERY_S, 0))
        if now - last < WARN_EVERY_S:
            self._warned[kind] = (last, suppressed + 1)
            return
        self._warned[kind] = (now, 0)
        self.log("warn", message + (f" ({suppressed} more like it since the last warning)" if suppressed else ""))

    def publish_diagnostics(self) -> None:
        c = self.counters
        level = 1 if c.last_error else 0  # WARN while an error is the latest news
        ttrl = self.ttrl.status() if self.ttrl is not None else {"ttrl": "off"}
        values = {**vars(c), "buffered_frames": len(self.frames), "queue": self._queries.qsize(), **ttrl}
        self.publish("diagnostics", M.diagnostics_msg("pixelis_agent", level, c.last_error or "ok", values, self.now()))
