"""SimNodeCore: the simulator node's logic with no ROS in it — a camera, a questioner and a judge.

For each episode of a task suite it streams the task's frames as a camera would (``image``
rgb8, ``depth`` 32FC1 in metres, ``camera_info``, and ``clock`` with the simulation time),
asks the task's question on ``query``, waits for the agent's ``answer`` and scores it: answer
correctness by the task's own rule, acting success by whether the answer's action points inside
a target *as seen from where the camera looks now*. Gaze commands (``gaze``,
geometry_msgs/Vector3: pan and tilt in degrees, log-zoom) move the camera and publish the new
view. Each result goes out on ``episode`` (std_msgs/String, JSON).

Every episode restarts simulation time at 0, so the agent (which clears its buffer when time
jumps back) sees exactly this episode's frames, and the temporal family's "answer in seconds"
means seconds of this clip. A still task is streamed as ``still_frames`` identical frames one
clip period apart (a paused simulation whose camera keeps publishing), so its last stamp is
after 0 and the next episode's first frame is a jump back. Frames are paced at the clip's rate
times ``speed`` (0: back to back; a keep-last-1 subscriber may then miss frames of a clip).

With ``oracle`` the query carries the task's expert trace (``{"query", "script"}``, for an agent
with ``accept_scripts``): the loop then measures the plumbing against ``pixelis sim bench
--policy oracle``. The publish callback takes rosbags dataclasses, as AgentNodeCore's does.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pixelis_ros import messages as M
from pixelis_ros.frames import Frame
from pixelis_ros.node.config import SimNodeConfig
from pixelis_ros.sim.failures import failures
from pixelis_ros.sim.families import Task

Publish = Callable[[str, object], None]
TOPICS = {"image": "sensor_msgs/msg/Image", "depth": "sensor_msgs/msg/Image", "camera_info": "sensor_msgs/msg/CameraInfo",
          "clock": "rosgraph_msgs/msg/Clock", "query": "std_msgs/msg/String", "episode": "std_msgs/msg/String"}
INPUTS = {"answer": "std_msgs/msg/String", "gaze": "geometry_msgs/msg/Vector3"}


@dataclass
class _Pending:
    query: str
    stamps: tuple[float, float]  # this episode's first and newest frame stamps: the answer names one
    sent: float  # time.monotonic()
    answer: dict | None = None
    received: float = 0.0


def summarize(results: list[dict]) -> dict:
    """The loop's JSON: episodes, answered, accuracy, acting success, latency p50/p99, per family."""
    latencies = sorted(r["latency_ms"] for r in results if r["latency_ms"] is not None)

    def pct(q: float) -> float | None:
        return round(float(np.percentile(latencies, q)), 1) if latencies else None

    families: dict[str, dict] = {}
    for name in sorted({r["family"] for r in results}):
        rows = [r for r in results if r["family"] == name]
        families[name] = {"episodes": len(rows), "accuracy": round(statistics.fmean(r["correct"] for r in rows), 4),
                          "acting_success": round(statistics.fmean(r["hit"] for r in rows), 4)}
    n = len(results)
    return {"episodes": n, "answered": sum(r["answered"] for r in results),
            "accuracy": round(sum(r["correct"] for r in results) / n, 4) if n else 0.0,
            "acting_success": round(sum(r["hit"] for r in results) / n, 4) if n else 0.0,
            "latency_ms": {"p50": pct(50), "p99": pct(99)}, "families": families,
            "failures": failures(results)}


