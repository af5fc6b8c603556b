"""The agent node on a robot: the Ask action (DDS wire, ROS 2 action protocol), remapping, logs,
``pixelis ask``, detections of the newest frame only, and the interface package.

The action tests run the real ``pixelis node agent`` in a child process and talk to it only over
DDS, as a ROS 2 peer with rmw_cyclonedds would: send_goal / get_result / cancel_goal services
and the feedback and status topics under ``<ns>/ask/_action/``.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pixelis_ros import ask_action as A, messages as M
from pixelis_ros.demo import demo_script, make_sign_scene
from pixelis_ros.node.agent_core import TOPICS, AgentNodeCore
from pixelis_ros.node.config import AgentNodeConfig

REPO = Path(__file__).resolve().parents[1]
_domains = itertools.count()


def test_action_types_follow_rosidl():
    """Every type rosidl derives from Ask.action is registered, with the goal/result/feedback
    fields of the file and the service layouts of rcl_action."""
    A.register_types()
    fields = {name: [f for f, _ in M.typestore().fielddefs[name][1]] for name in M.typestore().fielddefs
              if name.startswith(A.ACTION) or name.startswith(A.CANCEL)}
    assert fields[f"{A.ACTION}_Goal"] == ["question", "frame_stamp", "tools", "max_steps"]
    assert fields[f"{A.ACTION}_SendGoal_Request"] == ["goal_id", "goal"]
    assert fields[f"{A.ACTION}_SendGoal_Response"] == ["accepted", "stamp"]
    assert fields[f"{A.ACTION}_GetResult_Request"] == ["goal_id"]
    assert fields[f"{A.ACTION}_GetResult_Response"] == ["status", "result"]
    assert fields[f"{A.ACTION}_FeedbackMessage"] == ["goal_id", "feedback"]
    assert fields[f"{A.CANCEL}_Response"] == ["return_code", "goals_canceling"]
    assert "trace_json" in fields[f"{A.ACTION}_Result"] and "operation" in fields[f"{A.ACTION}_Feedback"]
    with pytest.raises(A.ActionDefinitionError, match="three sections"):
        A.derived_definitions("string question\n---\nstring answer\n")


def test_service_samples_carry_the_request_header():
    """rmw_cyclonedds' framing: encapsulation, then client id and sequence number, then the
    request's own CDR; unframing gives the request back."""
    from pixelis_ros.ros.dds_service import _frame, _unframe

    A.register_types()
    request = A.msg("GetResult_Request", goal_id=A.uuid_msg(bytes(range(16))))
    framed = _frame(0x1122334455667788, 42, request)
    plain = M.serialize(request)
    assert framed[:4] == plain[:4] and framed[4:12] == (0x1122334455667788).to_bytes(8, "little")
    assert framed[12:20] == (42).to_bytes(8, "little") and framed[20:] == plain[4:]
    guid, seq, back = _unframe(framed, request.__msgtype__)
    assert (guid, seq, bytes(back.goal_id.uuid)) == (0x1122334455667788, 42, bytes(range(16)))


def test_interface_package_is_an_ament_cmake_rosidl_package():
    pkg = REPO / "pixelis_interfaces"
    xml = (pkg / "package.xml").read_text()
    assert "<name>pixelis_interfaces</name>" in xml and "<build_type>ament_cmake</build_type>" in xml
    assert "rosidl_interface_packages" in xml and "action_msgs" in xml
    assert '"action/Ask.action"' in (pkg / "CMakeLists.txt").read_text()
    colcon = Path(sys.executable).parent / "colcon"
    if colcon.is_file():  # colcon sees it beside pixelis_ros when both are in a workspace's src
        proc = subprocess.run([str(colcon), "list", "--base-paths", str(pkg)], capture_output=True, text=True, timeout=120)
        assert "pixelis_interfaces" in proc.stdout and "ros.ament_cmake" in proc.stdout, proc.stdout + proc.stderr


def test_launch_files_remap_every_topic():
    """Both launch files declare a launch argument per camera/query topic and remap with it."""
    tree = ast.parse((REPO / "launch" / "agent.launch.py").read_text())
    remappable = next([ast.literal_eval(k) for k in n.value.keys] for n in ast.walk(tree)
                      if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "REMAPPABLE")
    assert {"image", "image/compressed", "depth", "camera_info", "query", "ask", *TOPICS} <= set(remappable)
    sim = (REPO / "launch" / "sim.launch.py").read_text()
    assert 'TOPICS = ("image", "depth", "camera_info", "query")' in sim and sim.count("remappings=remappings") == 2


