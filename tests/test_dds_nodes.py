"""The nodes over the ROS 2 wire, in separate processes: ``pixelis node agent --transport dds``
answering a peer that speaks only DDS, the ``cyclonedds`` tool seeing its ROS 2 topics, and
``pixelis sim loop`` (sim node here, agent node in a child process)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("cyclonedds", reason="the cyclonedds binding (extra 'dds') is not installed")

from pixelis_ros import messages as M  # noqa: E402
from pixelis_ros.demo import demo_script, make_sign_scene  # noqa: E402
from pixelis_ros.ros import dds  # noqa: E402
from test_dds_transport import Inbox, _run_cli  # noqa: E402

_domains = itertools.count()


@pytest.fixture
def domain_id() -> int:
    return 60 + (os.getpid() + 11 * next(_domains)) % 150


@pytest.fixture
def agent_process(tmp_path, domain_id):
    img, box, text = make_sign_scene(1)
    trace = tmp_path / "trace.txt"
    trace.write_text(demo_script(box))
    cmd = [sys.executable, "-m", "pixelis_ros", "node", "agent", "--transport", "dds", "--localhost",
           "--domain", str(domain_id), "--namespace", "/robot", "-p", f"trace:={trace}", "-p", "max_frame_age_s:=0",
           "-p", "image_reliability:=reliable", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc, img, text
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_agent_node_process_answers_a_dds_peer(agent_process, domain_id):
    proc, img, text = agent_process
    answers, diagnostics, detections = Inbox(), Inbox(), Inbox()
    with dds.DdsTransport(domain_id, config=dds.localhost_config()) as t:
        t.subscribe("/robot/answer", "std_msgs/msg/String", lambda m: answers(json.loads(m.data)))
        t.subscribe("/robot/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", diagnostics)
        t.subscribe("/robot/detections", "vision_msgs/msg/Detection2DArray", detections)
        camera = t.publisher("/robot/image", "sensor_msgs/msg/Image", dds.DEFAULT.replace(depth=1))
        query = t.publisher("/robot/query", "std_msgs/msg/String")
        assert camera.wait_for_subscribers(1, 60) and query.wait_for_subscribers(1, 60), proc.stderr.read() if proc.poll() is not None else ""

        camera.publish(M.image_msg(img, 50.0, "front_camera"))
        camera.wait_for_acknowledgments(10)
        query.publish(M.string_msg("What does the sign say?"))
        first = answers.wait(1, timeout=60)[0]
        assert first["answer"].replace(" ", "") == text.replace(" ", "")
        assert first["frame"] == {"stamp": pytest.approx(50.0), "frame_id": "front_camera"}
        assert detections.wait(1)[0].header.frame_id == "front_camera"

        bad = M.image_msg(img[:8, :8], 51.0, "front_camera")
        bad.encoding = "bgr16"  # not an encoding the node decodes: an error in diagnostics, frame dropped
        camera.publish(bad)
        query.publish(M.string_msg(""))
        got = answers.wait(2, timeout=30)
        assert got[1]["error"] == "the query is empty"
        messages = [s.message for d in diagnostics.wait(3, timeout=30) for s in d.status]
        assert any("bad image message" in m and "bgr16" in m for m in messages), messages

        query.publish(M.string_msg("What does the sign say?"))  # still running after bad input
        assert answers.wait(3, timeout=60)[2]["answer"] == first["answer"]

        listing = _run_cli(["ls", "--id", str(domain_id), "--runtime", "3s"], timeout=15)
        for topic, type_name in (("rt/robot/answer", "std_msgs::msg::dds_::String_"),
                                 ("rt/robot/detections", "vision_msgs::msg::dds_::Detection2DArray_"),
                                 ("rt/robot/image", "sensor_msgs::msg::dds_::Image_")):
            assert topic in listing and type_name in listing, listing

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    counters = json.loads(out)["counters"]
    assert (counters["episodes"], counters["bad_images"], counters["rejected_queries"]) == (2, 1, 1)


def test_node_command_rejects_bad_parameters(domain_id):
    run = subprocess.run([sys.executable, "-m", "pixelis_ros", "node", "agent", "--localhost", "--domain", str(domain_id),
                          "-p", "max_steps:=many", "--json"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and json.loads(run.stdout) == {"error": "parameter 'max_steps' must be int, got str 'many'"}
    run = subprocess.run([sys.executable, "-m", "pixelis_ros", "node", "sim", "--localhost", "--domain", str(domain_id),
                          "-p", "suite:=nosuchsuite", "--json"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "nosuchsuite" in json.loads(run.stdout)["error"]


def test_sim_loop_over_dds_in_two_processes(domain_id):
    run = subprocess.run([sys.executable, "-m", "pixelis_ros", "sim", "loop", "--transport", "dds", "--episodes", "6",
                          "--speed", "4", "--policy", "oracle", "--domain", str(domain_id), "--json"],
                         capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert {"episodes", "answered", "accuracy", "acting_success", "latency_ms"} <= result.keys()
    assert result["episodes"] == 6 and result["answered"] == 6 and result["processes"] == 2
    # The smoke suite's first six episodes cover the six families; the oracle's tools get them
    # right in-process (pixelis sim bench), so over the wire they must too, bar one tool miss.
    assert len(result["families"]) == 6 and result["accuracy"] >= 5 / 6 and result["acting_success"] >= 5 / 6
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    assert result["sim_errors"] == []


def test_sim_loop_serves_the_bundled_model_by_default(domain_id):
    from pixelis_ros.policy.bundled import bundled_model

    run = subprocess.run([sys.executable, "-m", "pixelis_ros", "sim", "loop", "--episodes", "2", "--speed", "0",
                          "--domain", str(domain_id), "--json"], capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["policy"] == str(bundled_model()) and result["episodes"] == 2 and result["sim_errors"] == []
    # every question got a reply: an answer, or the agent's reason for having none (the bundled
    # model loops on the smoke text episode over DDS until the step cap)
    assert result["answered"] >= 1 and all(f["answer"] is not None or f["error"] for f in result["failures"])


def test_sim_loop_with_a_model_folder(tiny_models, domain_id):
    """The agent process loads the model folder (torch backend); a random tiny model's answers
    are scored like any other (they are wrong, but every question gets a reply)."""
    run = subprocess.run([sys.executable, "-m", "pixelis_ros", "sim", "loop", "--episodes", "1", "--speed", "0",
                          "--policy", str(tiny_models["qwen2_5_vl"]), "--domain", str(domain_id), "--json"],
                         capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["episodes"] == 1 and result["policy"] == str(tiny_models["qwen2_5_vl"])
    assert result["latency_ms"]["p50"] > 0  # measured only when the agent's reply arrived


def test_sim_loop_reports_an_agent_that_cannot_start(tmp_path, domain_id):
    run = subprocess.run([sys.executable, "-m", "pixelis_ros", "sim", "loop", "--episodes", "1", "--policy", str(tmp_path),
                          "--domain", str(domain_id), "--json"], capture_output=True, text=True, timeout=400)
    assert run.returncode == 2
    error = json.loads(run.stdout)["error"]
    assert str(tmp_path) in error and "config.json" in error  # refused before any agent process starts
