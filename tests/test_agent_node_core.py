"""The agent node's ROS-free core and parameters: the logic the rclpy node and the DDS runner share."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pixelis_ros import messages as M
from pixelis_ros.demo import demo_script, make_sign_scene
from pixelis_ros.node.agent_core import TOPICS, AgentNodeCore
from pixelis_ros.node.config import AgentNodeConfig, ConfigError, parameter_docs

REPO = Path(__file__).resolve().parents[1]


def test_parameter_file_matches_the_config():
    params = yaml.safe_load((REPO / "config" / "agent.yaml").read_text())["pixelis_agent"]["ros__parameters"]
    names = [f.name for f in dataclasses.fields(AgentNodeConfig)]
    assert sorted(params) == sorted(names)
    assert AgentNodeConfig.from_yaml(REPO / "config" / "agent.yaml") == AgentNodeConfig()
    assert set(parameter_docs()) == set(names) and all(parameter_docs().values())


@pytest.mark.parametrize("params, message", [
    ({"modle": "x"}, "unknown pixelis_agent parameter(s) ['modle']"),
    ({"max_steps": "8"}, "parameter 'max_steps' must be int, got str"),
    ({"publish_annotated": 1}, "parameter 'publish_annotated' must be bool, got int"),
    ({"image_reliability": "sometimes"}, "must be best_effort or reliable"),
    ({"ttrl": True, "trace": "x.txt"}, "cannot adapt a replayed script"),
])
def test_bad_parameters(params, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        AgentNodeConfig.from_parameters(params)


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def scene(tmp_path):
    img, box, text = make_sign_scene(1)
    trace = tmp_path / "trace.txt"
    trace.write_text(demo_script(box))
    return img, box, text, trace


def outputs(published, topic):
    return [m for t, m in published if t == topic]


def test_episode_outputs_carry_the_frame_header(scene):
    img, box, text, trace = scene
    published, clock = [], Clock()
    core = AgentNodeCore(AgentNodeConfig(trace=str(trace)), lambda t, m: published.append((t, m)), clock)
    core.activate()
    try:
        core.on_image(M.image_msg(img, clock.now - 0.05, "front_camera"))
        episode = core.run_query("What does the sign say?")
    finally:
        core.deactivate()
    assert episode.answer.replace(" ", "") == text.replace(" ", "")
    answer = json.loads(outputs(published, "answer")[0].data)
    assert answer["answer"] == episode.answer and answer["trace"]["chain_length"] == 2
    assert answer["frame"] == {"stamp": pytest.approx(clock.now - 0.05), "frame_id": "front_camera"}
    detections = outputs(published, "detections")[0]
    assert detections.header.frame_id == "front_camera" and {d.id for d in detections.detections} >= {"zoom"}
    target = outputs(published, "target")[0]
    assert box[0] <= target.point.x <= box[2] and target.point.z == 0.0  # no depth: pixel coordinates
    annotated = outputs(published, "annotated")[0]
    assert (annotated.height, annotated.width) == img.shape[:2] and M.stamp_seconds(annotated.header) == pytest.approx(clock.now - 0.05)
    for topic, msg in published:  # every output is a valid ROS message of its declared type
        assert msg.__msgtype__ == TOPICS[topic] and M.deserialize(M.serialize(msg), TOPICS[topic])


def test_bad_input_is_reported_and_the_node_keeps_running(scene):
    img, _, _, trace = scene
    published, clock = [], Clock()
    core = AgentNodeCore(AgentNodeConfig(trace=str(trace), max_query_chars=50), lambda t, m: published.append((t, m)), clock)
    core.on_query("before activation")
    core.activate()
    try:
        core.on_query("before any frame")
        truncated = M.image_msg(img[:20, :20], clock.now, "cam")
        truncated.data = truncated.data[:30]
        core.on_image(truncated)
        wrong = M.image_msg(img[:20, :20], clock.now, "cam")
        wrong.encoding = "rgb16"
        core.on_image(wrong)
        core.on_image(M.image_msg(img, clock.now - 10, "cam"))
        core.on_query("stale camera")
        core.on_query("")
        core.on_query("x" * 51)
        core.on_image(M.image_msg(img, clock.now - 20, "cam"))  # time jumped back: a new history
        kept = [f.stamp for f in core.frames.snapshot()]
    finally:
        core.deactivate()
    errors = [json.loads(m.data)["error"] for m in outputs(published, "answer")]
    assert errors == ["the node is not active (no policy loaded)", "no camera frame has been received yet",
                      "the newest camera frame is 10.00 s old (max_frame_age_s=2); is the camera running?",
                      "the query is empty", "the query has 51 characters, over the limit of 50"]
    c = core.counters
    assert (c.bad_images, c.frames, c.time_resets, c.rejected_queries) == (2, 2, 1, 5)
    assert kept == [pytest.approx(clock.now - 20)]
    last = outputs(published, "diagnostics")[-1].status[0]
    assert last.level == 1 and "time jumped back" in last.message and "frame buffer cleared" in last.message
    assert {kv.key for kv in last.values} >= {"frames", "dropped_frames", "bad_images", "last_latency_ms", "ttrl"}


def test_worker_thread_answers_queries_and_3d_target(scene):
    img, box, _, trace = scene
    published = []
    core = AgentNodeCore(AgentNodeConfig(trace=str(trace), max_frame_age_s=0), lambda t, m: published.append((t, m)))
    depth = np.full(img.shape[:2], 2.5, np.float32)
    k = [1000.0, 0, img.shape[1] / 2, 0, 1000.0, img.shape[0] / 2, 0, 0, 1]
    core.on_camera_info(M.msg_type("sensor_msgs/msg/CameraInfo")(
        header=M.header(0, "cam"), height=img.shape[0], width=img.shape[1], distortion_model="plumb_bob",
        d=np.zeros(5), k=np.array(k), r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0, binning_y=0,
        roi=M.msg_type("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)))
    core.on_depth(M.image_msg(depth, 5.0, "cam", encoding="32FC1"))
    core.on_image(M.image_msg(img, 5.0, "cam"))
    core.activate()
    core.on_query("What does the sign say?")
    deadline = time.monotonic() + 60
    while not outputs(published, "target") and time.monotonic() < deadline:
        time.sleep(0.05)
    core.deactivate()
    point = outputs(published, "target")[0].point
    assert point.z == pytest.approx(2.5)
    cx = (box[0] + box[2]) / 2
    assert point.x == pytest.approx((cx - img.shape[1] / 2) * 2.5 / 1000.0, abs=0.1)


def test_checkpoint_reaches_only_sam2_backends(scene):
    core = AgentNodeCore(AgentNodeConfig(trace=str(scene[3]), segment_checkpoint="sam2.safetensors"), lambda t, m: None)
    core.activate()
    try:
        assert core.agent.toolbox.config.segment_options == {} and core.agent.toolbox.config.track_options == {}
    finally:
        core.deactivate()


def test_policy_configuration_errors(tmp_path):
    with pytest.raises(ConfigError, match="parameter 'trace': cannot read"):
        AgentNodeCore(AgentNodeConfig(trace=str(tmp_path / "none.txt")), lambda t, m: None).activate()
    with pytest.raises(ConfigError, match=r"parameter 'model' \(/nonexistent/pixelis-tiny, backend auto\)"):
        AgentNodeCore(AgentNodeConfig(model="/nonexistent/pixelis-tiny"), lambda t, m: None).activate()
    with pytest.raises(ConfigError, match="unknown policy backend|must be torch, onnx or tensorrt"):
        AgentNodeCore(AgentNodeConfig(model="/nonexistent/pixelis-tiny", backend="jax"), lambda t, m: None).activate()


@pytest.mark.skipif(importlib.util.find_spec("rclpy") is None, reason="rclpy is not installed here (no ROS 2); the node is a thin adapter over AgentNodeCore")
def test_rclpy_nodes_import():
    from pixelis_ros.node import sim_core
    from pixelis_ros.ros import agent_node, sim_node
    assert agent_node.OUTPUTS.keys() == TOPICS.keys()
    assert sim_node.OUTPUTS.keys() == sim_core.TOPICS.keys()


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="ROS 2 launch is not installed here")
@pytest.mark.parametrize("name", ["agent.launch.py", "sim.launch.py"])
def test_launch_files_parse(name):
    from launch.actions import DeclareLaunchArgument
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), REPO / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description().entities
    arguments = [e for e in entities if isinstance(e, DeclareLaunchArgument)]
    assert arguments and all(a.description for a in arguments)


def test_scripted_queries_replay_their_own_trace(scene):
    img, box, text, trace = scene
    published, clock = [], Clock()
    core = AgentNodeCore(AgentNodeConfig(accept_scripts=True), lambda t, m: published.append((t, m)), clock)
    core.activate()  # no trace and no model: every query must bring its script
    try:
        core.on_image(M.image_msg(img, clock.now, "cam"))
        assert core.run_query("What does the sign say?") is None
        core.on_query(json.dumps({"query": "What does the sign say?", "script": 3}))
        episode = core.run_query("What does the sign say?", script=trace.read_text())
    finally:
        core.deactivate()
    errors = [json.loads(m.data)["error"] for m in outputs(published, "answer")[:2]]
    assert errors == ["this node has no policy: the query must bring a script (accept_scripts)",
                      'a scripted query must be {"query": str, "script": str}']
    assert episode.answer.replace(" ", "") == text.replace(" ", "")


def test_node_serves_a_model_folder(tiny_models, scene):
    """The node loads a model folder through its backend on activate and publishes what the
    (random, tiny) model does: a real answer message, whatever its content."""
    img, _, _, _ = scene
    published, clock = [], Clock()
    core = AgentNodeCore(AgentNodeConfig(model=str(tiny_models["qwen3_vl"]), max_steps=1), lambda t, m: published.append((t, m)), clock)
    core.activate()
    try:
        assert type(core.agent.policy).__name__ == "HFPolicy"
        core.on_image(M.image_msg(img, clock.now, "cam"))
        episode = core.run_query("What does the sign say?")
    finally:
        core.deactivate()
    record = json.loads(outputs(published, "answer")[0].data)
    assert record["stop_reason"] == episode.stop_reason and len(record["trace"]["steps"]) == 1
    assert record["trace"]["steps"][0]["generate_ms"] > 0


def test_sim_time_judges_frame_age(scene):
    img, _, _, trace = scene
    published = []
    core = AgentNodeCore(AgentNodeConfig(trace=str(trace), use_sim_time=True), lambda t, m: published.append((t, m)))
    core.activate()
    try:
        core.on_image(M.image_msg(img, 3.0, "sim_camera"))  # simulation seconds: decades "old" in wall time
        core.on_clock(M.clock_msg(4.0))
        assert core.now() == 4.0 and core.run_query("What does the sign say?").answer
        core.on_clock(M.clock_msg(13.0))
        core.on_query("What does the sign say?")
    finally:
        core.deactivate()
    errors = [json.loads(m.data).get("error") for m in outputs(published, "answer")]
    assert errors[-1] == "the newest camera frame is 10.00 s old (max_frame_age_s=2); is the camera running?"
    assert M.stamp_seconds(outputs(published, "diagnostics")[-1].header) == 13.0


def test_deeply_nested_json_query_is_answered_with_an_error(scene):
    # json.loads recursed out of on_query (RecursionError) before: the node answered nothing.
    img, box, text, trace = scene
    published, clock = [], Clock()
    core = AgentNodeCore(AgentNodeConfig(accept_scripts=True), lambda t, m: published.append((t, m)), clock)
    core.activate()
    try:
        core.on_image(M.image_msg(img, clock.now, "cam"))
        core.on_query("[" * 100_000 + "]" * 100_000)
        core.on_query(json.dumps({"query": "What does the sign say?", "script": trace.read_text()}))
        deadline = time.monotonic() + 60
        while len(outputs(published, "answer")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        core.deactivate()
    first, second = (json.loads(m.data) for m in outputs(published, "answer")[:2])
    assert first["error"] == "the query is JSON nested too deeply to read (a scripted query is one flat object)"
    assert len(first["query"]) <= 200
    assert second["answer"].replace(" ", "") == text.replace(" ", "")  # and the node keeps answering


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe" + "pixelis_agent:\n".encode("utf-16-le"), r"not UTF-8 text \(byte 0xff at offset 0\)"),
    (b"- pixelis_agent\n- 1\n", r"no 'pixelis_agent: ros__parameters:' mapping \(the file holds a list\)"),
    (b"pixelis_agent: " + b"[" * 100_000 + b"\n", r"nested too deeply to parse"),
    (b"pixelis_agent:\n  ros__parameters:\n    max_steps: '" + b"x" * 5000 + b"'\n",
     r"parameter 'max_steps' must be int, got str 'xxx[x]*\.\.\.$"),
])
def test_unreadable_parameter_files_are_config_errors(tmp_path, content, message):
    path = tmp_path / "params.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        AgentNodeConfig.from_yaml(path)
    assert len(str(info.value)) < 400


def test_trace_that_is_not_utf8_is_a_config_error(tmp_path):
    trace = tmp_path / "trace.txt"
    trace.write_bytes("<answer>caf\u00e9</answer>".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"parameter 'trace': cannot read .*trace.txt: not UTF-8 text "
                                          r"\(byte 0xe9 at offset 11\); save the trace as UTF-8"):
        AgentNodeCore(AgentNodeConfig(trace=str(trace)), lambda t, m: None).activate()