# ---------------------------------------------------------------------------------------------
# The core: the newest frame's detections, goals, query counts


def _moving_square(n: int = 8) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        img = np.full((120, 200, 3), 40, np.uint8)
        img[40:80, 20 + 10 * i:60 + 10 * i] = (230, 200, 30)
        frames.append(img)
    return frames


def _track_script() -> str:
    return ('<tool_call>\n{"name": "track", "arguments": {"bbox_2d": [20, 40, 60, 80], "start": "frame:0"}}\n</tool_call>\n'
            '<answer>right</answer>')


def test_detections_hold_the_newest_frame_only(tmp_path):
    script = tmp_path / "track.txt"
    script.write_text(_track_script())
    published = []
    core = AgentNodeCore(AgentNodeConfig(trace=str(script), max_frame_age_s=0.0, publish_annotated=False),
                         lambda topic, msg: published.append((topic, msg)))
    core.activate()
    try:
        for i, img in enumerate(_moving_square()):
            core.on_image(M.image_msg(img, 10.0 + i / 10, "cam"))
        episode = core.run_query("Which way does the square move?")
    finally:
        core.deactivate()
    assert episode.answer == "right"
    track_boxes = [d for d in episode.detections if d.label == "track"]
    assert len(track_boxes) == 8  # the whole track stays in the trace
    detections = [m for t, m in published if t == "detections"][-1]
    assert len(detections.detections) == 1 and detections.header.stamp.sec == 10  # stamped as the newest frame
    centre = detections.detections[0].bbox.center.position
    assert centre.x > 95 and 40 < centre.y < 80  # where it is now (it started at x = 40)
    diagnostics = [m for t, m in published if t == "diagnostics"][-1]
    values = {kv.key: kv.value for kv in diagnostics.status[0].values}
    assert values["queries"] == "1" and values["episodes"] == "1"


def test_goal_feedback_cancel_and_frame_stamp(tmp_path):
    """The core's side of a goal: a feedback per step, a frame stamp picks older frames, a tool
    subset and step cap apply to that goal only, a cancel is honoured between steps."""
    img, box, text = make_sign_scene(1)
    script = tmp_path / "demo.txt"
    script.write_text(demo_script(box))
    core = AgentNodeCore(AgentNodeConfig(trace=str(script), max_frame_age_s=0.0, publish_annotated=False),
                         lambda topic, msg: None)
    core.activate()
    try:
        core.on_image(M.image_msg(img, 5.0, "cam"))
        core.on_image(M.image_msg(np.zeros_like(img), 6.0, "cam"))  # a newer, blank frame
        from pixelis_ros.node.agent_core import AskGoal

        steps, done = [], []
        goal = AskGoal("What does the sign say?", frame_stamp=5.0, on_step=lambda n, s, ms: steps.append((n, s)),
                       on_done=lambda record, target, stamp, frame_id: done.append((record, target, stamp)))
        core.run_query(goal.question, goal=goal)
        assert [n for n, _ in steps] == [1, 2, 3] and steps[0][1]["call"]["name"] == "zoom"
        record, target, stamp = done[0]
        assert record["answer"].replace(" ", "") == text.replace(" ", "") and stamp == 5.0 and target is not None

        steps.clear()
        cancel_after_first = AskGoal("What does the sign say?", frame_stamp=5.0, cancelled=lambda: len(steps) >= 1,
                                     on_step=lambda n, s, ms: steps.append(n), on_done=lambda *a: done.append(a))
        assert core.run_query(cancel_after_first.question, goal=cancel_after_first).stop_reason == "cancelled"
        assert steps == [1] and done[-1][0]["stop_reason"] == "cancelled"

        only_zoom = AskGoal("What does the sign say?", frame_stamp=5.0, tools=["zoom"], max_steps=2,
                            on_done=lambda *a: done.append(a))
        episode = core.run_query(only_zoom.question, goal=only_zoom)
        assert "unknown tool 'ocr'" in json.dumps(episode.to_json()) and episode.stop_reason == "max_steps"
        refused = AskGoal("q", tools=["telekinesis"], on_done=lambda *a: done.append(a))
        assert core.submit_goal(refused).startswith("goal tools: unknown tool")
        assert done[-1][0]["stop_reason"] == "rejected" and done[-1][0]["error"].startswith("goal tools")
        early = AskGoal("q", frame_stamp=1.0, on_done=lambda *a: done.append(a))
        core.run_query(early.question, goal=early)
        assert "no buffered frame is stamped at or before 1.000 s" in done[-1][0]["error"]
    finally:
        core.deactivate()


# ---------------------------------------------------------------------------------------------
# Over the wire: the DDS node and a ROS 2 action client


