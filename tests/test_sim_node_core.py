"""The sim node's core wired to the agent node's core in one process (no transport): frames,
depth and camera_info reach the agent, questions get answered and scored, gaze moves the camera,
and an answer about another episode is not taken for this one's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pixelis_ros import messages as M
from pixelis_ros.node.agent_core import AgentNodeCore
from pixelis_ros.node.config import AgentNodeConfig, ConfigError, SimNodeConfig
from pixelis_ros.node.sim_core import SimNodeCore


class Wire:
    """Routes the sim's outputs to the agent's inputs and the agent's answers back."""

    def __init__(self):
        self.sim: SimNodeCore | None = None
        self.agent: AgentNodeCore | None = None
        self.log: list[tuple[str, object]] = []

    def from_sim(self, topic, msg):
        self.log.append((topic, msg))
        handler = {"image": self.agent.on_image, "depth": self.agent.on_depth, "camera_info": self.agent.on_camera_info,
                   "clock": self.agent.on_clock, "query": lambda m: self.agent.on_query(m.data)}.get(topic)
        if handler:
            handler(msg)

    def from_agent(self, topic, msg):
        if topic == "answer":
            self.sim.on_answer(msg.data)


@pytest.fixture
def wired():
    wire = Wire()
    wire.agent = AgentNodeCore(AgentNodeConfig(accept_scripts=True, use_sim_time=True, publish_annotated=False), wire.from_agent)
    wire.sim = SimNodeCore(SimNodeConfig(suite="smoke", episodes=6, speed=0, oracle=True, answer_timeout_s=120), wire.from_sim)
    wire.agent.activate()
    yield wire
    wire.agent.deactivate()


def test_oracle_episodes_are_streamed_answered_and_scored(wired):
    summary = wired.sim.run()
    assert summary["episodes"] == 6 and summary["answered"] == 6 and len(summary["families"]) == 6
    assert summary["accuracy"] >= 5 / 6 and summary["acting_success"] >= 5 / 6
    topics = [t for t, _ in wired.log]
    assert {"image", "depth", "camera_info", "clock", "query", "episode"} <= set(topics)
    # Each episode restarts simulation time: the agent cleared its buffer five times.
    assert wired.agent.counters.time_resets == 5
    results = [json.loads(m.data) for t, m in wired.log if t == "episode"]
    assert [r["index"] for r in results] == list(range(6)) and all(r["latency_ms"] > 0 for r in results)
    info = next(m for t, m in wired.log if t == "camera_info")
    assert info.k[2] == info.width / 2 and info.k[0] == pytest.approx(info.height / 2 / np.tan(np.radians(30)))


def test_gaze_moves_the_camera_and_publishes_the_view(wired):
    sim = wired.sim
    sim.on_gaze(M.vector3_msg(10.0, 0.0, 0.5))
    assert "before the first episode" in sim.errors[-1]
    sim.open()
    try:
        sim.load(0)
        start = sim.camera
        before = len(wired.log)
        sim.on_gaze(M.vector3_msg(10.0, 0.0, 0.5))
        new = wired.log[before:]
        images = [m for t, m in new if t == "image"]
        infos = [m for t, m in new if t == "camera_info"]
        assert len(images) == 1 and sim.camera.yaw == pytest.approx(start.yaw + 10)
        assert infos[0].k[0] > M.camera_info_msg(640, 480, start.fovy, 0, "").k[0]  # zoomed in: longer focal length
        assert wired.agent.frames.snapshot()[-1].image.shape == (images[0].height, images[0].width, 3)
        sim.on_gaze(M.vector3_msg(float("nan"), 0.0, 0.0))
        assert "non-finite" in sim.errors[-1] and sim.camera.yaw == pytest.approx(start.yaw + 10)
    finally:
        sim.close()


def test_answers_to_other_questions_or_episodes_are_ignored(wired):
    from pixelis_ros.node.sim_core import _Pending
    sim = wired.sim
    sim._pending = _Pending("How many?", (0.0, 0.2), 0.0)
    sim.on_answer(json.dumps({"query": "Other?", "answer": "1", "frame": {"stamp": 0.1}}))
    sim.on_answer(json.dumps({"query": "How many?", "answer": "1", "frame": {"stamp": 1.9}}))
    sim.on_answer("not json")
    assert sim._pending.answer is None and "unreadable answer" in sim.errors[-1]
    sim.on_answer(json.dumps({"query": "How many?", "answer": "2", "frame": {"stamp": 0.2}}))
    assert sim._pending.answer["answer"] == "2"


@pytest.mark.parametrize("params, message", [
    ({"speed": -1.0}, "parameter 'speed' must be >= 0"),
    ({"still_frames": 0}, "parameter 'still_frames' must be >= 1"),
    ({"episodes": "3"}, "parameter 'episodes' must be int, got str"),
    ({"suit": "smoke"}, "unknown pixelis_sim parameter(s) ['suit']"),
])
def test_bad_sim_parameters(params, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        SimNodeConfig.from_parameters(params)