class SimNodeCore:
    def __init__(self, config: SimNodeConfig, publish: Publish, settle: Callable[[], None] = lambda: None):
        """``settle()`` is called between an episode's last frame and its question: a transport
        blocks there until the camera's subscribers have the frames (DDS acknowledgments), so
        the question does not overtake them on another topic."""
        from pixelis_ros.sim.suites import load_suite

        config.check()
        self.config = config
        self.publish = publish
        self.settle = settle
        self.suite = load_suite(config.suite)  # SuiteError names the problem
        self.task: Task | None = None
        self.camera = None
        self.stamp = 0.0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._pending: _Pending | None = None
        self._answered = threading.Event()
        self._world = self._toolbox = None

    # --- inputs -----------------------------------------------------------------------------------
    def on_answer(self, text: str) -> None:
        """The agent's answer JSON; an answer to another query or frame is not this episode's."""
        try:
            record = json.loads(text)
            query, stamp = record["query"], record.get("frame", {}).get("stamp")
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            self.errors.append(f"unreadable answer message: {e!r}")
            return
        with self._lock:
            pending = self._pending
            if pending is None or pending.answer is not None or query != pending.query:
                return
            first, last = pending.stamps
            if stamp is not None and not first - 1e-6 <= float(stamp) <= last + 1e-6:
                return  # an answer about another episode's frames
            pending.answer, pending.received = record, time.monotonic()
        self._answered.set()

    def on_gaze(self, msg) -> None:
        """Move the camera (pan, tilt degrees; log-zoom) and publish the new view."""
        if self.task is None or self._world is None:
            self.errors.append("gaze command before the first episode: ignored")
            return
        values = (float(msg.x), float(msg.y), float(msg.z))
        if not all(np.isfinite(values)):
            self.errors.append(f"gaze command with non-finite values {values}: ignored")
            return
        with self._lock:
            self.camera = self.camera.moved(*values)
            render = self._world.render(self.task.frames[-1].stamp, self.camera, depth=True, boxes=False)
            self.stamp += self._period()
            self._stream(Frame(render.rgb, self.stamp, self.config.frame_id, render.depth))

    # --- episodes --------------------------------------------------------------------------------
    def open(self) -> None:
        """Build the renderer (a GL context) and the expert's toolbox; ``run`` does this itself."""
        from pixelis_ros.sim.world import World
        from pixelis_ros.tools import Toolbox

        self._world, self._toolbox = World(self.suite.width, self.suite.height), Toolbox()

    def close(self) -> None:
        if self._world is not None:
            self._world.close()
            self._world = None

    def load(self, index: int) -> Task:
        """Pose episode ``index`` of the suite; its scene stays loaded for gaze and scoring."""
        from pixelis_ros.sim.suites import family_schedule, make_episode

        task = make_episode(self.suite, index, family_schedule(self.suite, index + 1)[index], self._world, self._toolbox)
        with self._lock:
            self.task, self.camera = task, self._world.scene.camera
        return task

    def run(self, on_result: Callable[[dict], None] | None = None, show_progress: bool = False) -> dict:
        """Play the configured episodes; returns ``summarize`` of their results. ``show_progress``:
        a bar on stderr by ``progress``'s rule (``pixelis sim loop``; a node on its own stays quiet)."""
        from pixelis_ros.progress import progress

        c = self.config
        n = c.episodes or max(0, self.suite.episodes - c.start)
        results = []
        self.open()
        try:
            for i in progress(range(c.start, c.start + n), desc="sim loop", unit="episode", enabled=None if show_progress else False):
                result = self.play(i, self.load(i))
                results.append(result)
                self.publish("episode", M.string_msg(json.dumps(result)))
                if on_result is not None:
                    on_result(result)
        finally:
            self.close()
        return summarize(results)

    def play(self, index: int, task: Task) -> dict:
        """Stream one task, ask its question, wait for the answer and score it."""
        first = task.frames[0]
        frames = list(task.frames) if len(task.frames) > 1 else \
            [Frame(first.image, k * self._period(), "", first.depth) for k in range(self.config.still_frames)]
        previous = None
        for frame in frames:
            if previous is not None and self.config.speed > 0:
                time.sleep((frame.stamp - previous) / self.config.speed)
            previous = frame.stamp
            with self._lock:
                self.stamp = frame.stamp
                self._stream(frame)
        self.settle()
        with self._lock:
            self._pending = _Pending(task.question, (frames[0].stamp, self.stamp), time.monotonic())
            self._answered.clear()
        query = json.dumps({"query": task.question, "script": task.trace}) if self.config.oracle else task.question
        self.publish("query", M.string_msg(query))
        self._answered.wait(self.config.answer_timeout_s)
        with self._lock:
            pending, self._pending = self._pending, None
        return self._score(index, task, pending)

    def _score(self, index: int, task: Task, pending: _Pending) -> dict:
        record = pending.answer or {}
        answer, action = record.get("answer"), record.get("action")
        return {"index": index, "task_id": task.id, "family": task.family, "question": task.question,
                "truth": task.answer, "answer": answer, "answered": answer is not None,
                "correct": task.is_correct(answer), "hit": self._hit(task, action),
                "latency_ms": round((pending.received - pending.sent) * 1000, 2) if pending.answer else None,
                "error": record.get("error") if pending.answer else f"no answer within {self.config.answer_timeout_s:g} s"}

    def _hit(self, task: Task, action: dict | None) -> bool:
        """Acting success in the view the camera has now (gaze may have moved it)."""
        if self.camera == self._world.scene.camera or not action:
            return task.hit(action)
        render = self._world.render(task.frames[-1].stamp, self.camera, depth=False, boxes=True)
        return task.hit(action, [render.boxes.get(n) for n in task.targets])

    # --- helpers ---------------------------------------------------------------------------------
    def _period(self) -> float:
        return 1.0 / self.suite.clip.fps

    def _stream(self, frame: Frame) -> None:
        c, stamp = self.config, frame.stamp
        h, w = frame.image.shape[:2]
        self.publish("clock", M.clock_msg(stamp))
        self.publish("camera_info", M.camera_info_msg(w, h, self.camera.fovy, stamp, c.frame_id))
        if frame.depth is not None:
            depth = np.nan_to_num(frame.depth, nan=0.0, posinf=0.0).astype(np.float32, copy=False)
            self.publish("depth", M.image_msg(depth, stamp, c.frame_id, encoding="32FC1"))
        self.publish("image", M.image_msg(frame.image, stamp, c.frame_id))