@pytest.fixture
def domain_id() -> int:
    pytest.importorskip("cyclonedds", reason="the cyclonedds binding (extra 'dds') is not installed")
    return 10 + (os.getpid() * 7 + 13 * next(_domains)) % 50


@pytest.fixture
def sign_node(tmp_path, domain_id):
    """``pixelis node agent`` in /robot, its camera remapped to /cam/img, replaying the demo script."""
    img, box, text = make_sign_scene(1)
    script = tmp_path / "demo.txt"
    script.write_text(demo_script(box))
    cmd = [sys.executable, "-m", "pixelis_ros", "node", "agent", "--localhost", "--domain", str(domain_id), "--json",
           "--ros-args", "-r", "__ns:=/robot", "-r", "image:=/cam/img", "-p", f"trace:={script}",
           "-p", "max_frame_age_s:=0", "-p", "image_reliability:=reliable"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc, img, text
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_ask_action_over_dds(sign_node, domain_id, tmp_path):
    from pixelis_ros.ros import dds
    from pixelis_ros.ros.dds_action import DdsAskClient
    from test_dds_transport import Inbox

    proc, img, text = sign_node
    statuses = Inbox()
    with dds.DdsTransport(domain_id, config=dds.localhost_config()) as t:
        camera = t.publisher("/cam/img", "sensor_msgs/msg/Image", dds.DEFAULT.replace(depth=1))
        client = DdsAskClient(t, "/robot/ask")
        t.subscribe("/robot/ask/_action/status", A.STATUS, statuses, dds.LATCHED)
        assert client.wait_for_server(60) and camera.wait_for_subscribers(1, 30), \
            proc.stderr.read() if proc.poll() is not None else "the node serves no ask action"
        camera.publish(M.image_msg(img, 50.0, "front_camera"))
        camera.wait_for_acknowledgments(10)

        feedback = Inbox()
        goal_id, accepted = client.send_goal("What does the sign say?", on_feedback=feedback)
        assert accepted
        status, result = client.get_result(goal_id, timeout=120)
        assert status == A.STATUS_SUCCEEDED and result.success
        assert result.answer.replace(" ", "") == text.replace(" ", "")
        assert [f.operation for f in feedback.items] == ["zoom", "ocr", "answer"] and [f.step for f in feedback.items] == [1, 2, 3]
        assert "zoomed" in feedback.items[0].observation and json.loads(feedback.items[0].arguments_json)["bbox_2d"]
        assert result.has_target and result.target.header.frame_id == "front_camera" and result.steps == 3
        assert json.loads(result.trace_json)["trace"]["chain_length"] == 2

        # A cancel during the OCR step (~0.3 s) stops the episode before its answer; a goal
        # queued behind it and cancelled before it starts never runs.
        steps = Inbox()
        first, _ = client.send_goal("What does the sign say?", on_feedback=steps)
        second, _ = client.send_goal("What does the sign say?")
        assert client.cancel(second) == A.CANCEL_NONE
        assert steps.wait(1, 60) and client.cancel(first) == A.CANCEL_NONE
        status, result = client.get_result(first, timeout=120)
        assert status == A.STATUS_CANCELED and result.stop_reason == "cancelled" and len(steps.items) < 3
        status, result = client.get_result(second, timeout=120)
        assert status == A.STATUS_CANCELED and result.steps == 0
        assert client.cancel(first) == A.CANCEL_TERMINATED and client.cancel(os.urandom(16)) == A.CANCEL_UNKNOWN_GOAL

        goal, _ = client.send_goal("What does the sign say?", tools=["nosuchtool"])
        status, result = client.get_result(goal, timeout=60)
        assert status == A.STATUS_ABORTED and "unknown tool" in result.error  # the reason reaches the client
        seen = {s.status for array in statuses.items for s in array.status_list}
        assert {A.STATUS_ACCEPTED, A.STATUS_EXECUTING, A.STATUS_SUCCEEDED, A.STATUS_CANCELED, A.STATUS_ABORTED} <= seen
        client.close()

        # pixelis ask, a separate process: feedback lines, then the answer; --json the result.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        base = [sys.executable, "-m", "pixelis_ros", "ask", "What does the sign say?", "--namespace", "/robot",
                "--localhost", "--domain", str(domain_id)]
        human = subprocess.run(base, capture_output=True, text=True, timeout=120, env=env)
        assert human.returncode == 0, human.stderr
        lines = human.stdout.splitlines()
        assert "step 1: zoom" in lines[0] and "step 2: ocr" in lines[1] and lines[3].startswith("answer: ")
        run = subprocess.run(base + ["--json"], capture_output=True, text=True, timeout=120, env=env)
        result = json.loads(run.stdout)
        assert set(result) == {"answer", "success", "status", "stop_reason", "error", "target", "steps", "latency_ms",
                               "queue_ms", "trace", "via"}
        assert result["via"] == "action" and result["status"] == "succeeded" and len(result["steps"]) == 3
        # No action under that name: the same question over the query topic.
        run = subprocess.run(base + ["--json", "--action", "/nobody/ask", "--wait", "3"], capture_output=True, text=True,
                             timeout=120, env=env)
        result = json.loads(run.stdout)
        assert result["via"] == "topic" and result["answer"].replace(" ", "") == text.replace(" ", ""), run.stderr

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "topics: in /cam/img, /cam/img/compressed, /robot/depth" in err and "action /robot/ask" in err
    assert "query What does the sign say? ->" in err  # one log line per query
    counters = json.loads(out)["counters"]
    assert counters["goals"] >= 5 and counters["cancelled_goals"] == 2


def test_node_refuses_remapping_a_topic_it_does_not_have(domain_id):
    run = subprocess.run([sys.executable, "-m", "pixelis_ros", "node", "agent", "--localhost", "--domain", str(domain_id),
                          "--json", "--ros-args", "-r", "imgae:=/cam"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "remapping of /imgae: the agent has no such topic" in json.loads(run.stdout)["error"]
    run = subprocess.run([sys.executable, "-m", "pixelis_ros", "node", "agent", "--localhost", "--domain", str(domain_id),
                          "--json", "--ros-args", "--enclave", "x"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--ros-args: cannot read '--enclave'" in json.loads(run.stdout)["error"]


# ---------------------------------------------------------------------------------------------
# Bags: a bare .mcap/.db3 file, and diagnostics in bag time


@pytest.mark.parametrize("name", ["cam.mcap", "cam.db3"])
def test_bag_record_writes_the_file_it_is_given(tmp_path, name):
    from pixelis_ros.bag import open_reader, record_frames, run_bag
    from pixelis_ros.frames import Frame, Frames

    img, box, text = make_sign_scene(1)
    path = tmp_path / name
    record_frames(path, Frames([Frame(img, 0.0), Frame(img, 0.1)]))
    assert path.is_file() and sorted(p.name for p in tmp_path.iterdir()) == [name]  # no folder, no leftovers
    with open_reader(path) as reader:
        assert reader.message_count == 2
    script = tmp_path / "demo.txt"
    script.write_text(demo_script(box))
    out = run_bag(path, "/camera/image_raw", "What does the sign say?", trace=script, out_bag=tmp_path / f"out{path.suffix}")
    assert out["episodes"][0]["answer"].replace(" ", "") == text.replace(" ", "")
    with open_reader(tmp_path / f"out{path.suffix}") as reader:
        diagnostics = [M.deserialize(raw, c.msgtype) for c, _, raw in reader.messages() if c.topic.endswith("/diagnostics")]
    values = {kv.key: kv.value for kv in diagnostics[-1].status[0].values}
    # Bag time is the node's clock in a replay: the frame is 0 s old, and the query counted.
    assert values["queries"] == "1" and values["episodes"] == "1" and float(values["last_frame_age_ms"]) == 0.0


def test_logs_and_parameter_hints():
    from pixelis_ros.node.config import ConfigError

    with pytest.raises(ConfigError, match=r"topics are not parameters: remap them \(--ros-args -r image:="):
        AgentNodeConfig.from_parameters({"image_topic": "/camera/image_raw"})
    lines = []
    core = AgentNodeCore(AgentNodeConfig(accept_scripts=True, max_frame_age_s=0.0, publish_annotated=False),
                         lambda topic, msg: None, clock=lambda: 1000.0, log=lambda level, text: lines.append((level, text)))
    core.activate()
    try:
        bad = M.image_msg(np.zeros((8, 8, 3), np.uint8), 1000.0, "cam")
        bad.encoding = "bgr16"
        for _ in range(50):  # a broken camera: one warning, not fifty
            core.on_image(bad)
        core.on_image(M.image_msg(np.zeros((8, 8, 3), np.uint8), 1.0e9, "cam"))  # stamped in another clock
    finally:
        core.deactivate()
    assert lines[0][0] == "info" and lines[0][1].startswith("active: scripts brought by the queries")
    warnings = [text for level, text in lines if level == "warn"]
    assert len(warnings) == 2 and "bgr16" in warnings[0]
    assert "s from the node's clock" in warnings[1] and "use_sim_time" in warnings[1]
    assert core.counters.bad_images == 50
